"""Asynchronous rollouts (`grpo.max_staleness: 1`) on CPU: a real local Ray, real DeepSpeed (gloo), the tiny
policy; plus the pure pieces (version bound, phase timer, the driver's input checks) without Ray.

Runs here are small (2 groups x 4 samples, one optimizer step per batch, so the logged ratio is the first
update's): the next step is sampled during the learner update, one policy version behind, and a checkpoint
keeps it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file

from rl.config import TrainConfig
from rl.config_io import ConfigError, load_config
from rl.driver import GRPODriver, version_metrics
from rl.input_checks import InputError
from rl.tracking import PhaseTimer, read_metrics


def _overrides(assets, out_dir: Path, **extra) -> list[str]:
    base = {
        "policy_init": assets["policy"], "data.train": assets["train"], "data.val": assets["val"],
        "policy.codebook.path": assets["codebook"],
        "grpo.steps": 3, "grpo.groups_per_step": 2, "grpo.group_size": 4, "grpo.schedule.warmup_steps": 0,
        "grpo.lr": 1e-3, "grpo.micro_batch_size": 8, "grpo.updates_per_step": 1, "grpo.max_staleness": 1,
        "logging.out_dir": out_dir, "logging.wandb": False, "logging.picture_every": 0,
        "eval.every": 0, "checkpoint.every": 2, "checkpoint.keep_last": 5,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _config(assets, out_dir: Path, **extra) -> TrainConfig:
    return load_config(TrainConfig, "configs/tiny.yaml", _overrides(assets, out_dir, **extra))


def _run(assets, out_dir: Path, **extra) -> dict[int, dict]:
    """Runs the driver; returns the logged step records by step."""
    GRPODriver(_config(assets, out_dir, **extra)).run()
    return {r["step"]: r for r in read_metrics(out_dir / "metrics.jsonl") if "rollout/num_groups" in r}


def _weights(out_dir: Path, step: int) -> dict[str, np.ndarray]:
    return load_file(str(out_dir / "ckpt" / f"step_{step}" / "policy" / "expert.safetensors"))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# Everything a step computed from its samples and its update (not timings, not the wall clock).
_RESULT_KEYS = ("reward/total", "reward/pdms", "train/flow_ratio_mean", "train/flow_clip_fraction",
                "train/flow_policy_loss", "train/grad_norm", "rollout/trajectory_spread_m", "rollout/staleness_max",
                "rollout/policy_version_min", "rollout/prefetched", "sync/policy_version")


def _assert_same_step(ours: dict, theirs: dict) -> None:
    for key in _RESULT_KEYS:
        assert ours[key] == theirs[key], key


@pytest.fixture(scope="module")
def async_run(ray_cluster, tiny_grpo_assets, tmp_path_factory):
    """An uninterrupted asynchronous 3-step run, checkpoints after steps 2 and 3."""
    out = tmp_path_factory.mktemp("async")
    return out, _run(tiny_grpo_assets, out)


# --- the asynchronous loop ----------------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.slow
def test_async_mode_samples_the_next_step_during_the_update_one_version_behind_and_keeps_the_sampled_logprobs(
        async_run):
    _, steps = async_run
    assert sorted(steps) == [1, 2, 3]
    one, two, three = steps[1], steps[2], steps[3]
    for r in steps.values():
        assert r["train/skipped"] == 0.0 and r["rollout/num_samples"] == 8
        assert r["rollout/policy_version_min"] == r["rollout/policy_version_max"]  # one version per step
        assert 0 <= r["rollout/staleness_max"] <= 1  # the bound
        assert r["sync/policy_version"] == r["step"]
    # step 1: sampled after the first push, on-policy: the first update's ratio is exactly 1, nothing clipped
    assert (one["rollout/prefetched"], one["rollout/policy_version_min"], one["rollout/staleness_max"]) == (0, 0, 0)
    assert one["train/flow_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert one["train/flow_clip_fraction"] == 0.0
    # step 2: sampled during update 1 with version 0 while the learner is at version 1. Its ratio is not 1: the
    # old log-probs are those recorded by version 0 at sampling, not a recomputation under the learner's weights
    assert (two["rollout/prefetched"], two["rollout/policy_version_min"], two["rollout/staleness_max"]) == (1, 0, 1)
    assert abs(two["train/flow_ratio_mean"] - 1.0) > 1e-4
    assert two["timing/prefetched_rollout_s"] > 0 and two["timing/rollout_s"] == 0.0
    # step 3 follows the checkpoint of step 2 and is sampled ahead all the same, with version 1
    assert (three["rollout/prefetched"], three["rollout/policy_version_min"], three["rollout/staleness_max"]) == (1, 1, 1)
    assert abs(three["train/flow_ratio_mean"] - 1.0) > 1e-4


@pytest.mark.ray
@pytest.mark.slow
def test_checkpoints_do_not_change_what_an_async_run_samples_or_trains(async_run, tiny_grpo_assets, tmp_path):
    """A checkpoint after every step against one after steps 2 and 3: the same samples, updates and weights."""
    ref_out, ref_steps = async_run
    every = _run(tiny_grpo_assets, tmp_path / "every", **{"checkpoint.every": 1})
    assert [every[s]["rollout/prefetched"] for s in (1, 2, 3)] == [0, 1, 1]
    for step in (1, 2, 3):
        _assert_same_step(every[step], ref_steps[step])
    _assert_same_weights(_weights(tmp_path / "every", 3), _weights(ref_out, 3))


def _died_after_step_2(ref_out: Path, out: Path) -> None:
    """`out` as a job that died right after writing step 2's checkpoint leaves it."""
    (out / "ckpt").mkdir(parents=True)
    shutil.copytree(ref_out / "ckpt" / "step_2", out / "ckpt" / "step_2")
    (out / "ckpt" / "latest").write_text("step_2\n")


