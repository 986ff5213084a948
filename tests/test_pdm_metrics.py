"""Boundary cases of every PDM sub-metric, on tiny hand-built scenes."""
from __future__ import annotations

import numpy as np
import pytest

from rewards.pdm import PDMScorer
from rewards.pdm.comfort import two_frame_extended_comfort
from rewards.pdm.proposals import epdms, normalised_progress
from sim.conventions import PACIFICA
from sim.kinematics import simulate
from sim.scene import EgoState, PreviousFrame

from pdm_builders import cone, moving, road_scene, straight_plan, vehicle


def score(scene, plan, version):
    scorer = PDMScorer(version)
    return scorer.score(scorer.prepare(scene), plan)[0]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_corner_exactly_on_the_road_edge_is_off_road(version):
    stopped = np.zeros((8, 3))
    # the ego's right corners are at y = -width / 2 exactly
    on_edge = road_scene(ego_speed=0.0, right_edge=-PACIFICA.width / 2)
    assert score(on_edge, stopped, version)["DAC"] == 0.0
    just_inside = road_scene(ego_speed=0.0, right_edge=-PACIFICA.width / 2 - 1e-9)
    assert score(just_inside, stopped, version)["DAC"] == 1.0


def test_progress_normalisation_and_its_5_m_floor():
    ones = np.ones(2)
    # best valid progress <= 5 m: everybody gets EP = 1 (v1: 0 for an invalid proposal)
    np.testing.assert_array_equal(normalised_progress(np.array([5.0, 3.0]), ones, "v2"), [1.0, 1.0])
    np.testing.assert_array_equal(normalised_progress(np.array([5.0, 3.0]), np.array([1.0, 0.0]), "v1"), [1.0, 0.0])
    np.testing.assert_array_equal(normalised_progress(np.array([5.0, 3.0]), np.array([1.0, 0.0]), "v2"), [1.0, 1.0])
    # above the floor: relative to the best valid proposal, clipped to 1 (v2) / masked (v1)
    np.testing.assert_allclose(normalised_progress(np.array([6.0, 3.0]), ones, "v1"), [1.0, 0.5])
    np.testing.assert_allclose(normalised_progress(np.array([6.0, 9.0]), np.array([1.0, 0.0]), "v2"), [1.0, 1.0])
    np.testing.assert_allclose(normalised_progress(np.array([6.0, 9.0]), np.array([1.0, 0.0]), "v1"), [1.0, 0.0])
    # a plan going further than a valid PDM-Closed gets EP = 1
    result = score(road_scene(), straight_plan(11.0), "v2")
    assert result["diagnostics"]["raw_progress_m"]["plan"] > result["diagnostics"]["raw_progress_m"]["pdm_closed"]
    assert result["EP"] == 1.0
    half = score(road_scene(), straight_plan(5.0), "v1")
    assert half["EP"] == pytest.approx(half["diagnostics"]["raw_progress_m"]["plan"] / half["diagnostics"]["raw_progress_m"]["pdm_closed"])


