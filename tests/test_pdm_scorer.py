"""PDMScorer API: group calls, the PDM-Closed cache, frame invariance, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from rewards.pdm import PDMScorer, PlanError
from sim.scene_json import load_scene_json, scene_to_json

from pdm_builders import cone, moving, road_scene, straight_plan


def busy_scene(**kw):
    """The road with a slower car ahead in the ego lane, a car in the right lane and a cone on the left."""
    return road_scene(agents=[moving("lead", 30.0, 0.0, 6.0), moving("side", 5.0, -3.5, 9.0)],
                      statics=[cone("c0", 20.0, 3.0)], **kw)


def plan_group() -> np.ndarray:
    rng = np.random.default_rng(7)
    plans = [straight_plan(10.0), straight_plan(5.0), straight_plan(12.0, y=-3.5), np.zeros((8, 3)),
             straight_plan(10.0, y=3.0)]
    plans += [straight_plan(rng.uniform(0, 14)) + rng.normal(0, 0.4, (8, 3)) * [1, 1, 0.05] for _ in range(11)]
    return np.stack(plans)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_group_call_equals_one_call_per_plan(version):
    scorer = PDMScorer(version)
    prepared = scorer.prepare(busy_scene())
    plans = plan_group()
    together = scorer.score(prepared, plans)
    assert len(together) == len(plans)
    for plan, result in zip(plans, together):
        assert scorer.score(prepared, plan)[0] == result
    key = "PDMS" if version == "v1" else "EPDMS"
    assert len({r[key] for r in together}) > 3  # the group really differs plan by plan
    # progress is normalised against PDM-Closed only, never against the best plan of the group
    assert together[1]["EP"] == scorer.score(prepared, plans[1:2])[0]["EP"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cached_pdm_closed_scores_exactly_like_a_fresh_one(version):
    fresh_scene = busy_scene()
    scorer = PDMScorer(version)
    fresh = scorer.score(scorer.prepare(fresh_scene), plan_group())
    assert version in fresh_scene.pdm_closed_trajectory
    assert fresh_scene.pdm_closed_trajectory[version].shape == (51, 3)
    # the cache travels through the scene JSON "sim" block and is used instead of re-planning
    cached_scene, _, _ = load_scene_json(scene_to_json(fresh_scene))
    assert scorer.score(scorer.prepare(cached_scene), plan_group()) == fresh
    # a changed cache is really used
    cached_scene.pdm_closed_trajectory[version] = cached_scene.pdm_closed_trajectory[version] * 0.5
    changed = scorer.score(scorer.prepare(cached_scene), plan_group())
    assert [r["diagnostics"]["raw_progress_m"]["pdm_closed"] for r in changed] != \
        [r["diagnostics"]["raw_progress_m"]["pdm_closed"] for r in fresh]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_scores_are_invariant_under_a_rigid_transform_of_the_scene(version):
    origin = np.array([812.3, -4521.7, 2.2])
    base_scene = busy_scene(lights=[("lc0", "red")], connector=True, intersection=True)
    moved_scene = busy_scene(lights=[("lc0", "red")], connector=True, intersection=True, origin=origin)
    scorer = PDMScorer(version)
    base = scorer.score(scorer.prepare(base_scene), plan_group())
    moved = scorer.score(scorer.prepare(moved_scene), plan_group())
    for a, b in zip(base, moved):
        for key, value in a.items():
            if key in ("diagnostics", "notes", "human_unfiltered_submetrics"):
                continue
            if isinstance(value, float) and value not in (0.0, 0.5, 1.0):
                assert b[key] == pytest.approx(value, abs=1e-9), key
            else:
                assert b[key] == value, key
        assert b["diagnostics"]["raw_progress_m"]["plan"] == pytest.approx(a["diagnostics"]["raw_progress_m"]["plan"], abs=1e-8)
    np.testing.assert_allclose(moved_scene.pdm_closed_trajectory[version], base_scene.pdm_closed_trajectory[version], atol=1e-8)


def test_plans_in_the_scene_frame_and_other_samplings():
    origin = np.array([100.0, 50.0, 0.7])
    scene = road_scene(origin=origin)
    scorer = PDMScorer("v2")
    prepared = scorer.prepare(scene)
    ego_frame = scorer.score(prepared, straight_plan())[0]
    from sim.geometry import relative_to_absolute

    scene_frame = scorer.score(prepared, relative_to_absolute(scene.ego.pose, straight_plan()), plan_frame="scene")[0]
    assert scene_frame["EPDMS"] == pytest.approx(ego_frame["EPDMS"], abs=1e-9)
    dense = np.column_stack([np.arange(1, 41) * 1.0, np.zeros(40), np.zeros(40)])  # 10 m/s at 0.1 s
    assert scorer.score(prepared, dense, interval_s=0.1)[0]["EPDMS"] == pytest.approx(ego_frame["EPDMS"], abs=1e-6)


def test_bad_plans_are_rejected_with_a_clear_error():
    scorer = PDMScorer("v1")
    prepared = scorer.prepare(road_scene())
    plans = np.stack([straight_plan(), straight_plan()])
    plans[1, 5, 2] = np.inf
    with pytest.raises(PlanError, match=r"plans\[1\] pose 5 is not finite"):
        scorer.score(prepared, plans)
    with pytest.raises(PlanError, match=r"plans: expected poses of shape \(8, 3\) .* got shape \(8, 2\)"):
        scorer.score(prepared, np.zeros((8, 2)))
    with pytest.raises(ValueError, match="prepared for v1"):
        PDMScorer("v2").score(prepared, straight_plan())
    with pytest.raises(ValueError, match="version"):
        PDMScorer("v3")


def test_a_scene_without_route_cannot_be_prepared():
    scene = road_scene()
    for lane in scene.map.lanes:
        lane.on_route = False
    with pytest.raises(ValueError, match="no on-route lane"):
        PDMScorer("v2").prepare(scene)
