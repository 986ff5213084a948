"""The pace action: where along its path a plan is driven. Pure functions; the head lives in `ActionExpert`.

A plan (N, 3) fixes a path and a speed profile. The pace z is the log of the fraction of that speed the ego
drives it at: pose k becomes the plan's pose at time s * t_k, s = exp(clip(z, log(min_scale), 0)) (the plan
is only known up to its last pose, so it can be driven slower but not faster; s = 1 is the plan as it is).

z is the pace head's mean in evaluation, and a draw from N(mean, pace_std^2) in a rollout. The draw's density
is one more column of the flow chain, after the denoising steps: its log-probability log N(z; mean, pace_std^2)
(one dimension), its std pace_std, and its "mean" stored as a transition mean of the chain's shape (N, 3) that
is zero except for element [0, 0], which holds the pace mean. With that layout the GRPO objective treats the
column as it treats a denoising step: its own clipped ratio, and the closed-form Gaussian KL to the reference,
|mean - mean_ref|^2 / (2 pace_std^2), which the zero elements leave equal to the pace's.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from rl.policy.flow import FlowSample, gaussian_logprob, step_tensors
from rl.policy.trajectory import resample_poses


def pace_scales(z: np.ndarray, min_scale: float) -> np.ndarray:
    """Speed fractions s = exp(clip(z, log(min_scale), 0)) (B,) in [min_scale, 1] of paces z (B,)."""
    return np.exp(np.clip(np.asarray(z, dtype=np.float64), math.log(min_scale), 0.0))


def drive_at_pace(plans: np.ndarray, scales: np.ndarray, interval_s: float) -> np.ndarray:
    """Plans (B, N, 3) (ego frame, a pose every `interval_s`) driven along their paths at `scales` (B,) times their
    speed: pose k of row b becomes the plan's pose at time scales[b] * t_k (linear interpolation from the origin,
    as `rl.evaluate.slowed`). Rows at scale 1 are returned unchanged."""
    out = np.array(plans, dtype=np.float64, copy=True)
    for b, s in enumerate(np.asarray(scales, dtype=np.float64)):
        if s < 1.0:
            out[b] = resample_poses(plans[b], interval_s, plans.shape[-2], interval_s * float(s))
    return out


def pace_logprob(z: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(z; mean, std^2) (B,) fp32 of paces z (B,): the flow's Gaussian density of a one-dimensional draw."""
    return gaussian_logprob(z[:, None], mean[:, None], std)


def draw_pace(mean: torch.Tensor, std: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """z (B,) fp32: the mean itself at std 0, else mean + std * eps."""
    if std == 0.0:
        return mean.float()
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    return mean.float() + std * eps


def with_pace_column(flow: FlowSample, z: torch.Tensor, mean: torch.Tensor, std: float) -> FlowSample:
    """`flow` with the pace's column appended after its steps (see the module docstring); gradients flow through
    `mean`. z, mean: (B,)."""
    embedded = torch.zeros_like(flow.means[:, -1], dtype=torch.float32)
    embedded[:, 0, 0] = 1.0
    embedded = embedded * mean.float()[:, None, None]
    stds, stochastic = step_tensors([std], flow.chain.device)
    return FlowSample(flow.chain, torch.cat([flow.logprobs, pace_logprob(z, mean, std)[:, None]], 1),
                      torch.cat([flow.means.float(), embedded[:, None]], 1), torch.cat([flow.stds, stds]),
                      torch.cat([flow.stochastic, stochastic]))
