"""Checks of what a configuration points to, run by the entry points before any Ray worker or model starts.

`TrainConfig.validate` checks the values and the rules between keys without touching the disk; the
functions here check the things the keys name, cheaply, so that a bad input fails in seconds with an error
naming the key instead of minutes later inside a remote actor:

- reward terms (`scorer.rewards[i]`): the name resolves (a registered name, `package.module:function`, or
  `path/to/file.py:function` whose file exists and defines the function) and the kwargs bind to the
  function's signature. Resolving a `package.module` or `file.py` spec IMPORTS that module, which runs its
  code in this process (the scorer workers import it again): a config with reward specs is code and must be
  trusted like code;
- the starting policy (`policy_init`, `sft.init`): a policy directory with a valid manifest, config,
  tokenizer, complete safetensors files and codebook (`rl.policy.policy_dir.check_policy_dir`; no model is
  built);
- the codebook (`policy.codebook.path`, SFT from scratch): the file exists and parses;
- the datasets (`data.train`, `data.val`): written by `python -m sim.generate`: the manifest, every shard's
  footer (schema version, columns and their types) and the row count; no row is read.

Every error is an `InputError` (a `ConfigError`) whose message starts with the key and its value.
"""
from __future__ import annotations

import ast
import difflib
import inspect
import json
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from rl.config import RewardTermConfig, TrainConfig
from rl.config_io import ConfigError


class InputError(ConfigError):
    """A config key naming a file, dataset, policy or function that cannot be used; the message names the key."""


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- reward functions -------------------------------------------------------------------------------------

def _top_level_names(path: Path) -> list[str]:
    """Names a Python file binds at top level (read with `ast`, for suggestions only)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.extend((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def resolve_reward_term(key: str, name: str) -> Callable:
    """The reward function `name` names (see `rewards.registry.resolve_reward`), or an `InputError` naming
    `key`, with the closest registered name for a misspelling. Imports plug-in modules: runs their code."""
    from rewards.registry import RewardError, registered_rewards, resolve_reward

    where = f"{key}={name!r}"
    if ":" not in name:
        known = registered_rewards()
        if name not in known:
            raise InputError(
                f"{where}: no registered reward of that name{_did_you_mean(name, known)} (registered: "
                f"{', '.join(known)}; or name a plug-in as 'package.module:function' or 'path/to/file.py:function')")
    module, attr = name.rsplit(":", 1) if ":" in name else ("", name)
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise InputError(f"{where}: plug-in file {path} not found (relative paths are read from the working"
                             f" directory {Path.cwd()})")
    try:
        fn = resolve_reward(name)
    except RewardError as err:
        hint = ""
        if module.endswith(".py"):
            hint = _did_you_mean(attr, _top_level_names(Path(module)))
        elif module in sys.modules:
            hint = _did_you_mean(attr, [n for n, v in vars(sys.modules[module]).items() if callable(v)])
        raise InputError(f"{where}: {err}{hint}") from None
    except (Exception, SystemExit) as err:  # a plug-in module whose import raises anything else, or exits
        raise InputError(f"{where}: importing it raised {type(err).__name__}: {err}") from None
    return fn


def check_reward_kwargs(key: str, fn: Callable, kwargs: dict) -> None:
    """`fn(batch, **kwargs)` must bind: every kwarg is a parameter of `fn` (unless it takes **kwargs) and no
    required parameter besides the batch is left out. Functions without an introspectable signature pass."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    label = getattr(fn, "__qualname__", repr(fn))
    if not params and not any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values()):
        raise InputError(f"{key}: {label}{signature} takes no argument; a reward function takes the batch first")
    names = [p.name for p in params[1:]]
    unknown = [k for k in kwargs if k not in names] if not accepts_any else []
    if unknown:
        raise InputError(f"{key}.kwargs: {label}() has no parameter {unknown[0]!r}{_did_you_mean(unknown[0], names)}"
                         f" (its parameters after the batch: {', '.join(names) or 'none'})")
    try:
        signature.bind([], **dict(kwargs))
    except TypeError as err:
        raise InputError(f"{key}.kwargs={dict(kwargs)}: {label}{signature}: {err}") from None


def check_reward_terms(terms: Sequence[RewardTermConfig], key: str = "scorer.rewards") -> None:
    """Every configured reward term resolves and its kwargs bind (imports plug-ins: their code runs)."""
    for i, term in enumerate(terms):
        fn = resolve_reward_term(f"{key}[{i}].name", term.name)
        check_reward_kwargs(f"{key}[{i}]", fn, term.kwargs or {})


# --- policies, codebooks, datasets ------------------------------------------------------------------------

