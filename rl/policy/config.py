"""The policy's configuration: plain dataclasses (primitive, list and optional fields only) that become
sections of the project's single OmegaConf config. Every value here is a default, not a constant.

Sections: `backbone` (the Qwen2.5-VL VLM and its camera input), `expert` (the flow-matching action expert),
`codebook` (the discrete action tokens) and the top-level `PolicyConfig` that holds them plus the
generation and SFT options.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

BACKBONE_PRESETS = ("tiny", "small", "3b", "pretrained")
ACTION_SOURCES = ("tokens", "expert")
# The reasoning a sampled group is conditioned on: one trace per sample at the sampling temperature, or one
# greedy trace shared by the group (the one deterministic planning decodes).
GROUP_REASONING = ("sampled", "greedy")
# Where a sampled flow starts: at a_his + sigma0 eps (a random start the chain's log-probability does not score),
# at a_his itself, the start deterministic planning uses (every difference between samples is then scored), or at
# a_his + sigma0 eps with the start's density scored as the chain's first step (the ratio credits the draw and
# moves a_his, where the deterministic plan starts).
FLOW_STARTS = ("noisy", "prior", "scored")
FLOW_INITS = ("history", "noise")


class PolicyConfigError(ValueError):
    """A policy configuration that cannot be used; the message names the key and what to change."""


@dataclass
class BackboneConfig:
    """The VLM. `preset` "tiny" (~2M parameters, the CPU default), "small" (~25M) and "3b" (Qwen2.5-VL-3B's
    layer shapes, for GPU latency and memory) are built in code with random weights and an in-code tokenizer;
    "pretrained" loads `pretrained_path` (a local Qwen2.5-VL directory, e.g. Qwen2.5-VL-3B-Instruct) with its own
    tokenizer.

    Cameras: each of the 3 cameras' 4 history frames (2 Hz) is fed as one video; Qwen2.5-VL's temporal patch
    of 2 frames halves the vision tokens of 4 separate images. Frames are resized to exactly
    (image_height, image_width), which must be multiples of patch_size * spatial_merge_size (16 for the
    presets, 28 for Qwen2.5-VL-3B). `image_height`/`image_width` None take the preset's size.
    """

    preset: str = "tiny"
    pretrained_path: Optional[str] = None
    image_height: Optional[int] = None
    image_width: Optional[int] = None
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"
    seed: int = 0  # initialisation of the random-weight presets


@dataclass
class ExpertConfig:
    """The flow-matching action expert (spanvla.md 1.3).

    Layers read: `kv_layers` when given (VLM layer indices, negative counts from the end), otherwise every
    `kv_layer_interval`-th layer starting at `kv_layer_offset` (interval 2, offset 1: layers 1, 3, 5, ...,
    so that the last layer of an even-depth VLM is read). One expert layer per read layer.
    `hidden_size` None: half the VLM's width. Head geometry (query heads, KV heads, head size) is the VLM's.
    Trajectory: `horizon` poses every `interval_s` seconds (8 x 0.5 s is NAVSIM's plan).
    Suffix layout: each expert token carries `waypoints_per_token` consecutive poses (x, y, heading) through
    its input and output projections, so N poses take ceil(N / k) tokens (plus the ego/history token); the
    expert's cost follows its token count, not the horizon. 1 (the default, and what policies saved before
    this key existed were) is one token per pose; e.g. 5 keeps a 50-pose plan at 0.1 s to 10 tokens of 0.5 s.
    """

    hidden_size: Optional[int] = None
    intermediate_ratio: float = 2.0
    kv_layer_interval: int = 2
    kv_layer_offset: int = 1
    kv_layers: Optional[list[int]] = None
    horizon: int = 8
    interval_s: float = 0.5
    waypoints_per_token: int = 1
    num_steps: int = 5
    init: str = "history"  # history: start the flow at a_his; noise: at N(0, I) (the ablation)
    history_noise_std: float = 0.1  # sigma0: noise on a_his in training and in the stochastic sampler
    time_logit_mean: float = -0.5  # flow time in training: sigmoid(N(mean, std)); < 0 favours the start
    time_logit_std: float = 1.0
    prior_loss_weight: float = 0.1  # extra MSE(a_his, a) that teaches the history prior directly
    min_spread_xy: float = 0.05  # floors of the per-waypoint normalisation spread (m, rad)
    min_spread_heading: float = 0.005
    # A pace head (`rl.policy.pace`): the plan is driven along its path at a scene-chosen fraction s of its speed,
    # s = exp(clip(z, log(pace_min_scale), 0)), z read from the expert's features of the scene and its plan. Added
    # (zero: s = 1, the plan as it is) by GRPO with rollout.pace_std > 0; false: no head.
    pace: bool = False
    pace_min_scale: float = 0.3


@dataclass
class CodebookConfig:
    """Discrete action tokens: K-disk clustering of 0.5 s segments (dx, dy, dheading) with the mean
    box-corner distance below `delta` (m). `path`: a codebook JSON written by `python -m rl.policy.codebook`
    (None: set one later with `SpanVLAPolicy.set_codebook`). `num_tokens` fixes the tokenizer's
    `<action_i>` tokens; a built codebook may use fewer. Box of AutoVLA (4.8 x 2.0 m), centred
    `rear_axle_to_center` ahead of the rear axle (the Pacifica's 1.461 m)."""

    path: Optional[str] = None
    num_tokens: int = 256
    delta: float = 0.2  # AutoVLA: K = 2048, delta = 0.05 m; 0.2 m covers a typical training split with 256
    segment_s: float = 0.5
    box_length: float = 4.8
    box_width: float = 2.0
    rear_axle_to_center: float = 1.461
    seed: int = 0


@dataclass
class PolicyConfig:
    """The SpanVLA policy. `plan_source`: where `plan` takes trajectories from when the caller does not say (the
    expert, or the autoregressive baseline's action tokens); saved with the policy, read by `rl.evaluate` without
    `--action-source`. (GRPO's `rollout.action_source` is a different key: the trajectory a run samples and
    rewards, and evaluates during the run.) `max_reasoning_tokens`: the reasoning trace is closed with
    `</think>` after that many generated tokens. `reasoning_sample_weight`: SFT weight of samples with a
    slow-mode reasoning trace (AutoVLA: 40)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    plan_source: str = "expert"
    max_reasoning_tokens: int = 48
    reasoning_sample_weight: float = 40.0
    system_prompt: Optional[str] = None  # None: the built-in prompt of rl.policy.prompt


def validate_policy_config(cfg: PolicyConfig) -> PolicyConfig:
    """Check values that the dataclass types cannot; raise `PolicyConfigError` naming the key. Returns cfg."""
    b, e, c = cfg.backbone, cfg.expert, cfg.codebook
    if b.preset not in BACKBONE_PRESETS:
        raise PolicyConfigError(f"policy.backbone.preset={b.preset!r}: expected one of {BACKBONE_PRESETS}")
    if b.preset == "pretrained" and not b.pretrained_path:
        raise PolicyConfigError("policy.backbone.preset='pretrained' needs policy.backbone.pretrained_path (a local directory)")
    if b.dtype not in ("float32", "bfloat16", "float16"):
        raise PolicyConfigError(f"policy.backbone.dtype={b.dtype!r}: expected float32, bfloat16 or float16")
    if cfg.plan_source not in ACTION_SOURCES:
        raise PolicyConfigError(f"policy.plan_source={cfg.plan_source!r}: expected one of {ACTION_SOURCES}")
    if e.init not in FLOW_INITS:
        raise PolicyConfigError(f"policy.expert.init={e.init!r}: expected one of {FLOW_INITS}")
    if e.horizon < 1 or e.interval_s <= 0:
        raise PolicyConfigError(
            f"policy.expert.horizon={e.horizon} / interval_s={e.interval_s}: need horizon >= 1, interval_s > 0")
    if not 1 <= e.waypoints_per_token <= e.horizon:
        raise PolicyConfigError(
            f"policy.expert.waypoints_per_token={e.waypoints_per_token}: need 1 <= waypoints_per_token <= horizon ({e.horizon})")
    if e.num_steps < 1:
        raise PolicyConfigError(f"policy.expert.num_steps={e.num_steps}: need at least one Euler step")
    if e.kv_layers is None and (e.kv_layer_interval < 1 or e.kv_layer_offset < 0):
        raise PolicyConfigError(
            f"policy.expert.kv_layer_interval={e.kv_layer_interval} / kv_layer_offset={e.kv_layer_offset}:"
            " need interval >= 1, offset >= 0"
        )
    if e.kv_layers is not None and len(e.kv_layers) == 0:
        raise PolicyConfigError("policy.expert.kv_layers is empty: name at least one VLM layer, or set it to null")
    if e.history_noise_std < 0:
        raise PolicyConfigError(f"policy.expert.history_noise_std={e.history_noise_std}: must be >= 0")
    if not 0.0 < e.pace_min_scale <= 1.0:
        raise PolicyConfigError(f"policy.expert.pace_min_scale={e.pace_min_scale}: must lie in (0, 1] (a plan is only "
                                "known up to its last pose, so it can be driven slower, not faster)")
    if c.num_tokens < 2:
        raise PolicyConfigError(f"policy.codebook.num_tokens={c.num_tokens}: need at least 2 (token 0 is standing still)")
    if c.delta <= 0 or c.segment_s <= 0:
        raise PolicyConfigError(f"policy.codebook.delta={c.delta} / segment_s={c.segment_s}: must be > 0")
    if cfg.max_reasoning_tokens < 1:
        raise PolicyConfigError(f"policy.max_reasoning_tokens={cfg.max_reasoning_tokens}: must be >= 1")
    return cfg
