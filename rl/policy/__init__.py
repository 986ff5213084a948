"""The SpanVLA policy: a Qwen2.5-VL backbone that reasons over three cameras, and a flow-matching action
expert that reads the KV cache of sparse VLM layers.

Modules: `config` (dataclass sections), `prompt` (text formats), `tokenizer`, `vision` (camera videos),
`codebook` (discrete action tokens), `trajectory` (the expert's normalised space), `expert`, `flow`
(flow matching and its samplers), `pace` (the pace action), `backbone` (the VLM), `inputs` (collation), `decoding` (token
generation), `inference`, `training` (log-probs and SFT losses), `policy_dir` (save / load), `outputs`, and `policy` (`SpanVLAPolicy`, the API).
Names below are imported on first use, so that light modules (e.g. `codebook`) load without torch models.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SpanVLAPolicy": "rl.policy.policy",
    "PolicyConfig": "rl.policy.config",
    "BackboneConfig": "rl.policy.config",
    "ExpertConfig": "rl.policy.config",
    "CodebookConfig": "rl.policy.config",
    "ActionCodebook": "rl.policy.codebook",
    "build_codebook": "rl.policy.codebook",
    "Completion": "rl.policy.inputs",
    "PolicyInputs": "rl.policy.inputs",
    "FlowChain": "rl.policy.outputs",
    "PolicySample": "rl.policy.outputs",
    "GroupSample": "rl.policy.outputs",
    "PlanResult": "rl.policy.outputs",
    "TokenLogprobs": "rl.policy.outputs",
    "FlowLogprobs": "rl.policy.outputs",
    "LossOutput": "rl.policy.outputs",
    "StageTimings": "rl.policy.outputs",
    "CheckpointError": "rl.policy.policy_dir",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rl.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
