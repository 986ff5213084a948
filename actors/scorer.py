"""Scorer workers: CPU actors that load the configured reward functions by name and score sampled groups.

Each worker keeps a per-scene cache (e.g. the PDM scorer's prepared geometry and PDM-Closed reference), so a
scene seen again - another group of the same scene, or the evaluation - costs only the plans. Ray restarts a
worker that dies; a call that fails inside a reward function makes its samples unscorable (counted), never 0.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Optional

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from rewards.registry import CompositeReward, RewardTerm, ScoringInput
from rl.config import ScorerConfig
from rl.records import GroupScores, ScoreRequest  # noqa: F401  (the records this actor takes and returns)
from sim.scene import Scene

logger = logging.getLogger(__name__)


class ScorerWorker:
    """Loads the reward functions inside the actor; scores groups; evaluates plans with NAVSIM's scorer."""

    def __init__(self, rank: int, scorer: ScorerConfig, cache_scenes: int = 512):
        """Built from the run's `scorer` section: the reward terms (functions loaded here, by name) and the
        per-call timeout."""
        self.rank = rank
        terms = [RewardTerm(t.name, t.weight, dict(t.kwargs), t.label) for t in scorer.rewards]
        self.reward = CompositeReward(terms, timeout_s=scorer.timeout_s)
        self._caches: OrderedDict[str, dict] = OrderedDict()
        self._cache_scenes = cache_scenes

    def ready(self) -> int:
        return self.rank

    def _cache(self, token: str) -> dict:
        cache = self._caches.pop(token, None) or {}
        self._caches[token] = cache
        while len(self._caches) > self._cache_scenes:
            self._caches.popitem(last=False)
        return cache

    def score(self, request: ScoreRequest) -> GroupScores:
        start = time.perf_counter()
        cache = self._cache(request.scene.token)
        plans = request.plans if request.plans is not None else [None] * len(request.trajectories)
        batch = [
            ScoringInput(request.scene, np.asarray(t, dtype=np.float64), r, m, request.interval_s, cache,
                         None if p is None else np.asarray(p, dtype=np.float64))
            for t, r, m, p in zip(request.trajectories, request.reasoning, request.modes, plans)
        ]
        before = dict(self.reward.failures)
        outcomes = self.reward(batch)
        totals = np.array([np.nan if o.total is None else o.total for o in outcomes], dtype=np.float64)
        failures = {k: v - before.get(k, 0) for k, v in self.reward.failures.items() if v > before.get(k, 0)}
        return GroupScores(totals, [o.components for o in outcomes], [o.error for o in outcomes],
                           time.perf_counter() - start, failures)

    def evaluate(self, scene: Scene, trajectories: np.ndarray, version: str, interval_s: float = 0.5) -> list[dict]:
        """NAVSIM's full result rows (sub-scores) for plans (G, N, 3) of one scene; raises on bad input."""
        from rewards.pdm import PDMScorer

        scorer = PDMScorer(version)
        prepared = scorer.prepare_cached(scene, self._cache(scene.token))
        return scorer.score(prepared, np.asarray(trajectories, dtype=np.float64), interval_s=interval_s)


class ScorerPool:
    """K scorer workers; requests are spread round robin. A request whose worker died twice is unscorable."""

    def __init__(self, make_worker, num_workers: int):
        self.workers = [make_worker(rank) for rank in range(num_workers)]
        ray.get([w.ready.remote() for w in self.workers])
        self._next = 0

    def submit(self, request: ScoreRequest):
        """Start scoring a group; returns a handle for `gather`."""
        worker = self.workers[self._next % len(self.workers)]
        self._next += 1
        return request, worker.score.remote(request)

    def gather(self, handles: list) -> list[GroupScores]:
        out = []
        for request, ref in handles:
            try:
                out.append(ray.get(ref))
            except (RayActorError, RayTaskError) as err:
                logger.error("scoring scene %s failed in the scorer worker: %s", request.scene.token, err)
                n = len(request.trajectories)
                out.append(GroupScores(np.full(n, np.nan), [{} for _ in range(n)], [f"scorer worker: failed: {err}"] * n,
                                       failures_by_term={"scorer worker": n}))
        return out

    def evaluate(self, items: list[tuple[Scene, np.ndarray]], version: str, interval_s: float = 0.5) -> list:
        """NAVSIM result rows per (scene, plans); an exception (e.g. a bad plan) is returned in place of rows."""
        refs = [self.workers[i % len(self.workers)].evaluate.remote(s, p, version, interval_s) for i, (s, p) in enumerate(items)]
        results = []
        for ref in refs:
            try:
                results.append(ray.get(ref))
            except (RayActorError, RayTaskError) as err:
                results.append(err)
        return results

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass
