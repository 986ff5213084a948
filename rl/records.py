"""The records that cross a process boundary in a GRPO step, in the order they travel.

    driver --GroupRequest--> RolloutWorker --GroupRollout--> driver
    driver --ScoreRequest--> ScorerWorker  --GroupScores-->  driver
    driver --TrainingSample (one per kept sample)-->         Learner

Conventions (sim.conventions, NAVSIM's): trajectories are rear-axle poses (x [m], y [m], heading [rad]) in the
current ego frame (x forward, y left, heading counter-clockwise), one every `interval_s` seconds starting at
t = interval_s. G is the group size (samples of one scene), N the number of poses, K the flow's Euler steps.
Ray pickles these records; their arrays arrive read-only, so consumers copy before writing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from sim.scene import Scene

if TYPE_CHECKING:  # the policy's types, named without importing torch into every process that reads records
    from rl.policy.inputs import Completion
    from rl.policy.outputs import FlowChain, GroupSample


@dataclass
class GroupRequest:
    """One group to sample: the scene, its index in the step, and its sampling seed (derived from the run seed,
    the step and `group_id`, so the worker that samples it does not change the result)."""

    step: int
    group_id: int
    scene: Scene
    seed: int


@dataclass
class GroupRollout:
    """G samples of one scene, with the policy version (weights) they were sampled with.

    group: the policy's samples (`rl.policy.outputs.GroupSample`): per sample the reasoning text and mode, the
    completion tokens with their sampling log-probs, the flow chain (expert rollouts) and the trajectory (N, 3).
    seconds: wall time the worker spent on the group.
    """

    step: int
    group_id: int
    scene_token: str
    sample_type: str  # pos | neg | rec
    policy_version: int
    worker_rank: int
    group: "GroupSample"
    seconds: float


@dataclass
class ScoreRequest:
    """The G sampled trajectories of one scene and their reasoning, to be scored by the configured rewards.

    trajectories: (G, N, 3) poses, ego frame, `interval_s` apart (NAVSIM: N = 8 at 0.5 s).
    reasoning, modes: the G reasoning texts and their modes ("fast" | "slow").
    plans: (G, N, 3) the same samples' plans before their pace (`GroupSample.plans`), or None when the
    trajectories are the plans.
    """

    scene: Scene
    trajectories: np.ndarray
    reasoning: list[str]
    modes: list[str]
    interval_s: float = 0.5
    plans: Optional[np.ndarray] = None


@dataclass
class GroupScores:
    """Per sample: the total reward (NaN = unscorable), its named components, and why a sample failed
    ("<term>: why", None when scored).

    totals: (G,) float64. components: G dicts {component name: value} (logged as `reward/<name>`).
    failures_by_term: unscorable samples per reward term that failed them (a sample counts once, for the first
    term that failed it); "scorer worker" when the worker itself died twice.
    """

    totals: np.ndarray
    components: list[dict[str, float]]
    errors: list[Optional[str]]
    seconds: float = 0.0
    failures_by_term: dict[str, int] = field(default_factory=dict)

    @property
    def num_unscorable(self) -> int:
        return int(np.isnan(self.totals).sum())


@dataclass
class TrainingSample:
    """One sampled completion of a kept group, with its group-relative advantage.

    completion: the sampled tokens and their log-probs at sampling (`rl.policy.inputs.Completion`), the
    ratio's denominator. chain: the flow's states (K + 1, N, 3) in the expert's normalised space and its per-step
    sampling log-probs (`rl.policy.outputs.FlowChain`); None for token rollouts. weight 0 marks padding (a rank
    with no sample of its own): it contributes nothing.
    """

    scene: Scene
    completion: "Completion"
    chain: Optional["FlowChain"]
    advantage: float
    group_id: int
    weight: float = 1.0