def check_policy(key: str, path: Optional[str]):
    """The `PolicyDirInfo` of the saved policy directory `path` (cheap: no model is built)."""
    from rl.policy.policy_dir import CheckpointError, check_policy_dir

    if not path:
        raise InputError(f"{key} is not set: name a saved policy directory (written by `python -m rl.sft`)")
    if not Path(path).is_dir():
        raise InputError(f"{key}={path}: no such policy directory")
    try:
        return check_policy_dir(path)
    except CheckpointError as err:
        raise InputError(f"{key}={path}: {err}") from None


def check_codebook(key: str, path: Optional[str]) -> None:
    from rl.policy.codebook import ActionCodebook, CodebookError

    if not path:
        raise InputError(f"{key} is not set: build one with `python -m rl.policy.codebook --dataset <train> --out FILE`")
    if not Path(path).is_file():
        raise InputError(f"{key}={path}: codebook file not found (build one with `python -m rl.policy.codebook"
                         " --dataset <train> --out FILE`)")
    try:
        ActionCodebook.load(path)
    except CodebookError as err:
        raise InputError(f"{key}={path}: {err}") from None


def _is_policy_dir(path: Path) -> bool:
    from rl.policy.policy_dir import FORMAT_NAME, MANIFEST

    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def check_dataset(key: str, path: Optional[str]) -> int:
    """The number of scenes of the dataset at `path`, after checking its manifest and every shard's schema
    (footers only: cheap for any size). Raises `InputError` naming `key`."""
    from sim.dataset import SCHEMA, DatasetError, SceneDataset, check_column_type, open_shard

    if not path:
        raise InputError(f"{key} is not set: name a dataset directory written by `python -m sim.generate`")
    if not Path(path).exists():
        raise InputError(f"{key}={path}: no such dataset (write one with `python -m sim.generate --out DIR`)")
    if _is_policy_dir(Path(path)):
        raise InputError(f"{key}={path}: a policy directory, not a dataset; expected a directory written by"
                         " `python -m sim.generate`")
    try:
        dataset = SceneDataset(path)
        rows = 0
        for file in dataset.files:
            shard = open_shard(file)
            schema = shard.schema_arrow
            for field in SCHEMA:
                index = schema.get_field_index(field.name)
                if index < 0:
                    raise DatasetError(f"{file}: missing column {field.name!r} (not a dataset written by sim.generate)")
                check_column_type(file, field.name, schema.field(index).type)
            rows += shard.metadata.num_rows
    except DatasetError as err:
        raise InputError(f"{key}={path}: {err}") from None
    if rows == 0:
        raise InputError(f"{key}={path}: the dataset has no scenes")
    return rows


# --- per entry point ----------------------------------------------------------------------------------------

def validate_train_inputs(cfg: TrainConfig) -> None:
    """What `python -m rl.train` checks before starting Ray: rewards, policy_init, datasets, weight sync.

    The codebook GRPO uses is the one saved in `policy_init` (checked there); `policy.codebook.path` is
    read by SFT only."""
    check_reward_terms(cfg.scorer.rewards)
    info = check_policy("policy_init", cfg.policy_init)
    if cfg.rollout.action_source == "tokens" and not info.has_codebook:
        raise InputError(f"rollout.action_source='tokens' decodes action tokens, but policy_init={cfg.policy_init}"
                         " saves no codebook.json: start from a policy trained with one (SFT stage vlm)")
    saved, wanted = info.config.expert, cfg.policy.expert
    if cfg.rollout.action_source == "expert":  # the driver scores the plans at policy.expert.interval_s
        if saved.interval_s != wanted.interval_s:
            raise InputError(
                f"policy.expert.interval_s={wanted.interval_s}, but policy_init={cfg.policy_init} plans every"
                f" {saved.interval_s} s (its policy_config.json): the scorers would read its poses at the wrong"
                f" times; set policy.expert.interval_s={saved.interval_s}")
    check_dataset("data.train", cfg.data.train)
    if cfg.eval.every:
        check_dataset("data.val", cfg.data.val)
    from actors.weight_sync import SYNC_BACKENDS  # last: it imports torch

    if cfg.weight_sync.backend not in SYNC_BACKENDS:
        raise InputError(f"weight_sync.backend={cfg.weight_sync.backend!r}: expected one of {SYNC_BACKENDS}")


def validate_sft_inputs(cfg: TrainConfig) -> None:
    """What `python -m rl.sft` checks before building the model: the training split, and `sft.init` (a saved
    policy) or, from scratch, the codebook of `policy.codebook.path`."""
    check_dataset("data.train", cfg.data.train)
    if cfg.sft.init:
        check_policy("sft.init", cfg.sft.init)
    elif cfg.sft.stage == "expert":
        raise InputError("sft.stage=expert trains the expert on a trained VLM: set sft.init to the stage-vlm"
                         " policy directory")
    else:
        check_codebook("policy.codebook.path", cfg.policy.codebook.path)
