"""The GRPO driver: the single controller of a post-training run, readable top to bottom as the algorithm.

    for each step:
        groups   <- the data schedule (warm-up on positives, then the pos / neg / rec mix)
        rollouts <- rollout workers sample G trajectories per scene (one prefill per scene)
        scores   <- scorer workers, each group as soon as its rollout finishes
        advantages, kept <- group-normalised total rewards; groups with < 2 scorable samples or near-tie
                            totals are dropped and counted; a run too often unscorable stops
        (a step whose groups are all dropped ends here: no update, no sync, no new policy version)
        learner update (DeepSpeed) -> weight sync to the rollout workers (new policy version)
        log -> evaluate every N steps -> checkpoint every N steps

Asynchronous mode (`grpo.max_staleness: 1`): while the learner updates step t, a background thread samples
and scores step t+1 with the weights the rollout workers hold (version v, before update t); the weight push of
update t waits until that is done, so every group of step t+1 comes from version v and the learner's ratio
uses the log-probabilities recorded at sampling. A checkpoint keeps the step already sampled ahead (its groups,
samples and scores), and a run resumed there trains on it: checkpoints never change what a run samples.

The driver holds no model; the actors (`actors/`) do the work.
"""
from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from actors.launch import ActorGroups
from actors.rollout import group_seed
from rl.checkpoint import CheckpointDir, CheckpointError, DriverState
from rl.config import TrainConfig
from rl.config_io import config_to_dict, save_config
from rl.data_schedule import SceneSchedule
from rl.grpo.advantages import batch_advantages
from rl.grpo.metrics import evaluation_summary, rollout_metrics, score_metrics, selection_metrics
from rl.grpo.unscorable import StepScoring, UnscorableWindow
from rl.input_checks import validate_train_inputs
from rl.records import GroupRequest, GroupRollout, GroupScores, ScoreRequest, TrainingSample
from rl.scene_store import SceneStore
from rl.tracking import PhaseTimer, Tracker

logger = logging.getLogger(__name__)

# The timing/ keys every step logs (0.0 for a phase the step did not run).
STEP_PHASES = ("rollout", "scoring_wait", "learner", "prefetch_wait", "sync")


@dataclass
class StepRollouts:
    """The sampled and scored groups of one step, in group order (index = group id)."""

    requests: list[GroupRequest]
    rollouts: list[GroupRollout]
    scores: list[GroupScores]
    seconds: dict[str, float]  # "rollout": until the last group was sampled; "scoring_wait": then the scores
    prefetched: bool = False  # sampled during the previous step's learner update


def version_metrics(rollouts: list[GroupRollout], learner_version: int, max_staleness: int) -> dict[str, float]:
    """`rollout/policy_version_min|max` and `rollout/staleness_max` (learner version minus the oldest sample's)
    of one step's groups. Raises RuntimeError when the groups were sampled with different versions, or when the
    staleness is negative or above `max_staleness` (the bound of `grpo.max_staleness`)."""
    versions = [r.policy_version for r in rollouts]
    low, high = min(versions), max(versions)
    if low != high:
        raise RuntimeError(f"one step's groups were sampled with policy versions {sorted(set(versions))}: "
                           "a step's samples must all come from one version")
    staleness = learner_version - low
    if not 0 <= staleness <= max_staleness:
        raise RuntimeError(f"samples of policy version {low} with the learner at version {learner_version}: "
                           f"staleness {staleness} is outside [0, grpo.max_staleness={max_staleness}]")
    return {"rollout/policy_version_min": float(low), "rollout/policy_version_max": float(high),
            "rollout/staleness_max": float(staleness)}


