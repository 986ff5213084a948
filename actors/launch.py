"""Launching the actor groups of a GRPO run from its config: placement, learner, rollout, scorer, weight sync."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import ray

from actors.learner import Learner, LearnerGroup
from actors.placement import connect, in_bundle, reserve
from actors.rollout import FaultInjection, RolloutPool, RolloutWorker
from actors.scorer import ScorerPool, ScorerWorker
from actors.weight_sync import WeightSyncManager, resolve_backend
from rl.config import TrainConfig

logger = logging.getLogger(__name__)


def _bundle(cpus: float, gpus: float) -> dict:
    bundle = {"CPU": cpus}
    if gpus > 0:
        bundle["GPU"] = gpus
    return bundle


def local_cpus_needed(cfg: TrainConfig) -> int:
    """CPUs a local cluster must announce so every actor can be placed (over-committing a small machine)."""
    return int(cfg.learner.num_workers * cfg.learner.cpus_per_worker + cfg.rollout.num_workers * cfg.rollout.cpus_per_worker
               + cfg.scorer.num_workers * cfg.scorer.cpus_per_worker + 1 + 0.999)


class ActorGroups:
    """The learner group, the rollout pool, the scorer pool and the weight-sync channel between them."""

    def __init__(self, cfg: TrainConfig, learner: LearnerGroup, rollouts: RolloutPool, scorers: ScorerPool,
                 weights: WeightSyncManager, groups: list):
        self.cfg = cfg
        self.learner, self.rollouts, self.scorers = learner, rollouts, scorers
        self.weights = weights
        self._placement_groups = groups

    @classmethod
    def launch(cls, cfg: TrainConfig, out_dir: Path) -> "ActorGroups":
        # Before Ray starts: a placement the sync backend cannot serve is a config error naming the keys.
        backend, transport = resolve_backend(cfg.weight_sync.backend, cfg.learner.gpus_per_worker,
                                             cfg.rollout.gpus_per_worker, cfg.rollout.num_workers)
        connect(cfg.ray.address, cfg.ray.num_cpus or local_cpus_needed(cfg))
        timeout = cfg.ray.placement_timeout_s
        l, r, s = cfg.learner, cfg.rollout, cfg.scorer
        learner_pg = reserve("learner", [_bundle(l.cpus_per_worker, l.gpus_per_worker)] * l.num_workers, timeout)
        rollout_pg = reserve("rollout", [_bundle(r.cpus_per_worker, r.gpus_per_worker)] * r.num_workers, timeout)
        scorer_pg = reserve("scorer", [_bundle(s.cpus_per_worker, 0)] * s.num_workers, timeout)

        g = cfg.grpo
        learner_cls = ray.remote(Learner)

        def make_learner(rank: int, world_size: int):
            return learner_cls.options(num_cpus=l.cpus_per_worker, num_gpus=l.gpus_per_worker,
                                       scheduling_strategy=in_bundle(learner_pg, rank)).remote(
                rank, world_size, cfg.policy_init, g, l, r, cfg.weight_sync, cfg.seed)

        learner = LearnerGroup(make_learner, l.num_workers)

        fault = FaultInjection(cfg.debug.kill_rollout_worker_at_step, cfg.debug.kill_rollout_worker_rank, str(out_dir / "faults"))
        rollout_cls = ray.remote(max_restarts=0)(RolloutWorker)
        sampling = dataclasses.replace(r, group_reasoning=cfg.group_reasoning())  # "auto" resolved for the workers

        def make_rollout(rank: int):
            return rollout_cls.options(num_cpus=r.cpus_per_worker, num_gpus=r.gpus_per_worker,
                                       scheduling_strategy=in_bundle(rollout_pg, rank)).remote(
                rank, cfg.policy_init, sampling, g.group_size, l.lora, fault, bf16=l.bf16)

        rollouts = RolloutPool(make_rollout, r.num_workers, max_retries=r.max_retries)

        scorer_cls = ray.remote(max_restarts=-1, max_task_retries=1)(ScorerWorker)

        def make_scorer(rank: int):
            return scorer_cls.options(num_cpus=s.cpus_per_worker, scheduling_strategy=in_bundle(scorer_pg, rank)).remote(
                rank, s)

        scorers = ScorerPool(make_scorer, s.num_workers)
        weights = WeightSyncManager(learner.rank0, rollouts, backend, transport)
        groups = cls(cfg, learner, rollouts, scorers, weights, [learner_pg, rollout_pg, scorer_pg])
        logger.info("actors up: %d learner, %d rollout, %d scorer; weight sync %s%s", l.num_workers, r.num_workers,
                    s.num_workers, backend, f" ({transport})" if transport else "")
        return groups

    @property
    def sync_backend(self) -> str:
        return self.weights.backend

    def push_weights(self, version: int) -> int:
        """The learner's weights to every rollout worker at `version` (`WeightSyncManager.push`); returns bytes."""
        return self.weights.push(version)

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for group in (self.rollouts, self.scorers, self.learner):
            group.shutdown()
        for pg in self._placement_groups:
            try:
                remove_placement_group(pg)
            except Exception:
                pass

