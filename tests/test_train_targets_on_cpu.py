"""What each `grpo.train_target` trains, seen in the policy a whole GRPO run exports (a real local Ray, DeepSpeed
on CPU, the tiny policy; one step of 3 updates): every tensor of the exported policy is compared with the
starting policy's.

- vlm with LoRA (adapters on the language model's q/k/v/o projections): the merged export differs from the
  start exactly in those projection weights, each by a matrix of rank <= r (what adapters B A can add); the
  vision tower, the rest of the language model and the flow expert are unchanged;
- joint: the language model and the expert change, the vision tower (always frozen) does not;
- expert: only the expert changes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rl.config import TrainConfig
from rl.config_io import load_config
from rl.driver import GRPODriver
from rl.policy import SpanVLAPolicy
from rl.tracking import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LORA_RANK = 4
# Names as the exported VLM stores them: the language model's layers "...layers.<i>...", the vision tower "visual...".
ATTENTION = re.compile(r"(.*\.)?layers\.\d+\.self_attn\.(q|k|v|o)_proj\.weight")


def run_one_step(assets, out_dir: Path, **extra) -> dict:
    settings = {
        "policy_init": assets["policy"], "data.train": assets["train"], "data.val": assets["val"],
        "policy.codebook.path": assets["codebook"],
        "grpo.steps": 1, "grpo.groups_per_step": 4, "grpo.group_size": 4, "grpo.schedule.warmup_steps": 0,
        "grpo.lr": 1e-3, "grpo.micro_batch_size": 8, "eval.every": 0, "eval.num_scenes": 2,
        "logging.out_dir": out_dir, "logging.wandb": False, "logging.picture_every": 0, "checkpoint.every": 1,
        "rollout.pace_std": 0.0,  # the tensors each target trains, without the pace head (its own test below)
        **extra,
    }
    cfg = load_config(TrainConfig, "configs/tiny.yaml", [f"{k}={v}" for k, v in settings.items()])
    GRPODriver(cfg).run()
    return next(r for r in read_metrics(out_dir / "metrics.jsonl") if "rollout/num_groups" in r)


def policy_tensors(policy_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(VLM tensors, expert tensors) of a saved policy directory."""
    vlm: dict[str, np.ndarray] = {}
    for file in sorted((policy_dir / "vlm").glob("*.safetensors")):
        vlm.update(load_file(str(file)))
    return vlm, load_file(str(policy_dir / "expert.safetensors"))


def changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not np.array_equal(before[k], after[k])}


def layer_of(name: str) -> int:
    return int(re.search(r"(?:^|\.)layers\.(\d+)\.", name).group(1))


@pytest.fixture(scope="module")
def start(tiny_grpo_assets):
    return policy_tensors(Path(tiny_grpo_assets["policy"]))


def test_vlm_with_lora_changes_only_the_adapted_projections_by_low_rank_matrices(ray_cluster, tiny_grpo_assets,
                                                                                tmp_path, start):
    out = tmp_path / "vlm_lora"
    step = run_one_step(tiny_grpo_assets, out, **{
        "grpo.train_target": "vlm", "rollout.action_source": "tokens", "learner.lora.enabled": True,
        "learner.lora.r": LORA_RANK, "learner.reference": "adapters_off"})
    assert step["train/skipped"] == 0.0 and step["train/grad_norm"] > 0
    vlm_before, expert_before = start
    vlm_after, expert_after = policy_tensors(out / "ckpt" / "step_1" / "policy")
    assert not any(".lora_" in k for k in vlm_after)  # the export is a plain policy (adapters merged)
    assert changed(expert_before, expert_after) == set()
    moved = changed(vlm_before, vlm_after)
    projections = {k for k in vlm_before if ATTENTION.fullmatch(k)}
    assert moved == projections  # every adapted weight of every layer, nothing else (no bias, no MLP, no vision)
    assert len({layer_of(k) for k in projections}) > 1
    for name in sorted(moved):
        delta = vlm_after[name].astype(np.float64) - vlm_before[name].astype(np.float64)
        s = np.linalg.svd(delta, compute_uv=False)
        assert s[0] > 0 and s[LORA_RANK] < 1e-4 * s[0], (name, s[:LORA_RANK + 2])
    # only the adapters travel to the rollout workers: A (r, in) and B (out, r) of each projection, fp32
    adapter_bytes = sum(4 * LORA_RANK * sum(vlm_before[k].shape) for k in projections)
    assert step["sync/bytes"] == adapter_bytes
    assert "train/token_policy_loss" in step and "train/flow_policy_loss" not in step
    SpanVLAPolicy.load(out / "ckpt" / "step_1" / "policy")  # the merged export loads as a plain policy


