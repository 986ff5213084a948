"""sim.conventions.check_plan: NAVSIM's plan (8 poses at 0.5 s, 4 s) is checked wherever a plan is scored."""
from __future__ import annotations

import numpy as np
import pytest

from rewards.pdm import PDMScorer, PlanError
from sim.conventions import check_plan

from pdm_builders import road_scene, straight_plan


def test_a_navsim_plan_and_other_samplings_of_the_same_4_s_pass():
    plan = straight_plan()
    checked = check_plan(plan.astype(np.float32))
    assert checked.dtype == np.float64 and checked.shape == (8, 3)
    np.testing.assert_array_equal(checked, plan)
    dense = np.column_stack([np.arange(1, 41) * 1.0, np.zeros(40), np.zeros(40)])
    assert check_plan(dense, 0.1).shape == (40, 3)
    assert check_plan(np.stack([plan, plan]), where="plans").shape == (2, 8, 3)


@pytest.mark.parametrize(
    "poses, interval_s, message",
    [
        (np.zeros((7, 3)), 0.5, r"^plan: expected 8 poses at 0.5 s \(t = 0.5 ... 4 s\), got 7$"),
        (np.zeros((2000, 3)), 0.5, r"^plan: expected 8 poses at 0.5 s \(t = 0.5 ... 4 s\), got 2000$"),
        (np.zeros((8, 3)), 0.1, r"^plan: expected 40 poses at 0.1 s \(t = 0.1 ... 4 s\), got 8$"),
        (np.zeros((8, 2)), 0.5, r"^plan: expected poses of shape \(8, 3\) \[x, y, heading\] or \(G, 8, 3\), got shape \(8, 2\)$"),
        (np.zeros((1, 8, 3, 1)), 0.5, r"got shape \(1, 8, 3, 1\)$"),
        (np.zeros((8, 3)), 0.3, r"^plan: a pose interval of 0.3 s does not divide the 4 s plan horizon"),
        (np.zeros((8, 3)), 0.0, r"^plan: the pose interval must be a positive number of seconds \(NAVSIM: 0.5 s\), got 0.0$"),
        (np.zeros((8, 3)), float("nan"), r"^plan: the pose interval must be a positive number"),
        ([["a", 0, 0]] * 8, 0.5, r"^plan: expected numbers of shape \(8, 3\)"),
    ],
)
def test_what_is_wrong_is_named_with_the_expected_and_the_found(poses, interval_s, message):
    with pytest.raises(ValueError, match=message):
        check_plan(poses, interval_s)


def test_the_first_non_finite_value_is_located():
    plan = straight_plan()
    plan[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"^trajectory pose 3 is not finite: \[20.0, 0.0, nan\]$"):
        check_plan(plan, where="trajectory")
    group = np.stack([straight_plan(), straight_plan()])
    group[1, 6, 0] = -np.inf
    with pytest.raises(ValueError, match=r"^plans\[1\] pose 6 is not finite: \[-inf, 0.0, 0.0\]$"):
        check_plan(group, where="plans")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_scorer_refuses_plans_that_navsim_would_not_score(version):
    """Seven poses used to lose the last 0.5 s (and comfort) silently; 2000 tiny steps used to score 1.0."""
    scorer = PDMScorer(version)
    prepared = scorer.prepare(road_scene())
    with pytest.raises(PlanError, match=r"^plans: expected 8 poses at 0.5 s \(t = 0.5 ... 4 s\), got 7$"):
        scorer.score(prepared, straight_plan()[:7])
    crawl = np.column_stack([np.arange(1, 2001) * 0.02, np.zeros(2000), np.zeros(2000)])
    with pytest.raises(PlanError, match=r"got 2000$"):
        scorer.score(prepared, crawl)
    with pytest.raises(PlanError, match=r"^plans: a pose interval of 0.3 s does not divide"):
        scorer.score(prepared, straight_plan(), interval_s=0.3)
    beyond_float32 = straight_plan()
    beyond_float32[2, 0] = 1e39  # NAVSIM's Trajectory holds float32 poses: this one would be infinite
    with pytest.raises(PlanError, match=r"^plans\[0\] pose 2 overflows float32"):
        scorer.score(prepared, beyond_float32)
    key = "PDMS" if version == "v1" else "EPDMS"
    assert scorer.score(prepared, straight_plan())[0][key] > 0.9
