"""Building blocks of the synthetic world: paths, lateral profiles, IDM, speed caps, box overlaps,
junction geometry, the driving-command rule, the decision vocabulary and the expert on hand-built scenes."""
from __future__ import annotations

import numpy as np
import pytest
import shapely

from sim import conventions as C
from sim.geometry import box_corners, ego_corners
from sim.scene import CriticalObject, StaticObject
from sim.scenarios.assemble import command_from_centerline
from sim.scenarios.checks import DrivableArea, boxes_overlap
from sim.scenarios.expert import EGO_FRONT, drive_expert
from sim.scenarios.intersection import build_junction
from sim.scenarios.longitudinal import CURRENT, FINE_TIMES, IDM, SpeedCap, StopRule, drive
from sim.paths import QuinticReturn, Smoothstep, arc, straight
from sim.scenarios.reasoning import (
    COMPATIBLE,
    LATERAL_DECISIONS,
    LATERAL_PHRASES,
    LONGITUDINAL_DECISIONS,
    LONGITUDINAL_PHRASES,
    classify_lateral,
    classify_longitudinal,
    compose,
    parse_decisions,
)
from sim.scenarios.road import MapBuilder, Road, add_road
from sim.scenarios.scenario import EgoStart, Scenario
from sim.scenarios.traffic import Dimensions, crossing_walk, free_track, parked


def test_path_projection_inverts_frenet_coordinates_on_a_bend():
    path = arc(np.zeros(2), 0.0, 40.0, 1.2)
    s = np.array([3.0, 17.5, 30.0])
    d = np.array([-1.5, 0.4, 2.0])
    s_back, d_back = path.project(path.frenet_to_pose(s, d)[:, :2])
    # vertex headings are interpolated, segments are straight: a few centimetres apart on 1 m chords
    np.testing.assert_allclose(s_back, s, atol=0.05)
    np.testing.assert_allclose(d_back, d, atol=0.05)
    assert abs(path.curvature_at(10.0) - 1 / 40.0) < 1e-3


