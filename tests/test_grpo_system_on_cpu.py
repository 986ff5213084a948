"""The Ray-distributed GRPO system end to end on CPU: a real local Ray, real DeepSpeed (gloo), the tiny policy.

Every run here is a `GRPODriver` over real actors: a DeepSpeed learner, rollout workers and scorer workers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rl.checkpoint import CheckpointDir
from rl.config import TrainConfig
from rl.config_io import load_config
from rl.driver import GRPODriver
from rl.tracking import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def overrides(assets, out_dir: Path, **extra) -> list[str]:
    base = {
        "policy_init": assets["policy"], "data.train": assets["train"], "data.val": assets["val"],
        "policy.codebook.path": assets["codebook"],
        "grpo.steps": 2, "grpo.groups_per_step": 4, "grpo.group_size": 4, "grpo.schedule.warmup_steps": 0,
        "grpo.lr": 1e-3, "grpo.micro_batch_size": 8, "grpo.max_staleness": 0,  # the synchronous loop
        "logging.out_dir": out_dir, "logging.wandb": False, "logging.picture_every": 0,
        "eval.every": 0, "checkpoint.every": 1, "checkpoint.keep_last": 5,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run(assets, out_dir: Path, **extra):
    cfg = load_config(TrainConfig, "configs/tiny.yaml", overrides(assets, out_dir, **extra))
    last = GRPODriver(cfg).run()
    return last, read_metrics(out_dir / "metrics.jsonl")


def expert_weights(out_dir: Path, step: int) -> dict[str, np.ndarray]:
    return load_file(str(out_dir / "ckpt" / f"step_{step}" / "policy" / "expert.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_two_step_run_with_negative_and_recovery_samples_trains_logs_and_checkpoints(ray_cluster, tiny_grpo_assets, tmp_path):
    out = tmp_path / "run"
    _, records = run(tiny_grpo_assets, out, **{"eval.every": 2, "eval.num_scenes": 4, "logging.picture_every": 2,
                                               "logging.wandb": True})
    steps = [r for r in records if "rollout/num_groups" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert sum(r["rollout/groups_neg"] for r in steps) > 0 and sum(r["rollout/groups_rec"] for r in steps) > 0
    for r in steps:
        assert r["rollout/num_samples"] == 16
        assert r["rollout/staleness_max"] == 0
        assert 0.0 <= r["reward/pdms"] <= 1.0
        assert "reward/negative_l2" in r and "reward/recovery_l2" in r and "reward/cot_length" in r
        assert r["sync/policy_version"] == r["step"] - r.get("train/skipped", 0)
        for key in ("timing/rollout_s", "timing/learner_s", "timing/sync_s", "train/grad_norm"):
            assert key in r
    from rl.scene_store import SceneStore

    val_positives = len(SceneStore(tiny_grpo_assets["val"], where={"sample_type": "pos"}))
    assert "eval/PDMS" in steps[-1] and steps[-1]["eval/num_scenes"] == val_positives
    assert (out / "pictures" / "step_00002.png").is_file()
    assert CheckpointDir(out / "ckpt").latest() == out / "ckpt" / "step_2"
    state = json.loads((out / "ckpt" / "step_2" / "driver.json").read_text())
    assert state["step"] == 2 and state["policy_version"] == steps[-1]["sync/policy_version"]
    before = load_file(str(Path(tiny_grpo_assets["policy"]) / "expert.safetensors"))
    after = expert_weights(out, 2)
    assert any(not np.array_equal(before[k], after[k]) for k in before), "GRPO did not change the expert"
    from rl.policy import SpanVLAPolicy

    SpanVLAPolicy.load(out / "ckpt" / "step_2" / "policy")  # the exported policy loads


@pytest.fixture(scope="module")
def reference_run(ray_cluster, tiny_grpo_assets, tmp_path_factory):
    """One uninterrupted 3-step run with one rollout worker: what the other runs must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    _, records = run(tiny_grpo_assets, out, **{"grpo.steps": 3})
    return out, records


def _rewards(records, step):
    return next(r for r in records if r["step"] == step and "reward/total" in r)["reward/total"]


def test_one_and_two_rollout_workers_give_identical_results(reference_run, tiny_grpo_assets, tmp_path):
    ref_out, ref_records = reference_run
    out = tmp_path / "two_workers"
    _, records = run(tiny_grpo_assets, out, **{"grpo.steps": 2, "rollout.num_workers": 2})
    for step in (1, 2):
        assert _rewards(records, step) == _rewards(ref_records, step)
    assert_same_weights(expert_weights(out, 2), expert_weights(ref_out, 2))


