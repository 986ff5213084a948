"""A GRPO run with drawn paces (`rollout.pace_std`) resumed from its checkpoint is the uninterrupted run: the pace
head, its optimizer group and its draws come back exactly (a real local Ray, DeepSpeed on CPU, the tiny policy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rl.config import TrainConfig
from rl.config_io import load_config
from rl.driver import GRPODriver
from rl.tracking import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_KEYS = ("reward/total", "reward/pdms", "train/flow_ratio_mean", "train/flow_policy_loss", "train/grad_norm",
         "rollout/pace_log_speed", "rollout/pace_scene_std")


def _run(assets, out_dir: Path, steps: int) -> dict[int, dict]:
    settings = {
        "policy_init": assets["policy"], "data.train": assets["train"], "data.val": assets["val"],
        "policy.codebook.path": assets["codebook"],
        "grpo.steps": steps, "grpo.groups_per_step": 2, "grpo.group_size": 4, "grpo.schedule.warmup_steps": 0,
        "grpo.lr": 1e-3, "grpo.micro_batch_size": 8, "grpo.updates_per_step": 2, "grpo.max_staleness": 0,
        "grpo.pace_lr": 0.05, "rollout.pace_std": 0.4,
        "logging.out_dir": out_dir, "logging.wandb": False, "logging.picture_every": 0,
        "eval.every": 0, "checkpoint.every": 1, "checkpoint.keep_last": 5,
    }
    GRPODriver(load_config(TrainConfig, "configs/tiny.yaml", [f"{k}={v}" for k, v in settings.items()])).run()
    return {r["step"]: r for r in read_metrics(out_dir / "metrics.jsonl") if "rollout/num_groups" in r}


def test_a_paced_run_resumed_from_its_checkpoint_matches_the_uninterrupted_run(ray_cluster, tiny_grpo_assets,
                                                                              tmp_path):
    whole = _run(tiny_grpo_assets, tmp_path / "whole", 2)
    _run(tiny_grpo_assets, tmp_path / "resumed", 1)  # the job "dies" after step 1's checkpoint
    resumed = _run(tiny_grpo_assets, tmp_path / "resumed", 2)
    assert sorted(resumed) == [1, 2]
    for step in (1, 2):
        for key in _KEYS:
            assert resumed[step][key] == whole[step][key], (step, key)
    ours = load_file(str(tmp_path / "resumed" / "ckpt" / "step_2" / "policy" / "expert.safetensors"))
    theirs = load_file(str(tmp_path / "whole" / "ckpt" / "step_2" / "policy" / "expert.safetensors"))
    assert ours.keys() == theirs.keys() and "pace_head.2.bias" in ours
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert ours["pace_head.2.bias"][0] != 0.0  # the head trained
