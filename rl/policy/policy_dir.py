"""Saving and loading the whole policy as one directory:

    manifest.json          format name and version, the files below
    policy_config.json     the PolicyConfig
    tokenizer/             tokenizer.json, tokenizer_config.json (special and action tokens included)
    vlm/                   config.json, model.safetensors (transformers' save_pretrained: loads with from_pretrained)
    expert.safetensors     the expert's weights and its trajectory normalisation statistics
    codebook.json          the action codebook (absent when the policy has none)

The directory is written under a temporary name next to the target and renamed into place, so a reader
never sees a half-written checkpoint. Loading checks every file and names the one that is missing or does
not match the configuration.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from rl.policy.backbone import attention_geometry, load_vlm
from rl.policy.codebook import ActionCodebook, CodebookError
from rl.policy.config import PolicyConfig
from rl.policy.expert import ActionExpert
from rl.policy.tokenizer import PolicyTokenizer

if TYPE_CHECKING:
    from rl.policy.policy import SpanVLAPolicy

FORMAT_NAME = "spanvla-policy"
FORMAT_VERSION = 1
MANIFEST, CONFIG, TOKENIZER, VLM, EXPERT, CODEBOOK = (
    "manifest.json", "policy_config.json", "tokenizer", "vlm", "expert.safetensors", "codebook.json")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file."""


def save_policy(policy: "SpanVLAPolicy", path: str | os.PathLike) -> None:
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
    if not root.is_dir():
        raise CheckpointError(f"policy checkpoint directory not found: {root}")
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{manifest} is missing: not a policy checkpoint, or a half-written one")
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{manifest}: not valid JSON ({err})") from None
    if data.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{manifest}: format {data.get('format')!r}, expected {FORMAT_NAME!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{manifest}: format_version {data.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    for name in data.get("files", []):
        if not (root / name).exists():
            raise CheckpointError(f"{root / name} is missing (listed in {manifest})")
    for name in (CONFIG, TOKENIZER, VLM, EXPERT):
        if name not in data.get("files", []):
            raise CheckpointError(f"{manifest}: does not list {name}")
    return data


def _read_config(file: Path) -> PolicyConfig:
    try:
        raw = json.loads(file.read_text())
        merged = OmegaConf.merge(OmegaConf.structured(PolicyConfig), raw)
        return OmegaConf.to_object(merged)
    except Exception as err:  # JSON syntax, unknown keys, wrong types
        raise CheckpointError(f"{file}: not a valid policy config ({err})") from None


def _load_expert(file: Path, expert: ActionExpert) -> None:
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


def load_policy(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "SpanVLAPolicy":
    root = Path(path)
    manifest = _read_manifest(root)
    config = _read_config(root / CONFIG)
    try:
        tokenizer = PolicyTokenizer.from_pretrained(root / TOKENIZER, config.codebook.num_tokens)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(f"{root / TOKENIZER}: {err}") from None
    if not (root / VLM / "config.json").is_file():
        raise CheckpointError(f"{root / VLM / 'config.json'} is missing")
    if not any((root / VLM).glob("*.safetensors")):
        raise CheckpointError(f"{root / VLM}: no model.safetensors")
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
