"""Supervised fine-tuning of the SpanVLA policy, through a DeepSpeed engine.

    python -m rl.sft --config configs/tiny.yaml stage=vlm    [key=value ...]
    python -m rl.sft --config configs/tiny.yaml stage=expert [key=value ...]

Stage `vlm` (spanvla.md 2.1) trains the language model on [reasoning ; action tokens] with the reasoning-sample
weighting (vision encoder frozen by option). Stage `expert` (2.2) trains the flow-matching action expert with
the VLM frozen; it starts from the stage-`vlm` policy (`sft.init`). Each stage writes `<sft.out_dir>/policy`
(the policy directory later stages load), `metrics.jsonl`, and DeepSpeed checkpoints under `ckpt/`.
Under a distributed launcher (RANK / WORLD_SIZE set), each rank trains on its share of every batch.
`sft.target` chooses what both stages imitate (trajectory and action tokens): "expert" (the default), the
ground truth; "log", each scene's logged drive (`sft_target_scenes`).
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from rl.config import TrainConfig
from rl.config_io import ConfigError, config_to_dict, load_config, save_config
from rl.scene_store import SceneStore
from rl.tracking import Tracker, setup_console_logging

logger = logging.getLogger(__name__)

SFT_TARGETS = ("expert", "log")


def sft_target_scenes(scenes: list, target: str) -> list:
    """The scenes as SFT imitates them. target "expert": unchanged (the ground truth `future`; a `rec` scene's
    `recovery_trajectory`). "log": a scene's `future` becomes its logged drive `human_trajectory` (N, 3), ego
    frame, 0.5 s apart (N = 8 on NAVSIM and in the synthetic world: 4 s), as a user imitating navtrain's logs
    does; with the world's human logs (`python -m sim.generate --human-logs`) that log holds its mistakes.
    A scene without a log keeps `future`; a `rec` scene keeps its correction."""
    if target not in SFT_TARGETS:
        raise ConfigError(f"sft.target={target!r}: expected one of {SFT_TARGETS}")
    if target == "expert":
        return list(scenes)
    return [scene.with_sample(future=np.asarray(scene.human_trajectory, dtype=np.float64))
            if scene.human_trajectory is not None and scene.sample_type != "rec" else scene for scene in scenes]


def check_log_horizon(policy, cfg: TrainConfig) -> None:
    """sft.target=log imitates 4 s logs (8 poses): the expert's horizon and the action tokens must fit in them."""
    from rl.policy.inputs import action_token_count
    from sim.conventions import LOG_INTERVAL_S, NAVSIM_PLAN_POSES

    e = policy.config.expert
    span = e.horizon * e.interval_s
    if cfg.sft.stage == "vlm" and policy.codebook is not None:
        segment = policy.codebook.segment_s
        span = max(span, action_token_count(e.horizon, e.interval_s, segment) * segment)
    if span > NAVSIM_PLAN_POSES * LOG_INTERVAL_S + 1e-9:
        raise ConfigError(f"sft.target=log: the logs cover {NAVSIM_PLAN_POSES * LOG_INTERVAL_S:g} s, the targets need "
                          f"{span:g} s (policy.expert.horizon x interval_s, or the codebook's segments): shorten the "
                          "horizon or use sft.target=expert")


def fit_normalizer(policy, cfg: TrainConfig) -> None:
    """Fit the expert's trajectory statistics on the training split's SFT targets (columns only, no images)."""
    from sim.conventions import NUM_FUTURE_FRAMES
    from sim.dataset import SceneDataset, fixed_list_to_numpy

    table = SceneDataset(cfg.data.train).read(["future", "velocity"], where={"sample_type": list(cfg.sft.sample_types)})
    policy.fit_trajectory_normalizer(futures=fixed_list_to_numpy(table["future"], (NUM_FUTURE_FRAMES, 3)),
                                     velocities=fixed_list_to_numpy(table["velocity"], (2,)))


def build_or_load_policy(cfg: TrainConfig):
    """Stage vlm: a fresh policy (or `sft.init`), its trajectory normaliser fitted on the training split.
    Stage expert: the policy of `sft.init` (the stage-vlm result); when the config's `policy.expert` differs from
    the loaded one (e.g. another KV-layer selection or `init: noise`), a new expert is built from the config."""
    from dataclasses import asdict

    from rl.policy import SpanVLAPolicy
    from rl.policy.backbone import attention_geometry
    from rl.policy.expert import ActionExpert

    s = cfg.sft
    if s.init:
        if not Path(s.init).is_dir():
            raise ConfigError(f"sft.init={s.init}: no such policy directory")
        policy = SpanVLAPolicy.load(s.init)
        if s.stage == "expert" and asdict(policy.config.expert) != asdict(cfg.policy.expert):
            logger.info("building a new action expert from policy.expert (it differs from the one in %s)", s.init)
            policy.config.expert = copy.deepcopy(cfg.policy.expert)
            policy.expert = ActionExpert(policy.config.expert, attention_geometry(policy.vlm)).to(policy.device)
            fit_normalizer(policy, cfg)
        return policy
    if s.stage == "expert":
        raise ConfigError("sft.stage=expert trains the expert on a trained VLM: set sft.init to the stage-vlm policy directory")
    if not cfg.policy.codebook.path:
        raise ConfigError("policy.codebook.path is not set: build one with `python -m rl.policy.codebook --dataset <train> --out FILE`")
    policy = SpanVLAPolicy.build(cfg.policy)
    fit_normalizer(policy, cfg)
    return policy


