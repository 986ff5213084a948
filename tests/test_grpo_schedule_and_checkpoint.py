"""The GRPO data schedule (warm-up, mix, resumable cursors) and the checkpoint folder's contract."""
import numpy as np
import pytest

from rl.checkpoint import CheckpointDir, CheckpointError, DriverState
from rl.data_schedule import SceneSchedule

ROWS = {"pos": np.arange(0, 20), "neg": np.arange(100, 110), "rec": np.arange(200, 205)}


def test_warmup_draws_positives_only_then_the_mix():
    schedule = SceneSchedule(ROWS, groups_per_step=8, warmup_steps=2, mix={"pos": 0.5, "neg": 0.375, "rec": 0.125}, seed=0)
    for step in range(2):
        assert {g.sample_type for g in schedule.next_groups(step)} == {"pos"}
    types = [g.sample_type for g in schedule.next_groups(2)]
    assert (types.count("pos"), types.count("neg"), types.count("rec")) == (4, 3, 1)
    rows = [g.row for g in schedule.next_groups(3) if g.sample_type == "neg"]
    assert all(100 <= r < 110 for r in rows)


def test_each_type_is_visited_once_per_pass_before_repeating():
    schedule = SceneSchedule(ROWS, groups_per_step=5, warmup_steps=100, mix={"pos": 1.0}, seed=3)
    first_pass = [g.row for step in range(4) for g in schedule.next_groups(step)]
    assert sorted(first_pass) == list(range(20))


def test_a_restored_schedule_continues_like_an_uninterrupted_one():
    mix = {"pos": 0.5, "neg": 0.3, "rec": 0.2}
    uninterrupted = SceneSchedule(ROWS, 6, 1, mix, seed=7)
    expected = [uninterrupted.next_groups(s) for s in range(5)]
    first = SceneSchedule(ROWS, 6, 1, mix, seed=7)
    _ = [first.next_groups(s) for s in range(3)]
    resumed = SceneSchedule(ROWS, 6, 1, mix, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.next_groups(s) for s in range(3, 5)] == expected[3:]
    with pytest.raises(ValueError, match="seed"):
        SceneSchedule(ROWS, 6, 1, mix, seed=8).load_state_dict(first.state_dict())


def test_schedule_rejects_unknown_types_and_missing_positives():
    with pytest.raises(ValueError, match="unknown sample types"):
        SceneSchedule(ROWS, 4, 0, {"pos": 1, "bad": 1}, 0)
    with pytest.raises(ValueError, match="no positive"):
        SceneSchedule({"neg": np.arange(3)}, 4, 0, {"neg": 1}, 0)


def test_checkpoint_latest_marker_is_written_last_and_old_steps_pruned(tmp_path):
    ckpt = CheckpointDir(tmp_path)
    assert ckpt.latest() is None
    for step in (1, 2, 3):
        path = ckpt.begin(step)
        CheckpointDir.save_driver_state(path, DriverState(step, step, {"cursor": {}}, seed=0))
        ckpt.commit(step, keep_last=2)
    assert ckpt.steps() == [2, 3]
    assert ckpt.latest() == tmp_path / "step_3"
    ckpt.begin(4)  # a job that dies here leaves step_4 incomplete: latest still names step_3
    assert ckpt.latest() == tmp_path / "step_3"
    assert CheckpointDir.load_driver_state(ckpt.latest()).policy_version == 3
    with pytest.raises(CheckpointError, match="driver.json"):
        CheckpointDir.load_driver_state(tmp_path / "step_4")



def test_latest_step_reads_the_marker_and_a_foreign_driver_state_names_its_fields(tmp_path):
    ckpt = CheckpointDir(tmp_path)
    assert ckpt.latest_step() == 0
    path = ckpt.begin(7)
    CheckpointDir.save_driver_state(path, DriverState(7, 7, {"cursor": {}}, seed=3))
    ckpt.commit(7)
    assert ckpt.latest_step() == 7
    assert CheckpointDir.load_driver_state(path).seed == 3
    (path / "driver.json").write_text('{"step": 7, "policy_version": 7, "schedule": {}, "rng": {}}')
    with pytest.raises(CheckpointError, match=r"driver.json: expected the fields .*'seed'.*found .*'rng'"):
        CheckpointDir.load_driver_state(path)