class GRPODriver:
    """Runs GRPO post-training as configured by a `TrainConfig` (see `python -m rl.train`)."""

    def __init__(self, cfg: TrainConfig):
        """Checks what the config names (rewards, `policy_init`, datasets: `rl.input_checks`) before anything
        starts; a bad input raises `InputError` naming the key."""
        validate_train_inputs(cfg)
        self.cfg = cfg
        self.out_dir = Path(cfg.logging.out_dir)
        self.ckpt = CheckpointDir(cfg.checkpoint.dir or self.out_dir / "ckpt")
        self.train = SceneStore(cfg.data.train, cache_size=cfg.data.scene_cache)
        self.val = SceneStore(cfg.data.val, where={"sample_type": "pos"}, limit=cfg.eval.num_scenes) if cfg.eval.every else None
        self.schedule = SceneSchedule(self.train.rows_by_type(), cfg.grpo.groups_per_step, cfg.grpo.schedule.warmup_steps,
                                      dict(cfg.grpo.schedule.mix), cfg.seed)
        self.step = 0
        self.policy_version = 0
        self.unscorable = UnscorableWindow(cfg.scorer.max_unscorable_share, cfg.scorer.unscorable_window_steps)
        self.actors: Optional[ActorGroups] = None
        self.tracker: Optional[Tracker] = None
        self._background: Optional[ThreadPoolExecutor] = None  # samples the next step ahead (asynchronous mode)
        self._prefetched: Optional[StepRollouts] = None  # the next step's groups, sampled during this update
        # the groups of a step sampled ahead before a checkpoint, when the run resumes synchronously: drawn again
        self._resumed_requests: Optional[list[GroupRequest]] = None

    # --- the run ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train for `grpo.steps` steps (continuing from the latest checkpoint with `resume: auto`).
        Returns the last step's metrics. Every actor is killed on exit."""
        cfg = self.cfg
        try:
            self.actors = ActorGroups.launch(cfg, self.out_dir)
            resumed = self._maybe_resume()
            self.tracker = Tracker(self.out_dir, cfg.logging.run_name or self.out_dir.name, config_to_dict(cfg),
                                   use_wandb=cfg.logging.wandb, wandb_project=cfg.logging.wandb_project,
                                   wandb_mode=cfg.logging.wandb_mode, console_every=cfg.logging.console_every,
                                   resume=resumed)
            if cfg.grpo.max_staleness > 0:
                self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grpo-prefetch")
            self._sync_weights()  # every rollout worker holds the learner's weights before the first rollout
            if cfg.eval.every and self.step == 0:
                self.tracker.log(self.evaluate(), 0)  # the starting point of the eval curve
            metrics: dict = {}
            bar = tqdm(total=cfg.grpo.steps, initial=self.step, desc="GRPO", unit="step", dynamic_ncols=True)
            while self.step < cfg.grpo.steps:
                metrics = self.train_step()
                self.step += 1
                # after the push: the current weights, never the version a prefetched step was sampled with
                if cfg.eval.every and self.step % cfg.eval.every == 0 or self.step == cfg.grpo.steps:
                    metrics.update(self.evaluate())
                self.tracker.log(metrics, self.step)
                self.unscorable.check()  # after logging: the failing step's metrics are kept
                if self._checkpoint_due(self.step):
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(reward=f"{metrics.get('reward/total', float('nan')):.3f}")
            bar.close()
            return metrics
        finally:
            if self._background is not None:  # a prefetch still running finishes before its actors go
                self._background.shutdown(wait=True, cancel_futures=True)
                self._background = None
            if self.tracker is not None:
                self.tracker.close()
            if self.actors is not None:
                self.actors.shutdown()

    def train_step(self) -> dict:
        """One step of the loop in the module docstring; returns its metrics (not yet logged)."""
        g = self.cfg.grpo
        timer = PhaseTimer()
        if self._prefetched is not None:  # sampled and scored during the previous step's learner update
            batch, self._prefetched = self._prefetched, None
        else:
            requests, self._resumed_requests = self._resumed_requests or self._requests(self.step), None
            batch = self._sample_and_score(requests, timer)
        requests, rollouts, scores = batch.requests, batch.rollouts, batch.scores
        sampled = {**rollout_metrics(rollouts),
                   **version_metrics(rollouts, self.policy_version, g.max_staleness)}

        # advantages over each group, judged on the total reward: groups with fewer than 2 scorable samples or
        # whose totals are a near tie carry no signal and are dropped (counted per reason)
        selection = batch_advantages([s.totals for s in scores], g.normalize_std, g.filter_no_spread,
                                     g.tie_tolerance, std_floor=g.advantage_std_floor,
                                     std_scope=g.std_scope)
        # unscorable samples of kept groups stay out of the batch: they have no reward to learn from. The
        # completions and flow chains carry the log-probabilities recorded at sampling: the ratio's old policy.
        samples = [
            TrainingSample(requests[i].scene, s.completion, s.chain, float(a), i)
            for i, adv, keep in zip(range(len(scores)), selection.advantages, selection.kept) if keep
            for s, a, total in zip(rollouts[i].group.samples, adv, scores[i].totals) if np.isfinite(total)
        ]
        dropped = selection.dropped()
        self.unscorable.record(self._step_scoring(scores))

        # learner update, then the new weights to the rollout workers; a step without a kept group changes
        # nothing (no update, no sync, no new policy version)
        train = {"train/skipped": 1.0}
        sync = {}
        if samples:
            ahead = self._prefetch(self.step + 1) if self._prefetch_allowed() else None
            with timer("learner"):
                train = self.actors.learner.update(samples)
            train["train/skipped"] = 0.0
            if ahead is not None:
                with timer("prefetch_wait"):  # the push waits for every group of the next step
                    self._prefetched = ahead.result()
            self.policy_version += 1
            with timer("sync"):
                sync = self._sync_weights()
        else:
            logger.warning("step %d skipped: all %d groups dropped (%s)", self.step + 1, len(scores),
                           ", ".join(f"{reason}: {n}" for reason, n in dropped.items() if n) or "no groups")

        if self._picture_due():
            self._picture(requests[0].scene, rollouts[0], scores[0])
        prefetched = {"timing/prefetched_rollout_s": sum(batch.seconds.values())} if batch.prefetched else {}
        return {
            **sampled,
            **score_metrics(scores),
            **train, **sync,
            **selection_metrics(dropped, len(scores)),
            "rollout/prefetched": float(batch.prefetched),
            "rollout/worker_replacements": float(self.actors.rollouts.replacements),
            **timer.metrics(STEP_PHASES), **prefetched,
        }

    def _requests(self, step: int) -> list[GroupRequest]:
        """The groups of `step` (0-based) from the data schedule, each with its own sampling seed."""
        groups = self.schedule.next_groups(step)
        return [GroupRequest(step, i, self.train.scene(group.row), group_seed(self.cfg.seed, step, i))
                for i, group in enumerate(groups)]

    def _sample_and_score(self, requests: list[GroupRequest], timer: PhaseTimer) -> StepRollouts:
        """Sample every group, scoring each as soon as it is sampled; results in group order."""
        rollouts: dict[int, GroupRollout] = {}
        handles = {}
        with timer("rollout"):
            for rollout in self.actors.rollouts.sample(requests):
                rollouts[rollout.group_id] = rollout
                handles[rollout.group_id] = self.actors.scorers.submit(
                    self._score_request(requests[rollout.group_id], rollout))
        order = range(len(requests))
        with timer("scoring_wait"):
            scores = self.actors.scorers.gather([handles[i] for i in order])
        return StepRollouts(requests, [rollouts[i] for i in order], list(scores),
                            {k: timer.seconds[k] for k in ("rollout", "scoring_wait")})

    def _prefetch(self, step: int) -> Future:
        """Start sampling and scoring `step` (0-based) on the background thread, with the weights the rollout
        workers hold now. The data schedule advances here, on the driver's thread."""
        requests = self._requests(step)

        def job() -> StepRollouts:
            # the weight-sync manager keeps a replaced worker at this step's version (or refuses, see its docstring)
            with self.actors.weights.sampling_ahead():
                batch = self._sample_and_score(requests, PhaseTimer())
            batch.prefetched = True
            return batch

        return self._background.submit(job)

    def _checkpoint_due(self, step: int) -> bool:
        """Whether a checkpoint is written after `step` (1-based): every `checkpoint.every` steps and at the end."""
        return step % max(self.cfg.checkpoint.every, 1) == 0 or step == self.cfg.grpo.steps

    def _prefetch_allowed(self) -> bool:
        """Whether the next step may be sampled during this step's update: asynchronous mode and a next step
        exists (a checkpoint after this step keeps what was sampled ahead, `save_checkpoint`)."""
        return self.cfg.grpo.max_staleness >= 1 and self.step + 1 < self.cfg.grpo.steps

    def _picture_due(self) -> bool:
        every = self.cfg.logging.picture_every
        return bool(every) and (self.step + 1) % every == 0

    # --- pieces ---------------------------------------------------------------------------------------------
    def _score_request(self, request: GroupRequest, rollout: GroupRollout) -> ScoreRequest:
        group = rollout.group
        return ScoreRequest(request.scene, group.trajectories, [s.reasoning for s in group.samples],
                            [s.mode for s in group.samples], self.cfg.policy.expert.interval_s, group.plans)

    def _step_scoring(self, scores: list[GroupScores]) -> StepScoring:
        failures: Counter = Counter()
        examples: dict[str, str] = {}
        for group in scores:
            failures.update(group.failures_by_term or {})
            terms = list(group.failures_by_term or {})
            for error in filter(None, group.errors):
                # errors read "<term>: why"; when a single term failed the group, every error is its own
                term = next((t for t in terms if error.startswith(f"{t}: ")), terms[0] if len(terms) == 1 else None)
                if term is not None:
                    examples.setdefault(term, error[len(term) + 2:] if error.startswith(f"{term}: ") else error)
        return StepScoring(self.step + 1, sum(len(s.totals) for s in scores), sum(s.num_unscorable for s in scores),
                           failures, examples)

    def _sync_weights(self) -> dict:
        """Pushes the learner's weights to the rollout workers (timed by the caller as `timing/sync_s`)."""
        num_bytes = self.actors.push_weights(self.policy_version)
        return {"sync/bytes": float(num_bytes), "sync/policy_version": float(self.policy_version)}

    def evaluate(self) -> dict:
        """Deterministic plans of the current policy on the val split, scored by NAVSIM's scorer."""
        if self.val is None:
            return {}
        scenes = self.val.scenes(range(len(self.val)))
        plans = self.actors.rollouts.plan(scenes, batch_size=8, action_source=self.cfg.rollout.action_source)
        trajectories = [t for result in plans for t in result.trajectories]
        rows = self.actors.scorers.evaluate([(s, t[None]) for s, t in zip(scenes, trajectories)], self.cfg.eval.version,
                                            self.cfg.policy.expert.interval_s)
        return evaluation_summary(rows, self.cfg.eval.version)

    def _picture(self, scene, rollout: GroupRollout, scores: GroupScores) -> None:
        """Hands one group of this step to the report's picture (`rl.report.group_picture`) and the tracker."""
        from rl.report import group_picture

        number = self.step + 1  # the step as logged (1-based)
        path = group_picture(self.out_dir / "pictures" / f"step_{number:05d}.png", number, scene, rollout.group,
                             scores.totals, scores.components)
        self.tracker.log_image("rollout/picture", path, number)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """The learner's state, the driver's, and the next step when it was sampled ahead (asynchronous mode): the
        data schedule has already handed out its groups, and resuming must train on the same samples."""
        path = self.ckpt.begin(self.step)
        self.actors.learner.save(str(path))
        CheckpointDir.save_driver_state(path, DriverState(self.step, self.policy_version, self.schedule.state_dict(),
                                                          self.cfg.seed))
        if self._prefetched is not None:
            CheckpointDir.save_sampled_ahead(path, self._prefetched)
        save_config(self.cfg, path / "config.yaml")
        self.ckpt.commit(self.step, self.cfg.checkpoint.keep_last)
        logger.info("checkpoint written: %s", path)
        return path

    def _maybe_resume(self) -> bool:
        if self.cfg.checkpoint.resume != "auto":
            return False
        path = self.ckpt.latest()
        if path is None:
            return False
        state = CheckpointDir.load_driver_state(path)
        if state.seed != self.cfg.seed:
            raise CheckpointError(f"{path} was written by a run with seed {state.seed}; this config has seed "
                                  f"{self.cfg.seed}: use another logging.out_dir / checkpoint.dir, or the same seed")
        self.actors.learner.load(str(path))
        self.schedule.load_state_dict(state.schedule)
        self.step, self.policy_version = state.step, state.policy_version
        ahead = CheckpointDir.load_sampled_ahead(path)
        if ahead is not None and self.cfg.grpo.max_staleness == 0:
            # a synchronous run does not train on samples one version old: it draws the same groups again
            logger.info("%s holds step %d sampled ahead; grpo.max_staleness=0 samples its groups again with the "
                        "checkpoint's weights", path, self.step + 1)
            self._resumed_requests = ahead.requests
        elif ahead is not None:
            self._prefetched = ahead
        elif self.cfg.grpo.max_staleness and self.step < self.cfg.grpo.steps:
            # the last checkpoint of a finished run, or a synchronous run's: an asynchronous run that had gone on
            # would have sampled the next step during this step's update, with the previous weights
            logger.warning("%s keeps no step sampled ahead (the last step of a finished run, or a synchronous "
                           "run): step %d is sampled with the newest weights, where an asynchronous run that had "
                           "gone on samples it one version earlier", path, self.step + 1)
        logger.info("resumed from %s at step %d (policy version %d)", path, self.step, self.policy_version)
        return True
