"""Saving and loading the whole policy as one directory:

    manifest.json          format name and version, the files below
    policy_config.json     the PolicyConfig
    tokenizer/             tokenizer.json, tokenizer_config.json (special and action tokens included)
    vlm/                   config.json, model.safetensors (transformers' save_pretrained: loads with from_pretrained)
    expert.safetensors     the expert's weights and its trajectory normalisation statistics
    codebook.json          the action codebook (absent when the policy has none)

The directory is written under a temporary name next to the target and renamed into place, so a reader
never sees a half-written checkpoint. Loading checks every file and names the one that is missing, damaged
(a truncated safetensors file, a manifest with missing keys, wrong types or another format version) or does
not match the configuration; `check_policy_dir` runs the same checks without building the model.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf
from safetensors import safe_open

from rl.policy.codebook import ActionCodebook, CodebookError
from rl.policy.config import PolicyConfig, PolicyConfigError, validate_policy_config

# torch, transformers and the model modules are imported where a model is saved or built, so that
# `check_policy_dir` (run by the entry points before any worker starts) answers in well under a second.
if TYPE_CHECKING:
    import torch

    from rl.policy.expert import ActionExpert
    from rl.policy.policy import SpanVLAPolicy

FORMAT_NAME = "spanvla-policy"
FORMAT_VERSION = 1
MANIFEST, CONFIG, TOKENIZER, VLM, EXPERT, CODEBOOK = (
    "manifest.json", "policy_config.json", "tokenizer", "vlm", "expert.safetensors", "codebook.json")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file."""


def save_policy(policy: "SpanVLAPolicy", path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(asdict(policy.config), indent=2))
        policy.tokenizer.save(tmp / TOKENIZER)
        policy.vlm.save_pretrained(tmp / VLM)
        state = {k: v.detach().contiguous().cpu() for k, v in policy.expert.state_dict().items()}
        save_file(state, str(tmp / EXPERT), metadata={"kv_layers": json.dumps(policy.expert.kv_layers)})
        files = [CONFIG, TOKENIZER, VLM, EXPERT]
        if policy.codebook is not None:
            policy.codebook.save(tmp / CODEBOOK)
            files.append(CODEBOOK)
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "files": files}, indent=2))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_manifest(root: Path) -> dict:
    """The manifest of `root`, checked: format name, version, and every listed file present."""
    if not root.is_dir():
        raise CheckpointError(f"policy checkpoint directory not found: {root}")
    manifest = root / MANIFEST
    data = _read_json(manifest, missing=": not a policy checkpoint, or a half-written one",
                      expected="a JSON object with keys format, format_version, files;")
    missing = [key for key in ("format", "format_version", "files") if key not in data]
    if missing:
        raise CheckpointError(f"{manifest}: missing key(s) {', '.join(missing)}: not a policy manifest")
    if data["format"] != FORMAT_NAME:
        raise CheckpointError(f"{manifest}: format {data['format']!r}, expected {FORMAT_NAME!r}")
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{manifest}: format_version must be an integer, found {version!r}")
    if version != FORMAT_VERSION:
        newer = " (written by a newer spanvla-rl: update this one)" if version > FORMAT_VERSION else ""
        raise CheckpointError(f"{manifest}: format_version {version}, this code reads {FORMAT_VERSION}{newer}")
    files = data["files"]
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise CheckpointError(f"{manifest}: files must be a list of file names, found {files!r}")
    for name in (CONFIG, TOKENIZER, VLM, EXPERT):
        if name not in files:
            raise CheckpointError(f"{manifest}: does not list {name}")
    for name in files:
        if not (root / name).exists():
            raise CheckpointError(f"{root / name} is missing (listed in {manifest})")
    return data


