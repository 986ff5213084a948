"""Policy-gradient losses for GRPO on tokens and on flow-matching denoising steps (torch, pure functions).

Shapes: B sequences (or trajectories), T tokens (or K denoising steps). `mask` is 1 where a position counts.
"""
from __future__ import annotations

import torch

from rl.config import KL_ESTIMATORS  # defined once, with the config key that names them


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean aggregation: the sum over every counted position of the batch divided by their number
    (long sequences weigh more than short ones, as in DAPO's token-level loss)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO/GRPO clipped surrogate with asymmetric bounds, token-mean aggregated.

    logp, old_logp, mask: (B, T); advantages: (B,) broadcast over T.
    loss = mean over counted tokens of -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A), rho = exp(logp - old).
    Returns (loss, stats) with the fraction of clipped tokens and the mean ratio.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None].to(logp.dtype)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        was_clipped = (clipped < unclipped).to(logp.dtype)
        stats = {"clip_fraction": masked_mean(was_clipped, mask), "ratio_mean": masked_mean(ratio, mask)}
    return loss, stats


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-position estimate of KL(pi || pi_ref) from samples of pi (Schulman's estimators).

    k1 = log pi - log pi_ref (unbiased, can be negative); k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0).
    """
    log_ratio = ref_logp - logp
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    if estimator == "k1":
        return -log_ratio
    return torch.exp(log_ratio) - log_ratio - 1.0


def gaussian_step_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL between two Gaussian denoising transitions of equal std: |mean - ref_mean|^2 / (2 std^2),
    summed over the action dimensions. mean, ref_mean: (B, K, D); std: (K,) or (B, K). Returns (B, K), on
    mean's device: every operand must already live there (a std built elsewhere is an error naming it)."""
    for name, t in (("ref_mean", ref_mean), ("std", std)):
        if t.device != mean.device:
            raise ValueError(f"gaussian_step_kl: {name} is on {t.device}, the means on {mean.device}")
    std = std if std.dim() == 2 else std[None, :].expand(mean.shape[0], -1)
    return ((mean - ref_mean) ** 2).sum(-1) / (2.0 * std.clamp_min(1e-8) ** 2)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    kl_estimator: str = "k3",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO objective on token log-probs: clipped surrogate + beta * KL to the reference (token mean).
    With kl_beta = 0 the reference is not needed."""
    loss, stats = clipped_policy_loss(logp, old_logp, advantages, mask, clip_low, clip_high)
    if kl_beta > 0.0:
        if ref_logp is None:
            raise ValueError("kl_beta > 0 needs the reference log-probs")
        kl = masked_mean(kl_estimate(logp, ref_logp, kl_estimator), mask)
        loss = loss + kl_beta * kl
        stats["kl"] = kl.detach()
    stats["policy_loss"] = loss.detach()
    return loss, stats


def flow_grpo_loss(
    step_logp: torch.Tensor,
    old_step_logp: torch.Tensor,
    advantages: torch.Tensor,
    step_mask: torch.Tensor,
    means: torch.Tensor | None = None,
    ref_means: torch.Tensor | None = None,
    step_std: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    per_dimension: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO on the flow expert's stochastic denoising chain: one clipped ratio per Euler step.

    step_logp, old_step_logp, step_mask: (B, K) (the mask drops deterministic steps), each step's log-density
    summed over its D action dimensions; advantages: (B,). KL to the reference expert per step is the
    closed-form Gaussian KL of the transition means; means, ref_means: (B, K, D).
    per_dimension: the step's log-ratio and KL are divided by D (`grpo.flow_ratio: dimension`), so the ratio is
    the geometric mean of the D dimensions' ratios and the clip bounds a dimension's move, not the step's sum.
    """
    dims = 1.0  # the step's joint density; D with per_dimension
    if per_dimension:
        if means is None:
            raise ValueError("per_dimension needs the step means (B, K, D) to know D")
        dims = float(means.shape[-1])
        step_logp, old_step_logp = step_logp / dims, old_step_logp / dims
    loss, stats = clipped_policy_loss(step_logp, old_step_logp, advantages, step_mask, clip_low, clip_high)
    if kl_beta > 0.0:
        if means is None or ref_means is None or step_std is None:
            raise ValueError("kl_beta > 0 needs the step means, the reference means and the step std")
        kl = masked_mean(gaussian_step_kl(means, ref_means, step_std), step_mask) / dims
        loss = loss + kl_beta * kl
        stats["kl"] = kl.detach()
    stats["policy_loss"] = loss.detach()
    return loss, stats
