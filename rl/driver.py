"""The GRPO driver: the single controller of a post-training run, readable top to bottom as the algorithm.

    for each step:
        groups   <- the data schedule (warm-up on positives, then the pos / neg / rec mix)
        rollouts <- rollout workers sample G trajectories per scene (one prefill per scene)
        scores   <- scorer workers, each group as soon as its rollout finishes
        advantages, kept <- group-normalised rewards; groups without spread in the main reward are dropped
        learner update (DeepSpeed) -> weight sync to the rollout workers (new policy version)
        log -> evaluate every N steps -> checkpoint every N steps

The driver holds no model; the actors (`actors/`) do the work.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from actors.launch import ActorGroups
from actors.rollout import GroupRequest, GroupRollout, group_seed
from actors.scorer import GroupScores, ScoreRequest
from rl.checkpoint import CheckpointDir, CheckpointError, DriverState
from rl.config import TrainConfig
from rl.config_io import config_to_dict, save_config
from rl.data_schedule import SceneSchedule
from rl.grpo.advantages import batch_advantages
from rl.grpo.metrics import evaluation_summary, rollout_metrics, score_metrics
from rl.grpo.objective import TrainingSample
from rl.scene_store import SceneStore
from rl.tracking import Tracker

logger = logging.getLogger(__name__)


class GRPODriver:
    """Runs GRPO post-training as configured by a `TrainConfig` (see `python -m rl.train`)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        if not cfg.policy_init:
            raise ValueError("policy_init is not set: GRPO starts from a saved SFT policy directory (python -m rl.sft)")
        if not Path(cfg.policy_init).is_dir():
            raise FileNotFoundError(f"policy_init={cfg.policy_init}: no such policy directory")
        self.out_dir = Path(cfg.logging.out_dir)
        self.ckpt = CheckpointDir(cfg.checkpoint.dir or self.out_dir / "ckpt")
        self.train = SceneStore(cfg.data.train)
        self.val = SceneStore(cfg.data.val, where={"sample_type": "pos"}, limit=cfg.eval.num_scenes) if cfg.eval.every else None
        self.schedule = SceneSchedule(self.train.rows_by_type(), cfg.grpo.groups_per_step, cfg.grpo.schedule.warmup_steps,
                                      dict(cfg.grpo.schedule.mix), cfg.seed)
        self.step = 0
        self.policy_version = 0
        self.actors: Optional[ActorGroups] = None
        self.tracker: Optional[Tracker] = None

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
            self._sync_weights()  # every rollout worker holds the learner's weights before the first rollout
            if cfg.eval.every and self.step == 0:
                self.tracker.log(self.evaluate(), 0)  # the starting point of the eval curve
            metrics: dict = {}
            bar = tqdm(total=cfg.grpo.steps, initial=self.step, desc="GRPO", unit="step", dynamic_ncols=True)
            while self.step < cfg.grpo.steps:
                metrics = self.train_step()
                self.step += 1
                if cfg.eval.every and self.step % cfg.eval.every == 0 or self.step == cfg.grpo.steps:
                    metrics.update(self.evaluate())
                self.tracker.log(metrics, self.step)
                if self.step % max(cfg.checkpoint.every, 1) == 0 or self.step == cfg.grpo.steps:
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(reward=f"{metrics.get('reward/total', float('nan')):.3f}")
            bar.close()
            return metrics
        finally:
            if self.tracker is not None:
                self.tracker.close()
            if self.actors is not None:
                self.actors.shutdown()

    def train_step(self) -> dict:
        cfg, g = self.cfg, self.cfg.grpo
        t_step = time.perf_counter()
        groups = self.schedule.next_groups(self.step)
        requests = [
            GroupRequest(self.step, i, self.train.scene(group.row), group_seed(cfg.seed, self.step, i))
            for i, group in enumerate(groups)
        ]

        # rollout, scoring each group as soon as it is sampled
        rollouts: dict[int, GroupRollout] = {}
        handles = {}
        t0 = time.perf_counter()
        for rollout in self.actors.rollouts.sample(requests):
            if rollout.policy_version != self.policy_version:
                raise RuntimeError(f"off-policy sample: version {rollout.policy_version}, learner at {self.policy_version}")
            rollouts[rollout.group_id] = rollout
            handles[rollout.group_id] = self.actors.scorers.submit(self._score_request(requests[rollout.group_id], rollout))
        t_rollout = time.perf_counter() - t0
        order = sorted(rollouts)
        sampled = rollout_metrics([rollouts[i] for i in order], self.policy_version)
        scores: dict[int, GroupScores] = dict(zip(order, self.actors.scorers.gather([handles[i] for i in order])))
        t_scores = time.perf_counter() - t0 - t_rollout

        # advantages over each group; groups whose main reward has no spread carry no signal
        totals = [scores[i].totals for i in order]
        main = [np.array([c.get(g.main_reward, np.nan) for c in scores[i].components]) for i in order]
        advantages, kept = batch_advantages(totals, main, g.normalize_std, g.filter_no_spread,
                                            std_floor=g.advantage_std_floor)
        samples = [
            TrainingSample(requests[i].scene, s.completion, s.chain, float(a), i)
            for i, adv, keep in zip(order, advantages, kept) if keep
            for s, a in zip(rollouts[i].group.samples, adv)
        ]

        # learner update, then the new weights to the rollout workers
        t1 = time.perf_counter()
        train = {"train/skipped": 1.0}
        sync = {}
        if samples:
            train = self.actors.learner.update(samples)
            train["train/skipped"] = 0.0
            self.policy_version += 1
            sync = self._sync_weights()
        t_learner = time.perf_counter() - t1 - sync.get("sync/seconds", 0.0)

        metrics = {
            **sampled,
            **score_metrics([scores[i] for i in order]),
            **train, **sync,
            "train/groups_kept_fraction": float(np.mean(kept)) if len(kept) else 0.0,
            "rollout/worker_replacements": float(self.actors.rollouts.replacements),
            "timing/rollout_s": t_rollout, "timing/scoring_wait_s": t_scores, "timing/learner_s": t_learner,
            "timing/sync_s": sync.get("sync/seconds", 0.0), "timing/step_s": time.perf_counter() - t_step,
        }
        if cfg.logging.picture_every and (self.step + 1) % cfg.logging.picture_every == 0:
            self._picture(requests[order[0]].scene, rollouts[order[0]], scores[order[0]])
        return metrics

    # --- pieces ---------------------------------------------------------------------------------------------
    def _score_request(self, request: GroupRequest, rollout: GroupRollout) -> ScoreRequest:
        group = rollout.group
        return ScoreRequest(request.scene, group.trajectories, [s.reasoning for s in group.samples],
                            [s.mode for s in group.samples], self.cfg.policy.expert.interval_s)

    def _sync_weights(self) -> dict:
        start = time.perf_counter()
        num_bytes = self.actors.push_weights(self.policy_version)
        return {"sync/seconds": time.perf_counter() - start, "sync/bytes": float(num_bytes),
                "sync/policy_version": float(self.policy_version)}

    def evaluate(self) -> dict:
        """Deterministic plans of the current policy on the val split, scored by NAVSIM's scorer."""
        if self.val is None:
            return {}
        scenes = self.val.scenes(range(len(self.val)))
        plans = self.actors.rollouts.plan(scenes, batch_size=8)
        trajectories = [t for result in plans for t in result.trajectories]
        rows = self.actors.scorers.evaluate([(s, t[None]) for s, t in zip(scenes, trajectories)], self.cfg.eval.version,
                                            self.cfg.policy.expert.interval_s)
        return evaluation_summary(rows, self.cfg.eval.version)

    def _picture(self, scene, rollout: GroupRollout, scores: GroupScores) -> None:
        from sim.bev import save_scene_picture

        number = self.step + 1  # the step as logged (1-based)
        path = self.out_dir / "pictures" / f"step_{number:05d}.png"
        values = np.nan_to_num(scores.totals, nan=np.nanmin(scores.totals) if np.isfinite(scores.totals).any() else 0.0)
        best = int(np.nanargmax(scores.totals)) if np.isfinite(scores.totals).any() else 0
        sample = rollout.group.samples[best]
        reasoning = "".join(ch if ch.isprintable() else "?" for ch in sample.reasoning)
        text = (f"step {number}  scene {scene.token} ({scene.sample_type})\n"
                f"rewards: " + " ".join(f"{v:.2f}" for v in scores.totals) + "\n"
                f"best sample ({sample.mode}): {reasoning}\n"
                + "\n".join(f"{k}: {v:.3f}" for k, v in sorted(scores.components[best].items())))
        save_scene_picture(path, scene, plans=list(rollout.group.trajectories), plan_values=list(values), text=text)
        self.tracker.log_image("rollout/picture", path, number)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.ckpt.begin(self.step)
        self.actors.learner.save(str(path))
        CheckpointDir.save_driver_state(path, DriverState(self.step, self.policy_version, self.schedule.state_dict(),
                                                          self.cfg.seed))
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
        logger.info("resumed from %s at step %d (policy version %d)", path, self.step, self.policy_version)
        return True
