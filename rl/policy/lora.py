"""LoRA adapters on the VLM's language model (peft), injected in place so module names stay the policy's own.

The learner and every rollout worker inject the same adapters, so weight sync only ships what the learner
trains (the adapters, and the expert when it is trained). `lora_disabled` gives the SFT model back (the
reference policy of the KL term without a second copy); `merged_policy` folds the adapters into the base
weights for saving a plain policy directory.

Dropout (`learner.lora.dropout`): peft applies LoRA dropout in training mode only, and injected adapters start
in training mode. GRPO needs the distribution a sample is drawn from to be the one whose log-probabilities
are recorded and the learner's ratio to be 1 at the first update, so every holder of the policy runs it in
eval mode after `apply_lora`: the rollout workers (sampling and evaluation) and the learner (its log-prob
forward, hence its gradients). LoRA dropout is therefore inactive in GRPO; it acts in SFT only.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from torch import nn

if TYPE_CHECKING:
    from rl.policy.policy import SpanVLAPolicy


def apply_lora(policy: "SpanVLAPolicy", lora: dict) -> list[nn.Parameter]:
    """Inject adapters into `policy.vlm`'s language model; returns the adapter parameters (trainable). The
    adapters take the dtype of the layers they wrap; their dropout modules start in training mode (call
    `policy.eval()` before sampling, see the module docstring).

    lora: {"r", "alpha", "dropout", "target_modules"}; target_modules names projection layers (e.g. q_proj)
    and is restricted to the language model (never the vision encoder or the expert).
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = "|".join(lora.get("target_modules") or ["q_proj", "k_proj", "v_proj", "o_proj"])
    pattern = rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"
    config = LoraConfig(r=int(lora.get("r", 16)), lora_alpha=int(lora.get("alpha", 32)),
                        lora_dropout=float(lora.get("dropout", 0.0)), target_modules=pattern)
    try:
        inject_adapter_in_model(config, policy.vlm)
    except ValueError as err:  # peft refuses a pattern that matches nothing before the check below runs
        raise ValueError(f"LoRA target_modules {lora.get('target_modules')} matched no language-model layer "
                         f"({err})") from None
    adapters = [p for n, p in policy.named_parameters() if ".lora_" in n]
    if not adapters:
        raise ValueError(f"LoRA target_modules {lora.get('target_modules')} matched no language-model layer")
    return adapters


def _lora_layers(module: nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def has_lora(policy: "SpanVLAPolicy") -> bool:
    return bool(_lora_layers(policy))


@contextmanager
def lora_disabled(policy: "SpanVLAPolicy") -> Iterator["SpanVLAPolicy"]:
    """The policy with its adapters switched off (= the model they were trained from)."""
    layers = _lora_layers(policy)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield policy
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merged_policy(policy: "SpanVLAPolicy") -> "SpanVLAPolicy":
    """A copy of the policy with the adapters merged into the base layers and removed (plain module names)."""
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(policy)
    for name, module in list(merged.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent_name), child, module.base_layer)
    return merged