def sft_batch_rows(rows: np.ndarray, steps: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
    """The training-store rows of each step's batch on `rank` (yields `steps` arrays of `batch_size`): each pass
    over `rows` is a fresh permutation drawn from `seed`, split between `world` ranks; a pass's incomplete tail
    is left out."""
    rng = np.random.default_rng(seed)
    order, cursor = rng.permutation(rows), 0
    for _ in range(steps):
        if cursor + batch_size * world > len(order):
            order, cursor = rng.permutation(rows), 0
        yield order[cursor + rank * batch_size: cursor + (rank + 1) * batch_size]
        cursor += batch_size * world


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def run_sft(cfg: TrainConfig) -> Path:
    """Train one SFT stage; returns the directory of the saved policy."""
    from rl.deepspeed_engine import create_engine
    from rl.input_checks import validate_sft_inputs

    s = cfg.sft
    if s.target not in SFT_TARGETS:
        raise ConfigError(f"sft.target={s.target!r}: expected one of {SFT_TARGETS}")
    validate_sft_inputs(cfg)  # the split, sft.init or the codebook: fail before any model is built
    torch.manual_seed(cfg.seed)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = SceneStore(cfg.data.train, cache_size=cfg.data.scene_cache)
    policy = build_or_load_policy(cfg)
    if s.target == "log":
        check_log_horizon(policy, cfg)
    if s.stage == "vlm":
        policy.set_trainable(vision=not s.freeze_vision, language=True, expert=False)
        loss_fn, collate = policy.vlm_sft_loss, policy.collator("tokens")
    else:
        policy.set_trainable(vision=False, language=False, expert=True)
        loss_fn, collate = policy.expert_flow_matching_loss, policy.collator("expert")
    rows = np.array([r for r, t in enumerate(train.sample_types) if t in s.sample_types])
    if rows.size == 0:
        raise ConfigError(f"sft.sample_types={s.sample_types}: the training split {cfg.data.train} has no such scenes")
    engine = create_engine(policy, policy.parameters(), lr=s.lr, weight_decay=s.weight_decay, zero_stage=s.zero_stage,
                           micro_batch_size=s.batch_size, grad_clip=s.grad_clip, rank=rank, world_size=world,
                           lr_lambda=_lr_lambda(s.warmup_steps, s.steps))
    tracker = Tracker(out, f"sft-{s.stage}", config_to_dict(cfg), use_wandb=cfg.logging.wandb and rank == 0,
                      wandb_project=cfg.logging.wandb_project, wandb_mode=cfg.logging.wandb_mode,
                      console_every=max(s.log_every, 1))
    policy.train()
    bar = tqdm(range(s.steps), desc=f"SFT {s.stage}", unit="step", dynamic_ncols=True, disable=rank != 0)
    sums: dict[str, float] = {}
    start = time.perf_counter()
    for step, batch_rows in zip(bar, sft_batch_rows(rows, s.steps, s.batch_size, cfg.seed, rank, world)):
        batch = collate(sft_target_scenes(train.scenes(batch_rows), s.target))
        out_loss = loss_fn(batch)
        engine.backward(out_loss.loss)
        engine.step()
        for key, value in {"loss": out_loss.loss.item(), **out_loss.metrics}.items():
            sums[key] = sums.get(key, 0.0) + value
        bar.set_postfix(loss=f"{out_loss.loss.item():.4f}")
        if (step + 1) % max(s.log_every, 1) == 0 or step + 1 == s.steps:
            n = (step % max(s.log_every, 1)) + 1
            metrics = {f"sft/{k}": v / n for k, v in sums.items()}
            metrics["sft/lr"] = engine.get_lr()[0]
            metrics["timing/sft_step_s"] = (time.perf_counter() - start) / n
            tracker.log(metrics, step + 1)
            sums, start = {}, time.perf_counter()
        if s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
            engine.save_checkpoint(str(out / "ckpt"), tag=f"step_{step + 1}")
    policy.eval()
    policy_dir = out / "policy"
    if rank == 0:
        policy.save(policy_dir)
        save_config(cfg, out / "config.yaml")
    tracker.close()
    logger.info("SFT stage %s done: %s", s.stage, policy_dir)
    return policy_dir


def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file in configs/")
    parser.add_argument("overrides", nargs="*", help="key=value overrides; stage=vlm|expert is short for sft.stage")
    args = parser.parse_args(argv)
    overrides = [f"sft.{o}" if o.startswith("stage=") else o for o in args.overrides]
    return load_config(TrainConfig, args.config, overrides)


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status: 0 done, 2 a bad config or input (a missing codebook, a damaged sft.init, a bad dataset)."""
    from rl.policy.policy_dir import CheckpointError
    from rl.policy.codebook import CodebookError
    from rl.policy.config import PolicyConfigError
    from sim.dataset import DatasetError

    setup_console_logging()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    try:
        cfg = parse_args(argv)
        run_sft(cfg)
    except (ConfigError, DatasetError, CheckpointError, CodebookError, PolicyConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
