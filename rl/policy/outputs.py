"""What the policy returns: inference results (numpy, cheap to ship through Ray) and learner-side tensors."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from rl.policy.inputs import Completion


@dataclass
class StageTimings:
    """Wall-clock seconds of one call: VLM prefill, reasoning decode (up to `<action_gen>` / `<answer>`),
    trajectory generation (the expert's flow, or the action-token decode)."""

    prefill_s: float = 0.0
    reasoning_s: float = 0.0
    trajectory_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.reasoning_s + self.trajectory_s

    def as_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s}


@dataclass
class FlowChain:
    """The expert's denoising chain of one sample. states (K + 1, N, 3) float32 x_0..x_K (normalised space);
    logprobs (K,) float32 of x_{k+1} | x_k; stochastic (K,) bool (False: a deterministic step, logprob 0);
    noise_level: the sampler's a; sigma0: the prior's std around a_his. start_scored: logprobs and
    stochastic have K + 1 entries, the first the start's log N(x_0; a_his, sigma0^2 I). pace: the drawn pace z
    (`rl.policy.pace`) when one was drawn (pace_std > 0); logprobs and stochastic then end with its column."""

    states: np.ndarray
    logprobs: np.ndarray
    stochastic: np.ndarray
    noise_level: float
    sigma0: float
    start_scored: bool = False
    pace: Optional[float] = None
    pace_std: float = 0.0


@dataclass
class PolicySample:
    """One sample of a group. trajectory: (N, 3) rear-axle poses, ego frame at t = 0 (the expert's horizon).
    action_tokens: codebook indices of the answer (empty when the expert produced the trajectory).
    chain: the flow chain (None for action_source "tokens"). plan: the flow's plan (N, 3) before the pace drove
    it slower into `trajectory`; None when the trajectory is the plan (no pace head, or tokens)."""

    completion: Completion
    text: str
    mode: str
    reasoning: str
    action_tokens: np.ndarray
    trajectory: np.ndarray
    chain: Optional[FlowChain] = None
    plan: Optional[np.ndarray] = None


@dataclass
class GroupSample:
    """G samples of one scene sharing one prefill, with the sampling settings and the stage timings."""

    scene_token: str
    samples: list[PolicySample]
    action_source: str
    temperature: float
    top_p: float
    flow_noise: float
    timings: StageTimings = field(default_factory=StageTimings)

    @property
    def trajectories(self) -> np.ndarray:
        """(G, N, 3)."""
        return np.stack([s.trajectory for s in self.samples])

    @property
    def plans(self) -> Optional[np.ndarray]:
        """(G, N, 3) the plans before their pace, or None when no sample was paced (the trajectories are the plans)."""
        if all(s.plan is None for s in self.samples):
            return None
        return np.stack([s.trajectory if s.plan is None else s.plan for s in self.samples])


@dataclass
class PlanResult:
    """trajectories (B, N, 3) ego frame; per scene the decoded completion, its mode and reasoning; paces (B,): the
    pace z the head chose for each plan (`rl.policy.pace`; the plan is driven at it unless planned with
    `drive_pace` False), None without a pace head; plans (B, N, 3): the flow's plans before they were driven at
    their pace, None when `trajectories` are those plans."""

    trajectories: np.ndarray
    texts: list[str]
    modes: list[str]
    reasoning: list[str]
    timings: StageTimings
    paces: Optional[np.ndarray] = None
    plans: Optional[np.ndarray] = None


@dataclass
class TokenLogprobs:
    """Per completion token, left-aligned like `Completion.token_ids`: logprobs (B, T) (with grad; 0 where mask
    is False), mask (B, T) bool = tokens that carry a policy gradient (sampled ones), lengths (B,)."""

    logprobs: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


@dataclass
class FlowLogprobs:
    """Per flow step: logprobs (B, K) fp32 (with grad through the expert), means (B, K, N, 3) (for the KL to a
    reference: |mean - mean_ref|^2 / (2 std^2)), stds (K,), stochastic (K,) bool."""

    logprobs: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    stochastic: torch.Tensor


@dataclass
class LossOutput:
    """A scalar loss (with grad) and float metrics for logging."""

    loss: torch.Tensor
    metrics: dict[str, float]