def test_ttc_horizon_differs_between_versions():
    # a parked car whose rear is at x = 46: the ego (10 m/s) never touches it within 4 s, but its box pushed
    # 0.3 s ahead at t = 4.0 s does (v1 checks ego states up to 4 s); v2 stops at 3.1 s + 0.9 s
    parked = vehicle("parked", np.tile([48.25, 0.0, 0.0], (11, 1)))
    scene = road_scene(agents=[parked])
    v1, v2 = score(scene, straight_plan(), "v1"), score(road_scene(agents=[parked]), straight_plan(), "v2")
    assert v1["NC"] == 1.0 and v2["NC"] == 1.0
    # first hit: the box at 3.3 s pushed 0.9 s ahead reaches x = 46.05; v2's last checked step is 3.1 s
    assert v1["TTC"] == 0.0 and v1["diagnostics"]["plan_first_ttc_violation_s"] == pytest.approx(3.3)
    assert v2["TTC"] == 1.0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_collision_classes(version):
    # the ego rear-ends a slower car ahead: front-bumper collision, at fault with an agent -> 0
    ahead = moving("slow", 20.0, 0.0, 2.0)
    assert score(road_scene(agents=[ahead]), straight_plan(), version)["NC"] == 0.0
    # a cone in the way: at fault with a static object -> 0.5
    assert score(road_scene(statics=[cone("c", 20.0, 0.0)]), straight_plan(), version)["NC"] == 0.5
    # a stopped ego hit from behind is never at fault
    rear = moving("fast", -14.0, 0.0, 8.0)
    stopped = road_scene(ego_speed=0.0, agents=[rear])
    result = score(stopped, np.zeros((8, 3)), version)
    assert result["NC"] == 1.0
    assert result["diagnostics"]["plan_first_at_fault_collision_s"] is None


def test_lateral_collision_is_at_fault_only_when_straddling_lanes():
    # a car alongside moves from the right lane (y = -3.5) to y = -1.5 within 1 s and touches the ego's side
    t = np.arange(11) * 0.5
    cut_in = vehicle("cut", np.column_stack([10.0 * t, -3.5 + np.minimum(t, 1.0) * 2.0, np.zeros(11)]),
                     np.column_stack([np.full(11, 10.0), np.zeros(11)]))
    in_lane = score(road_scene(agents=[cut_in]), straight_plan(), "v2")
    assert in_lane["NC"] == 1.0
    assert in_lane["TTC"] == 0.0  # its centroid 0.9 s later is within 30 deg of the ego heading: "ahead"
    # the same with the ego straddling the lane line at y = -1.75: at fault
    straddling = score(road_scene(agents=[cut_in], ego_y=-0.7), straight_plan(), "v2")
    assert straddling["NC"] == 0.0


def test_traffic_light_compliance_uses_red_on_route_connectors_only():
    plan = straight_plan()
    red = road_scene(connector=True, lights=[("lc0", "red")])
    assert score(red, plan, "v2")["TLC"] == 0.0
    assert score(road_scene(connector=True, lights=[("lc0", "red")]), plan, "v1")["PDMS"] == 1.0  # v1: no lights
    assert score(road_scene(connector=True, lights=[("lc0", "green")]), plan, "v2")["TLC"] == 1.0
    # a red light on an off-route lane is ignored
    assert score(road_scene(lights=[("oncoming", "red")]), plan, "v2")["TLC"] == 1.0


def test_lane_keeping_skips_intersections():
    off_centre = straight_plan(y=0.8)  # 0.8 m off the centre line for the whole horizon
    assert score(road_scene(), off_centre, "v2")["LK"] == 0.0
    # an intersection from x = 30 to 45 breaks the 2 s run: the plan is counted for < 20 steps in a row
    assert score(road_scene(connector=True, intersection=True), off_centre, "v2")["LK"] == 1.0


def test_driving_direction_windows():
    # into the oncoming lane (off route) for most of the horizon: > 6 m per second -> 0
    assert score(road_scene(), straight_plan(y=3.5), "v2")["DDC"] == 0.0
    assert score(road_scene(), straight_plan(y=3.5), "v1")["DDC_weight0"] == 0.0
    # already in the oncoming lane, slowly (3 m/s): 3.3 m in the worst 1 s window (2 ... 6 m) -> 0.5
    assert score(road_scene(ego_speed=3.0, ego_y=3.5), straight_plan(3.0), "v2")["DDC"] == 0.5
    assert score(road_scene(ego_speed=1.5, ego_y=3.5), straight_plan(1.5), "v2")["DDC"] == 1.0


