"""The GRPO objective on a micro-batch of sampled completions, for `train_target` vlm | expert | joint.

- vlm: the clipped ratio on the reasoning and action tokens' log-probabilities (the paper's choice), KL to the
  reference with the k1/k3 estimator;
- expert: the clipped ratio per stochastic denoising step of the flow expert (spanvla.md 2.4), KL to the
  reference expert in closed form (Gaussian transitions);
- joint: both, from one VLM forward whose K/V carry gradients into the VLM.

Aggregation is a token (or step) mean over the WHOLE batch of the update: each micro-batch's loss is scaled by
its share of the batch's tokens (steps) and by the number of learner ranks (whose gradients are averaged).

With `expert` the VLM is frozen: `micro_batch_prefix` runs it once per micro-batch and step, and
`micro_batch_loss(..., prefix=...)` reads that cache for the policy's and the reference's flow log-probs in
every update of the step (the frozen reference's are computed in the first update only). `cache_prefix` is
on by default; off recomputes the VLM each time, as vlm / joint must (their VLM changes with each update).
See `rl.policy.training` for what each way of reusing it would cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import numpy as np
import torch

from rl.config import FLOW_RATIOS, TRAIN_TARGETS, GRPOConfig, LearnerConfig, RolloutConfig  # defined once, in the config
from rl.grpo.losses import flow_grpo_loss, grpo_loss
from rl.policy.training import PrefixKV, cached_flow_step_logprobs, prefix_kv
from rl.records import TrainingSample


@dataclass
class ObjectiveConfig:
    """What `micro_batch_loss` needs of a run's config; the learner builds it from `grpo`, `rollout` and `learner`.
    Defaults are those sections' (one definition), except `kl_beta`: the objective alone has no KL term."""

    train_target: str = GRPOConfig.train_target
    temperature: float = RolloutConfig.temperature  # the rollout's sampling temperature (log-probs are taken under it)
    kl_beta: float = 0.0
    kl_estimator: str = GRPOConfig.kl_estimator
    clip_low: float = GRPOConfig.clip_low
    clip_high: float = GRPOConfig.clip_high
    flow_ratio: str = GRPOConfig.flow_ratio  # "step" | "dimension" (see GRPOConfig)
    cache_prefix: bool = LearnerConfig.cache_prefix  # expert only: one frozen-VLM forward per sample a step


def prefix_cache_applies(cfg: ObjectiveConfig) -> bool:
    """Whether an update computes the VLM prefix once per step: only while the VLM is frozen (expert)."""
    return bool(cfg.cache_prefix) and cfg.train_target == "expert"


def micro_batch_prefix(policy, samples: list[TrainingSample]) -> PrefixKV:
    """Collate `samples` and run the frozen VLM over them once (no grad): the cache `micro_batch_loss` reads.
    Samples with the same scene and completion (a group sampled with rollout.group_reasoning greedy) share
    one row of that pass."""
    batch = policy.collate_completions([s.scene for s in samples], [s.completion for s in samples])
    first: dict[tuple[str, bytes], int] = {}
    index = [first.setdefault((s.scene.token, np.asarray(s.completion.token_ids).tobytes()), len(first))
             for s in samples]
    if len(first) == len(samples):
        return prefix_kv(policy, batch)
    unique = [samples[index.index(row)] for row in range(len(first))]
    distinct = prefix_kv(policy, policy.collate_completions([s.scene for s in unique], [s.completion for s in unique]))
    return distinct.rows(index, batch.to(policy.device, policy.dtype))


def batch_normalisers(samples: list[TrainingSample]) -> dict[str, float]:
    """Counted tokens and stochastic flow steps of a whole update batch (the token-mean denominators)."""
    tokens = sum(float(s.completion.sampled.sum()) * (s.weight > 0) for s in samples)
    steps = sum(float(s.chain.stochastic.sum()) * (s.weight > 0) for s in samples if s.chain is not None)
    return {"tokens": max(tokens, 1.0), "steps": max(steps, 1.0)}


def _left_aligned(arrays: list[np.ndarray], width: int, dtype=torch.float32) -> torch.Tensor:
    out = torch.zeros(len(arrays), width, dtype=dtype)
    for i, a in enumerate(arrays):
        n = min(len(a), width)
        out[i, :n] = torch.tensor(np.asarray(a[:n]), dtype=dtype)  # a copy: arrays from the object store are read-only
    return out