@pytest.mark.ray
@pytest.mark.slow
def test_an_async_run_resumed_from_its_checkpoint_trains_the_kept_step_as_the_uninterrupted_run(async_run,
                                                                                                 tiny_grpo_assets,
                                                                                                 tmp_path):
    ref_out, ref_steps = async_run
    assert (ref_out / "ckpt" / "step_2" / "sampled_ahead.pkl").is_file()  # step 3, sampled during update 2
    assert not (ref_out / "ckpt" / "step_3" / "sampled_ahead.pkl").exists()  # the last step samples nothing ahead
    out = tmp_path / "resumed"
    _died_after_step_2(ref_out, out)
    steps = _run(tiny_grpo_assets, out)  # resubmitted: resumes at step 3 on the kept samples
    assert sorted(steps) == [3]
    _assert_same_step(steps[3], ref_steps[3])
    assert steps[3]["rollout/prefetched"] == 1 and steps[3]["rollout/staleness_max"] == 1
    _assert_same_weights(_weights(out, 3), _weights(ref_out, 3))
    ours = json.loads((out / "ckpt" / "step_3" / "driver.json").read_text())
    theirs = json.loads((ref_out / "ckpt" / "step_3" / "driver.json").read_text())
    assert ours == theirs


@pytest.mark.ray
@pytest.mark.slow
def test_a_synchronous_resume_of_an_async_checkpoint_samples_the_kept_groups_again_on_policy(async_run,
                                                                                             tiny_grpo_assets, tmp_path):
    ref_out, ref_steps = async_run
    out = tmp_path / "resumed_sync"
    _died_after_step_2(ref_out, out)
    steps = _run(tiny_grpo_assets, out, **{"grpo.max_staleness": 0})
    three = steps[3]
    # the kept groups drawn again with version 2: on-policy (ratio 1); the data position is the uninterrupted run's
    assert (three["rollout/prefetched"], three["rollout/policy_version_min"], three["rollout/staleness_max"]) == (0, 2, 0)
    assert three["train/flow_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert three["reward/total"] != ref_steps[3]["reward/total"]
    ours = json.loads((out / "ckpt" / "step_3" / "driver.json").read_text())
    theirs = json.loads((ref_out / "ckpt" / "step_3" / "driver.json").read_text())
    assert ours == theirs


def test_a_damaged_kept_step_is_a_checkpoint_error_naming_the_file(tmp_path):
    from rl.checkpoint import CheckpointDir, CheckpointError

    (tmp_path / "sampled_ahead.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"sampled_ahead.pkl: cannot read the step sampled ahead"):
        CheckpointDir.load_sampled_ahead(tmp_path)
    assert CheckpointDir.load_sampled_ahead(tmp_path / "none") is None


@pytest.mark.ray
def test_the_rollout_pool_refuses_a_weight_push_while_a_step_is_being_sampled(ray_cluster, tiny_grpo_assets):
    import ray

    from actors.rollout import GroupRequest, RolloutPool, RolloutWorker, group_seed
    from rl.config import RolloutConfig
    from rl.scene_store import SceneStore

    worker_cls = ray.remote(max_restarts=0)(RolloutWorker)
    pool = RolloutPool(lambda rank: worker_cls.options(num_cpus=1).remote(rank, str(tiny_grpo_assets["policy"]),
                                                                          RolloutConfig(group_reasoning="greedy"), 2), 1)
    try:
        store = SceneStore(tiny_grpo_assets["train"])
        requests = [GroupRequest(0, i, store.scene(i), group_seed(0, 0, i)) for i in range(3)]
        stream = pool.sample(requests)
        first = next(stream)
        with pytest.raises(RuntimeError, match=r"weights pushed to the rollout workers while groups are being sampled"):
            pool.load_weights(None)
        rest = list(stream)  # the refused push changed nothing: the step completes on version 0
        assert sorted(r.group_id for r in [first, *rest]) == [0, 1, 2]
        assert {r.policy_version for r in [first, *rest]} == {0}
        assert pool._open_streams == 0
    finally:
        pool.shutdown()


# --- the pieces -----------------------------------------------------------------------------------------------

def _rollouts(*versions: int) -> list:
    return [SimpleNamespace(policy_version=v) for v in versions]


def test_version_metrics_report_the_sampled_versions_and_the_staleness():
    assert version_metrics(_rollouts(3, 3), 4, 1) == {
        "rollout/policy_version_min": 3.0, "rollout/policy_version_max": 3.0, "rollout/staleness_max": 1.0}
    assert version_metrics(_rollouts(4), 4, 0)["rollout/staleness_max"] == 0.0


def test_version_metrics_refuse_staleness_above_the_bound_and_mixed_versions():
    with pytest.raises(RuntimeError, match=r"staleness 1 is outside \[0, grpo.max_staleness=0\]"):
        version_metrics(_rollouts(2, 2), 3, 0)
    with pytest.raises(RuntimeError, match=r"staleness 2 is outside \[0, grpo.max_staleness=1\]"):
        version_metrics(_rollouts(1), 3, 1)
    with pytest.raises(RuntimeError, match=r"policy versions \[2, 3\]: a step's samples must all come from one"):
        version_metrics(_rollouts(3, 2, 3), 3, 1)


def test_max_staleness_above_one_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"grpo.max_staleness=2: expected 0 \(synchronous\) or 1"):
        load_config(TrainConfig, "configs/tiny.yaml", ["grpo.max_staleness=2"])
    assert TrainConfig().grpo.max_staleness == 0  # the schema's default is the synchronous loop
    assert load_config(TrainConfig, "configs/tiny.yaml", []).grpo.max_staleness == 1  # the demo overlaps them


def test_phase_timer_adds_up_phases_and_reports_missing_ones_as_zero():
    timer = PhaseTimer()
    with timer("learner"):
        pass
    timer.record("learner", 2.0)
    timer.record("sync", 0.5)
    out = timer.metrics(("rollout", "learner"))
    assert out["timing/rollout_s"] == 0.0
    assert 2.0 <= out["timing/learner_s"] < 2.5 and out["timing/sync_s"] == 0.5
    assert set(out) == {"timing/rollout_s", "timing/learner_s", "timing/sync_s", "timing/step_s"}


def test_the_driver_checks_its_inputs_before_starting_anything(tiny_grpo_assets, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"^policy_init=.*nothere: no such policy directory"):
        GRPODriver(_config(tiny_grpo_assets, out, policy_init=tmp_path / "nothere"))
    with pytest.raises(InputError, match=r"^data.train=.*missing"):
        GRPODriver(_config(tiny_grpo_assets, out, **{"data.train": tmp_path / "missing"}))
    assert not out.exists()  # nothing written, no tracker, no actors
