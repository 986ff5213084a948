"""`benchmarks/plan_shift.py`'s statistics: a common offset of every plan against scene-specific moves."""
from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture
def plan_shift(load_benchmark):
    return load_benchmark("plan_shift")


def _plans(scenes: int = 4, poses: int = 8) -> np.ndarray:
    x = np.linspace(1.0, 8.0, poses)
    return np.stack([np.stack([x * (1 + 0.1 * s), np.zeros(poses), np.zeros(poses)], -1) for s in range(scenes)])


def test_a_common_offset_of_every_plan_is_all_common_share_and_no_residual(plan_shift):
    reference = _plans()
    other = reference.copy()
    other[..., 0] -= 1.5  # every plan 1.5 m shorter: a scene-blind bias
    stats = plan_shift.shift_statistics(reference, other)
    assert stats["scenes"] == 4 and stats["ade"] == pytest.approx(1.5)
    assert (stats["final_dx_mean"], stats["final_dx_std"]) == (pytest.approx(-1.5), pytest.approx(0.0, abs=1e-12))
    assert stats["common_share"] == pytest.approx(1.0) and stats["residual_m"] == pytest.approx(0.0, abs=1e-12)


def test_opposite_moves_of_two_scenes_are_all_residual(plan_shift):
    reference = _plans(scenes=2)
    other = reference.copy()
    other[0, :, 1] += 1.0  # one scene moves 1 m left, the other 1 m right: nothing in common
    other[1, :, 1] -= 1.0
    stats = plan_shift.shift_statistics(reference, other)
    assert stats["common_share"] == pytest.approx(0.0, abs=1e-12)
    assert stats["residual_m"] == pytest.approx(1.0)
    assert (stats["final_dy_mean"], stats["final_dy_std"]) == (pytest.approx(0.0, abs=1e-12), pytest.approx(math.sqrt(2)))
    assert math.isnan(plan_shift.shift_statistics(reference, reference)["common_share"])  # nothing moved


def test_measure_splits_by_family_and_keeps_both_scores(plan_shift):
    reference = _plans()
    other = reference.copy()
    other[2:, :, 0] += 2.0
    scores = {"reference": np.array([0.5, 0.5, 0.9, 0.7]), "grpo": np.array([0.5, 0.5, 1.0, 0.9])}
    table = plan_shift.measure(reference, {"grpo": other}, ["curve", "curve", "cut_in", "cut_in"], scores)
    assert list(table["grpo"]) == ["curve", "cut_in", "all"]
    assert table["grpo"]["curve"]["ade"] == 0.0 and table["grpo"]["cut_in"]["ade"] == pytest.approx(2.0)
    assert table["grpo"]["all"]["ade"] == pytest.approx(1.0)
    assert (table["grpo"]["cut_in"]["reference PDMS"], table["grpo"]["cut_in"]["PDMS"]) == (pytest.approx(0.8), pytest.approx(0.95))
    assert "| grpo | all | 4 | 0.650 -> 0.725 |" in plan_shift.format_table(table)