def test_joint_changes_the_language_model_and_the_expert_but_not_the_vision_tower(ray_cluster, tiny_grpo_assets,
                                                                                  tmp_path, start):
    out = tmp_path / "joint"
    step = run_one_step(tiny_grpo_assets, out, **{"grpo.train_target": "joint", "grpo.kl_estimator": "k1"})
    assert step["train/skipped"] == 0.0 and step["train/grad_norm"] > 0
    assert "train/token_policy_loss" in step and "train/flow_policy_loss" in step
    vlm_before, expert_before = start
    vlm_after, expert_after = policy_tensors(out / "ckpt" / "step_1" / "policy")
    moved = changed(vlm_before, vlm_after)
    vision = {k for k in vlm_before if k.startswith("visual.") or ".visual." in k}
    assert vision and not moved & vision
    layers = {k for k in vlm_before if k not in vision and re.search(r"(?:^|\.)layers\.\d+\.", k)}
    assert {layer_of(k) for k in moved & layers} == {layer_of(k) for k in layers}  # every language layer trains
    assert {k for k in moved if ATTENTION.fullmatch(k)} == {k for k in vlm_before if ATTENTION.fullmatch(k)}
    assert any(".mlp." in k for k in moved)  # the whole language model trains, not only its attention
    expert_moved = changed(expert_before, expert_after)
    assert expert_moved and all(not np.allclose(expert_before[k], expert_after[k], atol=1e-6) for k in expert_moved)


def test_expert_changes_only_the_expert(ray_cluster, tiny_grpo_assets, tmp_path, start):
    out = tmp_path / "expert"
    step = run_one_step(tiny_grpo_assets, out, **{"grpo.train_target": "expert"})
    assert step["train/skipped"] == 0.0 and step["train/grad_norm"] > 0
    assert "train/flow_policy_loss" in step and "train/token_policy_loss" not in step
    vlm_before, expert_before = start
    vlm_after, expert_after = policy_tensors(out / "ckpt" / "step_1" / "policy")
    assert changed(vlm_before, vlm_after) == set()
    assert changed(expert_before, expert_after)


def test_a_drawn_pace_trains_the_pace_head_at_its_own_rate_and_is_saved(ray_cluster, tiny_grpo_assets, tmp_path,
                                                                         start):
    out = tmp_path / "pace"
    step = run_one_step(tiny_grpo_assets, out, **{"grpo.train_target": "expert", "rollout.pace_std": 0.3,
                                                  "grpo.pace_lr": 0.05})
    assert step["train/skipped"] == 0.0 and "rollout/pace_log_speed" in step and step["rollout/pace_scene_std"] > 0
    _, expert_before = start
    _, expert_after = policy_tensors(out / "ckpt" / "step_1" / "policy")
    head = {k for k in expert_after if k.startswith("pace_head.")}
    assert head and set(expert_after) - head == set(expert_before)
    # The new head's output layer starts at zero; 3 AdamW updates at lr 0.05 move its bias by about 0.05 each,
    # where grpo.lr (1e-3 here) would move it by about 1e-3.
    assert 0.02 < abs(float(expert_after["pace_head.2.bias"][0])) <= 0.15 + 1e-6
    policy = SpanVLAPolicy.load(out / "ckpt" / "step_1" / "policy")
    assert policy.config.expert.pace and policy.expert.pace_head is not None
