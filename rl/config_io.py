"""Loading, merging and validating the project's configuration.

One config system: typed dataclasses are the schema (`rl.config`), YAML files give values with at most one
level of `defaults:`, and dotted `key=value` overrides from the command line win. Merging goes through
OmegaConf's structured configs, so an unknown key or a value of the wrong type is an error that names the
key and the file it came from. No Hydra: it changes the working directory, which breaks `ray job submit`.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and where it came from."""


def _known_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)  # noqa: SLF001 - OmegaConf has no public accessor for the raw node
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys.extend(_known_keys(child, f"{full}."))
    return keys


def _merge(base: DictConfig, update: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as err:
        key = getattr(err, "full_key", None) or str(err)
        close = difflib.get_close_matches(key, _known_keys(base), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{source}: unknown config key '{key}'{hint}") from None
    except ValidationError as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"{source}: bad value for '{key}': {err.msg}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {err}") from None


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # yaml syntax errors come in several types
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return node


def _yaml_layers(path: Path) -> list[tuple[str, DictConfig]]:
    """The file's `defaults:` (one level, paths relative to the file) followed by the file itself."""
    node = _read_yaml(path)
    layers: list[tuple[str, DictConfig]] = []
    defaults = node.pop("defaults", None)
    if defaults is not None:
        names = [defaults] if isinstance(defaults, str) else list(defaults)
        for name in names:
            parent = (path.parent / str(name)).with_suffix(".yaml") if not str(name).endswith(".yaml") else path.parent / str(name)
            parent_node = _read_yaml(parent)
            if "defaults" in parent_node:
                raise ConfigError(f"{parent}: `defaults:` may be used only one level deep (it is included by {path})")
            layers.append((str(parent), parent_node))
    layers.append((str(path), node))
    return layers


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a config object of type `schema` from its defaults, a YAML file and dotted overrides.

    Raises `ConfigError` naming the key and its source for unknown keys, bad values and bad files.
    """
    merged = OmegaConf.structured(schema)
    if path is not None:
        for source, layer in _yaml_layers(Path(path)):
            merged = _merge(merged, layer, source)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        merged = _merge(merged, OmegaConf.from_dotlist([item]), f"command line override {item!r}")
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"incomplete config: {err}") from None
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def config_to_dict(config: Any) -> dict:
    """A plain nested dict of a config object (for trackers and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    os.replace(tmp, path)