def test_human_filter_forgives_only_exact_zeros():
    scorer = PDMScorer("v2")
    scene = road_scene()
    scene.human_trajectory = straight_plan(y=3.5)  # the human drives in the oncoming lane: DDC 0, LK 0
    prepared = scorer.prepare(scene)
    assert prepared.human["DDC"] == 0.0 and prepared.human["LK"] == 0.0
    result = scorer.score(prepared, straight_plan(y=3.5))[0]
    assert result["DDC"] == 1.0 and result["LK"] == 1.0 and result["human_filter_applied"]
    assert result["human_unfiltered_submetrics"]["DDC"] == 0.0
    # a human DDC of 0.5 is not forgiven
    prepared.human["DDC"] = 0.5
    assert scorer.score(prepared, straight_plan(y=3.5))[0]["DDC"] == 0.0
    # without a human trajectory nothing is forgiven
    unfiltered = PDMScorer("v2").score(PDMScorer("v2").prepare(road_scene()), straight_plan(y=3.5))[0]
    assert unfiltered["DDC"] == 0.0 and not unfiltered["human_filter_applied"]
    # the filter can be switched off
    off = PDMScorer("v2", human_filter=False)
    assert off.score(off.prepare(scene), straight_plan(y=3.5))[0]["DDC"] == 0.0


def test_extended_comfort_with_and_without_previous_frame():
    plan = straight_plan()
    without = score(road_scene(), plan, "v2")
    assert without["EC"] is None
    assert without["EPDMS"] == pytest.approx(epdms(1.0, without["EP"], 1.0, 1.0, 1.0, None))
    scene = road_scene()
    scene.previous_frame = PreviousFrame(EgoState(-5.0, 0.0, 0.0, vx=10.0), straight_plan())
    consistent = score(scene, plan, "v2")
    assert consistent["EC"] == 1.0 and consistent["EPDMS"] == pytest.approx(1.0)
    scene = road_scene()
    scene.previous_frame = PreviousFrame(EgoState(-5.0, 0.0, 0.0, vx=10.0), np.tile([2.0, 0.0, 0.0], (8, 1)))
    jerky = score(scene, plan, "v2")
    assert jerky["EC"] == 0.0 and jerky["EPDMS"] == pytest.approx(14 / 16)
    # EC compares the 36 overlapping states: identical motion -> 1
    ego = EgoState(0.0, 0.0, 0.0, vx=10.0)
    states = simulate(ego, plan)[0]
    assert two_frame_extended_comfort(states, states) == 1.0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hard_braking_is_uncomfortable(version):
    key = "C" if version == "v1" else "HC"
    assert score(road_scene(), straight_plan(), version)[key] == 1.0
    assert score(road_scene(ego_speed=15.0), np.tile([3.0, 0.0, 0.0], (8, 1)), version)[key] == 0.0


def test_a_track_seen_once_is_frozen_at_every_step():
    # a car seen only at t = 1.0 s, 25 m ahead, blocks the ego lane at every step (as NAVSIM caches it)
    poses = np.full((11, 3), np.nan)
    poses[2] = [25.0, 0.0, 0.0]
    once = vehicle("ghost", poses)
    result = score(road_scene(agents=[once]), straight_plan(), "v1")
    assert result["NC"] == 0.0
    assert result["diagnostics"]["plan_first_at_fault_collision_s"] == pytest.approx(1.9)


def test_history_comfort_sees_the_logged_history():
    # a smooth plan after a logged history with 6 m/s^2 of lateral acceleration: only v2's HC notices
    # (the simulated states never have lateral acceleration; the history's is interpolated in)
    scene = road_scene()
    for e in scene.ego_history[:-1]:
        e.ay = 6.0
    assert score(scene, straight_plan(), "v2")["HC"] == 0.0
    assert score(road_scene(), straight_plan(), "v2")["HC"] == 1.0
    scene_v1 = road_scene()
    for e in scene_v1.ego_history[:-1]:
        e.ay = 6.0
    assert score(scene_v1, straight_plan(), "v1")["C"] == 1.0