def micro_batch_loss(
    policy,
    samples: list[TrainingSample],
    cfg: ObjectiveConfig,
    normalisers: dict[str, float],
    world_size: int = 1,
    reference: Optional[Callable[[], ContextManager]] = None,
    prefix: Optional[PrefixKV] = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scaled GRPO loss of `samples` (with grad) and its metrics.

    policy: a `SpanVLAPolicy` in training mode. reference(): a context manager yielding the reference policy
    (needed when kl_beta > 0). normalisers: `batch_normalisers` of the whole update batch. prefix: the
    `micro_batch_prefix` of these samples (train_target expert only): the policy's and the reference's
    experts read its K/V instead of running the VLM, and the reference's flow log-probs are computed once
    and kept on it; the caller guarantees that the VLM and the reference have not changed since.
    """
    if cfg.train_target not in TRAIN_TARGETS:
        raise ValueError(f"train_target={cfg.train_target!r}: expected one of {TRAIN_TARGETS}")
    if cfg.flow_ratio not in FLOW_RATIOS:
        raise ValueError(f"flow_ratio={cfg.flow_ratio!r}: expected one of {FLOW_RATIOS}")
    if prefix is not None:
        if cfg.train_target != "expert":
            raise ValueError(f"train_target={cfg.train_target!r} trains the VLM: its prefix cannot be cached "
                             "(a cached prefix serves train_target expert only)")
        tokens_of = [s.scene.token for s in samples]
        if list(prefix.batch.scene_tokens) != tokens_of:
            raise ValueError(f"the cached prefix was built for scenes {list(prefix.batch.scene_tokens)[:4]}..., "
                             f"not for this micro-batch's {tokens_of[:4]}...")
    use_tokens = cfg.train_target in ("vlm", "joint")
    use_flow = cfg.train_target in ("expert", "joint")
    chains = [s.chain for s in samples] if use_flow else None
    if use_flow and any(c is None for c in chains):
        raise ValueError("train_target expert/joint needs flow chains: sample with rollout.action_source=expert")
    if prefix is not None:
        batch = prefix.batch
    else:
        batch = policy.collate_completions([s.scene for s in samples], [s.completion for s in samples])
    device = policy.device
    weights = torch.tensor([s.weight for s in samples], dtype=torch.float32, device=device)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=device) * weights
    with_ref = cfg.kl_beta > 0.0
    if with_ref and reference is None:
        raise ValueError("kl_beta > 0 needs a reference policy")

    if cfg.train_target == "joint":
        tokens, flow = policy.score_completions(batch, chains, cfg.temperature, kv_grad=True)
    elif use_tokens:
        tokens, flow = policy.token_logprobs(batch, cfg.temperature), None
    elif prefix is not None:
        tokens, flow = None, cached_flow_step_logprobs(policy, prefix, chains)
    else:
        tokens, flow = None, policy.flow_step_logprobs(batch, chains, kv_grad=False)
    ref_tokens = ref_flow = None
    if with_ref and prefix is not None and prefix.reference_flow is not None:
        ref_flow = prefix.reference_flow  # the frozen reference expert on the same K/V and chains: unchanged
    elif with_ref:
        with torch.no_grad(), reference() as ref:
            if use_tokens:
                ref_tokens = ref.token_logprobs(batch, cfg.temperature).logprobs
            if use_flow and prefix is not None:
                ref_flow = prefix.reference_flow = cached_flow_step_logprobs(ref, prefix, chains)
            elif use_flow:
                ref_flow = ref.flow_step_logprobs(batch, chains, kv_grad=False)

    loss = torch.zeros((), device=device)
    metrics: dict[str, float] = {}
    if use_tokens:
        width = tokens.logprobs.shape[1]
        old = _left_aligned([s.completion.logprobs for s in samples], width).to(device)
        mask = tokens.mask.float() * weights[:, None]
        part, stats = grpo_loss(tokens.logprobs, old, advantages, mask, ref_tokens, cfg.kl_beta, cfg.kl_estimator,
                                cfg.clip_low, cfg.clip_high)
        share = float(mask.sum()) / normalisers["tokens"] * world_size
        loss = loss + part * share
        metrics.update({f"token_{k}": float(v) for k, v in stats.items()})
    if use_flow:
        old = torch.from_numpy(np.stack([c.logprobs for c in chains]).astype(np.float32)).to(device)  # copies read-only arrays
        step_mask = flow.stochastic[None, :].float().expand_as(old).to(device) * weights[:, None]
        per_dimension = cfg.flow_ratio == "dimension"
        part, stats = flow_grpo_loss(
            flow.logprobs.float(), old, advantages, step_mask,
            means=flow.means.float().flatten(2) if with_ref or per_dimension else None,
            ref_means=ref_flow.means.float().flatten(2) if with_ref else None,
            step_std=flow.stds.float() if with_ref else None,
            kl_beta=cfg.kl_beta, clip_low=cfg.clip_low, clip_high=cfg.clip_high, per_dimension=per_dimension,
        )
        share = float(step_mask.sum()) / normalisers["steps"] * world_size
        loss = loss + part * share
        metrics.update({f"flow_{k}": float(v) for k, v in stats.items()})
    return loss, metrics