def test_a_rollout_worker_killed_mid_step_is_replaced_and_the_step_completes_with_the_same_groups(
        reference_run, tiny_grpo_assets, tmp_path):
    ref_out, ref_records = reference_run
    out = tmp_path / "killed"
    _, records = run(tiny_grpo_assets, out, **{"grpo.steps": 2, "rollout.num_workers": 2,
                                               "debug.kill_rollout_worker_at_step": 1, "debug.kill_rollout_worker_rank": 0})
    assert (out / "faults" / "killed_rollout_0_step_1").is_file()
    step2 = next(r for r in records if r["step"] == 2 and "rollout/num_groups" in r)
    assert step2["rollout/worker_replacements"] == 1
    assert step2["rollout/num_samples"] == 16
    assert _rewards(records, 2) == _rewards(ref_records, 2)
    assert_same_weights(expert_weights(out, 2), expert_weights(ref_out, 2))


def test_a_resubmitted_job_resumes_at_the_right_step_with_identical_weights_and_data(reference_run, tiny_grpo_assets, tmp_path):
    ref_out, ref_records = reference_run
    out = tmp_path / "resumed"
    run(tiny_grpo_assets, out, **{"grpo.steps": 2})  # the job "dies" after step 2's checkpoint
    _, records = run(tiny_grpo_assets, out, **{"grpo.steps": 3})  # resubmitted with the same config
    resumed_steps = [r["step"] for r in records if "rollout/num_groups" in r]
    assert resumed_steps == [1, 2, 3]  # steps 1-2 from the first job, 3 after resuming (JSONL appended)
    assert _rewards(records, 3) == _rewards(ref_records, 3)
    assert_same_weights(expert_weights(out, 3), expert_weights(ref_out, 3))
    ours = json.loads((out / "ckpt" / "step_3" / "driver.json").read_text())
    theirs = json.loads((ref_out / "ckpt" / "step_3" / "driver.json").read_text())
    assert ours["schedule"] == theirs["schedule"] and ours["policy_version"] == theirs["policy_version"]


def test_a_failing_reward_plugin_makes_samples_unscorable_and_counts_them(ray_cluster, tiny_grpo_assets, tmp_path):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(
        "def flaky(batch):\n"
        "    return [None if i % 2 else {'reward': 0.0} for i, _ in enumerate(batch)]\n"
    )
    rewards = f"[{{name: pdms, weight: 1.0}}, {{name: '{plugin}:flaky', weight: 1.0}}]"
    _, records = run(tiny_grpo_assets, tmp_path / "flaky_run", **{"grpo.steps": 1, "scorer.rewards": rewards})
    step = next(r for r in records if "rollout/num_groups" in r)
    assert step["reward/unscorable"] == 8 and step["reward/unscorable_fraction"] == 0.5
    assert step["reward/unscorable/flaky"] == 8  # the failing term is named
    assert step["train/skipped"] == 0.0  # the scorable half still trains
    assert step["train/groups_dropped/unscorable"] == 0  # 2 scorable samples a group are enough to compare


def test_a_reward_that_always_fails_updates_nothing_and_stops_the_run_naming_it(ray_cluster, tiny_grpo_assets, tmp_path,
                                                                                 capsys):
    from rl.train import main

    plugin = tmp_path / "broken.py"
    plugin.write_text("def broken(batch):\n    return [None for _ in batch]\n")
    rewards = f"[{{name: pdms, weight: 1.0}}, {{name: '{plugin}:broken', weight: 1.0}}]"
    out = tmp_path / "broken_run"
    code = main(["--config", "configs/tiny.yaml",
                 *overrides(tiny_grpo_assets, out, **{"grpo.steps": 3, "scorer.rewards": rewards,
                                                      "scorer.unscorable_window_steps": 2})])
    assert code == 3
    err = capsys.readouterr().err
    assert "error: 32 of 32 samples (share 1.000) were unscorable over steps 1-2" in err
    assert "above scorer.max_unscorable_share=0.2; failing reward terms: broken (32 samples, e.g. 'returned None" in err
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "rollout/num_groups" in r]
    assert [r["step"] for r in steps] == [1, 2]  # step 2 was logged before the stop; step 3 never ran
    for r in steps:
        assert r["train/skipped"] == 1.0
        assert r["train/groups_dropped/unscorable"] == 4 and r["train/groups_dropped/near_tie"] == 0
        assert r["reward/unscorable/broken"] == 16
        assert "train/grad_norm" not in r and "sync/policy_version" not in r  # no learner call, no weight sync
    state = json.loads((out / "ckpt" / "step_1" / "driver.json").read_text())
    assert state["step"] == 1 and state["policy_version"] == 0
    initial = load_file(str(Path(tiny_grpo_assets["policy"]) / "expert.safetensors"))
    saved = expert_weights(out, 1)
    # the starting policy had no pace head: the run's new one is saved as initialised (drive the plan as it is)
    head = {k: saved.pop(k) for k in list(saved) if k.startswith("pace_head.")}
    assert head and not head["pace_head.2.weight"].any() and not head["pace_head.2.bias"].any()
    assert_same_weights(saved, initial)
    assert not (out / "ckpt" / "step_2").exists()