def test_path_extends_straight_beyond_its_ends():
    path = straight(np.array([1.0, 2.0]), np.pi / 2, 10.0)
    np.testing.assert_allclose(path.point_at(-3.0), [1.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(path.point_at(14.0), [1.0, 16.0], atol=1e-9)
    s, d = path.project(np.array([[0.0, 20.0]]))
    assert s[0] == pytest.approx(18.0) and d[0] == pytest.approx(1.0)  # left of a path heading north


def test_lateral_transitions_start_and_end_flat():
    step = Smoothstep(10.0, 30.0, 0.0, 3.5)
    d, slope = step(np.array([0.0, 10.0, 20.0, 30.0, 50.0]))
    np.testing.assert_allclose(d, [0.0, 0.0, 1.75, 3.5, 3.5])
    np.testing.assert_allclose(slope[[0, 1, 3, 4]], 0.0)
    back = QuinticReturn(s0=5.0, length=20.0, d0=0.8, m0=0.1)
    d, slope = back(np.array([5.0, 25.0, 40.0]))
    np.testing.assert_allclose(d, [0.8, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(slope, [0.1, 0.0, 0.0], atol=1e-12)


def _no_leaders():
    return np.zeros((0, len(FINE_TIMES))), np.zeros((0, len(FINE_TIMES)))


def test_idm_stops_before_an_active_stop_rule_and_goes_when_it_is_lifted():
    idm = IDM(target_speed=12.0)
    held = drive(idm, 0.0, 8.0, 0.0, EGO_FRONT, *_no_leaders(), [StopRule(32.0, np.ones(len(FINE_TIMES), bool), "red_light")])
    front = held.s[CURRENT:] + EGO_FRONT
    assert np.all(front < 32.0 - idm.stop_gap / 2) and held.v[-1] < 1.5
    assert np.all(np.diff(held.v[CURRENT:]) <= 1e-9)  # never speeds up towards the line
    assert np.all(np.abs(np.diff(held.a[CURRENT:])) <= idm.jerk_max * 0.1 + 1e-9)
    assert np.nanmin(held.a) >= idm.a_min - 1e-9
    lifted = drive(idm, 0.0, 8.0, 0.0, EGO_FRONT, *_no_leaders(), [StopRule(32.0, FINE_TIMES < 3.0, "red_light")])
    at_three = int(np.flatnonzero(FINE_TIMES == 3.0)[0])
    assert lifted.v[-1] > lifted.v[at_three] + 1.0  # drives on once the rule is lifted


def test_idm_keeps_a_time_gap_behind_a_steady_leader():
    idm = IDM(target_speed=15.0, headway=1.4, min_gap=2.0)
    equilibrium = 2.0 + 1.4 * 10.0
    leader_rear = (EGO_FRONT + equilibrium + 10.0 * FINE_TIMES)[None]
    profile = drive(idm, 0.0, 10.0, 0.0, EGO_FRONT, leader_rear, np.full_like(leader_rear, 10.0), [])
    gap = leader_rear[0, CURRENT:] - (profile.s[CURRENT:] + EGO_FRONT)
    assert np.all(np.abs(gap - equilibrium) < 3.0) and np.all(np.abs(profile.v[CURRENT:] - 10.0) < 1.0)


def test_speed_cap_respects_lateral_acceleration_and_yaw_rate():
    s = np.arange(0.0, 100.0, 1.0)
    kappa = np.where((s > 60) & (s < 80), 1 / 10.0, 0.0)
    cap = SpeedCap.from_curvature(s, kappa, lateral_accel=3.0, yaw_rate=0.5, decel=1.5)
    assert cap.at(70.0) == pytest.approx(5.0)  # yaw rate: 0.5 rad/s at radius 10 m
    assert cap.at(20.0) == pytest.approx(np.sqrt(25.0 + 2 * 1.5 * 41.0), rel=1e-6)  # braking room


def test_box_overlap_agrees_with_shapely():
    rng = np.random.default_rng(0)
    a = box_corners(np.concatenate([rng.uniform(-3, 3, (400, 2)), rng.uniform(-3, 3, (400, 1))], 1), 4.5, 1.9)
    b = box_corners(np.concatenate([rng.uniform(-3, 3, (400, 2)), rng.uniform(-3, 3, (400, 1))], 1), 2.0, 0.8)
    expected = shapely.intersects(shapely.polygons(a), shapely.polygons(b))
    np.testing.assert_array_equal(boxes_overlap(a, b), expected)


@pytest.mark.parametrize("lanes, corner", [(1, 4.0), (2, 3.0), (2, 8.0)])
def test_junction_connectors_join_lanes_and_their_centre_lines_are_drivable(lanes, corner):
    builder = MapBuilder()
    junction = build_junction(builder, np.zeros(2), {a: lanes for a in "ENWS"}, 3.4, corner, {a: 60.0 for a in "ENWS"}, 10.0)
    area = DrivableArea(builder.areas)
    assert {a.type for a in builder.areas} >= {"roadblock", "intersection", "roadblock_connector"}
    for c in junction.connectors:
        start = junction.incoming_path(c.from_arm, c.from_lane).xy[-1]
        end = junction.outgoing_path(c.to_arm, c.to_lane).xy[0]
        np.testing.assert_allclose(c.path.xy[[0, -1]], [start, end], atol=1e-6)
        if lanes == 1 and c.turn == "left":
            continue  # single-lane exits are too narrow for a left turn's swinging front (the families avoid them)
        path = junction.movement_path(c)
        s = np.arange(8.0, path.length - 8.0, 0.5)
        assert area.ego_inside(path.pose_at(s)).all(), c.lane_id


def test_command_follows_the_route_centre_line_twenty_metres_ahead():
    ahead = straight(np.array([-30.0, 0.0]), 0.0, 40.0)
    left = arc(ahead.xy[-1], 0.0, 15.0, np.pi / 2)
    right = arc(ahead.xy[-1], 0.0, 15.0, -np.pi / 2)
    straight_on = np.concatenate([ahead.xy, straight(ahead.xy[-1], 0.0, 50.0).xy[1:]])
    assert C.DRIVING_COMMANDS[command_from_centerline(straight_on, np.zeros(3))] == "straight"
    assert C.DRIVING_COMMANDS[command_from_centerline(np.concatenate([ahead.xy, left.xy[1:]]), np.zeros(3))] == "left"
    assert C.DRIVING_COMMANDS[command_from_centerline(np.concatenate([ahead.xy, right.xy[1:]]), np.zeros(3))] == "right"
    # the turn starts 10 m ahead: 20 m along the line it is only 10 m into it, 3.2 m to the side
    assert C.DRIVING_COMMANDS[command_from_centerline(np.concatenate([ahead.xy, left.xy[1:]]), np.array([0.0, 0.0, 0.0]), 15.0)] == "straight"


def _trajectory(speeds, lateral=None, headings=None) -> np.ndarray:
    x = np.cumsum(np.asarray(speeds) * 0.5)
    y = np.zeros_like(x) if lateral is None else np.asarray(lateral, dtype=float)
    h = np.zeros_like(x) if headings is None else np.asarray(headings, dtype=float)
    return np.stack([x, y, h], -1)


def test_decisions_are_classified_from_the_trajectory():
    lane = np.array([[-50.0, 0.0], [150.0, 0.0]])
    assert classify_longitudinal(10.0, _trajectory([10] * 10)) == "keep speed"
    assert classify_longitudinal(6.0, _trajectory(np.linspace(6.5, 10, 10))) == "accelerate"
    assert classify_longitudinal(10.0, _trajectory(np.linspace(9, 5, 10))) == "decelerate"
    assert classify_longitudinal(8.0, _trajectory([6, 4, 2, 0.5, 0, 0, 0, 0, 0, 0])) == "stop"
    assert classify_lateral(_trajectory([10] * 10), lane) == "keep lane"
    change = 3.5 / (1 + np.exp(-(np.arange(10) - 4.0)))
    assert classify_lateral(_trajectory([10] * 10, change), lane) == "change lane left"
    nudge = -0.9 * np.sin(np.linspace(0, np.pi, 10))
    assert classify_lateral(_trajectory([10] * 10, nudge), lane) == "nudge right"
    back_to_centre = np.linspace(0.08, 0.8, 10)  # starting 0.8 m right of the lane centre: a recovery, not a nudge
    assert classify_lateral(np.concatenate([_trajectory([10] * 10, back_to_centre)]), np.array([[-50.0, 0.8], [150.0, 0.8]])) == "keep lane"
    turn = arc(np.zeros(2), 0.0, 12.0, np.pi / 2)
    poses = turn.pose_at(np.linspace(2.0, turn.length, 10))
    assert classify_lateral(poses, lane) == "turn left"
    bend = arc(np.zeros(2), 0.0, 40.0, -1.4)  # following a 40 m bend for 50 m is not a turn
    assert classify_lateral(bend.pose_at(np.arange(1, 11) * 5.0), bend.xy) == "keep lane"


def test_every_decision_has_phrases_the_parser_reads_back():
    assert set(LONGITUDINAL_PHRASES) == set(LONGITUDINAL_DECISIONS) == set(COMPATIBLE)
    assert set(LATERAL_PHRASES) == set(LATERAL_DECISIONS)
    rng = np.random.default_rng(3)
    for longitudinal in LONGITUDINAL_DECISIONS:
        for lateral in LATERAL_DECISIONS:
            for _ in range(3):
                obj = CriticalObject("stop_sign", "ahead in my lane at 20 m", "requiring a stop")
                text = compose(rng, [obj], longitudinal, lateral, "cross traffic has priority").text
                assert parse_decisions(text) == (longitudinal, lateral), text
    with pytest.raises(ValueError, match="vocabulary"):
        compose(rng, [], "brake", "keep lane")


def _straight_scenario(tracks=(), statics=(), speed=10.0) -> Scenario:
    builder = MapBuilder()
    road = Road("r", straight(np.array([-60.0, 0.0]), 0.0, 260.0), 0.0, 260.0, 3.5, 1, 1, 13.0)
    add_road(builder, road)
    lane = road.forward_path(0)
    return Scenario(
        family="test", builder=builder, route=lane, route_roadblocks={road.forward_roadblock}, speed_limit=13.0,
        lane_width=3.5, tracks=list(tracks), statics=list(statics), lights=[], start=EgoStart(60.0, speed, 0.0),
        stops=[], idm=IDM(target_speed=13.0), facts={"lane_path": lane},
    )


def test_expert_stops_behind_a_blocking_obstacle_and_is_accepted():
    barrier = StaticObject("barrier", "barrier", 30.0, -1.75, 0.0, 2.0, 3.0, 1.0)  # closes the lane 25 m ahead
    scenario = _straight_scenario(statics=[barrier], speed=8.0)
    plan = drive_expert(scenario, DrivableArea(scenario.builder.areas))
    assert plan.ok, plan.reason
    front = plan.poses[CURRENT:, 0] + EGO_FRONT
    assert np.all(front < 29.0 - 1.0) and plan.speeds[-1] < 1.5


def test_expert_yields_to_a_pedestrian_crossing_its_path():
    walk = crossing_walk(np.array([35.0, -5.0]), np.pi / 2, 1.4, t_start=0.0)
    pedestrian = free_track("ped", "pedestrian", Dimensions(0.6, 0.6, 1.7), walk, "crossing")
    scenario = _straight_scenario(tracks=[pedestrian], speed=9.0)
    plan = drive_expert(scenario, DrivableArea(scenario.builder.areas))
    assert plan.ok, plan.reason
    assert plan.waited_for() == ["ped"]
    ego = shapely.polygons(ego_corners(plan.poses[CURRENT:]))
    ped = shapely.polygons(box_corners(pedestrian.poses[CURRENT:], 0.6, 0.6))
    assert not np.any(shapely.intersects(ego, ped))
    # without the pedestrian it would have driven on at about its speed
    free = drive_expert(_straight_scenario(speed=9.0))
    assert free.poses[-1, 0] > plan.poses[-1, 0] + 5.0


def test_expert_rejects_a_scene_it_cannot_make_safe():
    wall = parked("stalled", Dimensions(4.5, 2.0, 1.6), np.array([12.0, -1.75, 0.0]))  # 5.7 m ahead of the front
    plan = drive_expert(_straight_scenario(tracks=[wall], speed=12.0), None)
    assert not plan.ok and plan.reason