def check_safetensors(file: Path) -> list[str]:
    """The tensor names of a safetensors file, after checking that it is complete: the 8-byte header length,
    the JSON header, and data that covers every tensor's byte range. Raises `CheckpointError` naming the
    file and what is wrong (a truncated copy is the usual cause)."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: {size} bytes, too short for a safetensors file (truncated or empty)")
        header_len = struct.unpack("<Q", head)[0]
        if 8 + header_len > size:
            raise CheckpointError(f"{file}: truncated ({size} bytes; its header alone needs {8 + header_len})")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{file}: damaged safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: damaged safetensors header (not a JSON object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f"{file}: damaged safetensors header (a tensor without data_offsets)") from None
    if 8 + header_len + end > size:
        raise CheckpointError(f"{file}: truncated ({size} bytes; its header describes {8 + header_len + end})")
    try:  # the library's own checks (dtypes, overlapping ranges)
        with safe_open(str(file), framework="numpy") as f:  # reads the header only
            return list(f.keys())
    except Exception as err:  # SafetensorError is not importable under a stable name across versions
        raise CheckpointError(f"{file}: not a valid safetensors file ({err})") from None


@dataclass
class PolicyDirInfo:
    """What `check_policy_dir` found: the manifest, the saved policy config and whether a codebook is saved."""

    path: Path
    manifest: dict
    config: PolicyConfig
    has_codebook: bool


def check_policy_dir(path: str | os.PathLike) -> PolicyDirInfo:
    """Check a saved policy directory without building the model (reads the manifest, the configs, the
    tokenizer's presence, the safetensors headers and the codebook): cheap enough to run before any worker
    starts. Raises `CheckpointError` naming the file and what is wrong."""
    root = Path(path)
    manifest = _read_manifest(root)
    config = _read_config(root / CONFIG)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (root / TOKENIZER / name).is_file():
            raise CheckpointError(f"{root / TOKENIZER / name} is missing")
    _read_json(root / VLM / "config.json")
    weights = sorted((root / VLM).glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"{root / VLM}: no model.safetensors")
    for file in weights:
        check_safetensors(file)
    check_safetensors(root / EXPERT)
    has_codebook = CODEBOOK in manifest["files"]
    if has_codebook:
        try:
            ActionCodebook.load(root / CODEBOOK)
        except CodebookError as err:
            raise CheckpointError(str(err)) from None
    return PolicyDirInfo(root, manifest, config, has_codebook)


def _read_json(file: Path, missing: str = "", expected: str = "a JSON object,") -> dict:
    """The JSON object in `file`; CheckpointError naming the file when it is missing (`missing` says what that
    means), not JSON, or not `expected`."""
    if not file.is_file():
        raise CheckpointError(f"{file} is missing{missing}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected {expected} found a {type(data).__name__}")
    return data


def _read_config(file: Path) -> PolicyConfig:
    raw = _read_json(file)
    if "action_source" in raw and "plan_source" not in raw:  # policies saved before the key's rename
        raw["plan_source"] = raw.pop("action_source")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PolicyConfig), raw)
        config = OmegaConf.to_object(merged)
    except Exception as err:  # unknown keys, wrong types (OmegaConf raises several types)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{file}: not a valid policy config ({reason})") from None
    try:
        return validate_policy_config(config)
    except PolicyConfigError as err:
        raise CheckpointError(f"{file}: {err}") from None


def _load_expert(file: Path, expert: "ActionExpert") -> None:
    expected = expert.state_dict()
    with safe_open(str(file), framework="pt") as f:
        keys = set(f.keys())
        missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{file}: weights do not match the expert config (missing {missing[:5]}, unexpected {unexpected[:5]})")
        state = {}
        for key in expected:
            tensor = f.get_tensor(key)
            if tensor.shape != expected[key].shape:
                raise CheckpointError(
                    f"{file}: {key} has shape {tuple(tensor.shape)}, the config gives {tuple(expected[key].shape)}")
            state[key] = tensor
    expert.load_state_dict(state)


def load_policy(cls, path: str | os.PathLike, device: "torch.device | str" = "cpu") -> "SpanVLAPolicy":
    from rl.policy.backbone import attention_geometry, load_vlm
    from rl.policy.expert import ActionExpert
    from rl.policy.tokenizer import PolicyTokenizer

    root = Path(path)
    info = check_policy_dir(root)  # every file checked before the (slow) model build
    manifest, config = info.manifest, info.config
    try:
        tokenizer = PolicyTokenizer.from_pretrained(root / TOKENIZER, config.codebook.num_tokens)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(f"{root / TOKENIZER}: {err}") from None
    try:
        vlm = load_vlm(root / VLM, tokenizer, config.backbone, grow_embeddings=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{root / VLM}: {err}") from None
    if vlm.get_input_embeddings().num_embeddings != len(tokenizer):
        raise CheckpointError(
            f"{root / VLM}: embedding has {vlm.get_input_embeddings().num_embeddings} rows, the tokenizer in"
            f" {root / TOKENIZER} has {len(tokenizer)} tokens")
    expert = ActionExpert(config.expert, attention_geometry(vlm))
    _load_expert(root / EXPERT, expert)
    codebook = None
    if CODEBOOK in manifest["files"]:
        try:
            codebook = ActionCodebook.load(root / CODEBOOK)
        except CodebookError as err:
            raise CheckpointError(str(err)) from None
    policy = cls(config, tokenizer, vlm, expert, codebook)
    return policy.to(device).eval()
