"""sim.kinematics: NAVSIM's plan -> 10 Hz reference -> LQR tracker -> kinematic bicycle chain."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.conventions import PACIFICA
from sim.geometry import absolute_to_relative, relative_to_absolute
from sim.kinematics import (
    BatchLQRTracker,
    KinematicBicycleModel,
    StateIndex,
    initial_state,
    reference_poses,
    simulate,
    tracking_error,
)
from sim.scene import EgoState

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdm_examples"


def straight_plan(speed: float, num: int = 8, dt: float = 0.5) -> np.ndarray:
    t = (np.arange(num) + 1) * dt
    return np.stack([speed * t, np.zeros(num), np.zeros(num)], axis=-1)


def circle_plan(speed: float, radius: float, num: int = 8, dt: float = 0.5) -> np.ndarray:
    """Rear-axle poses on a left circle through the origin (ego frame), heading tangent."""
    angle = speed * (np.arange(num) + 1) * dt / radius
    return np.stack([radius * np.sin(angle), radius * (1 - np.cos(angle)), angle], axis=-1)


def test_straight_line_at_constant_speed_is_followed_exactly():
    ego = EgoState(0.0, 0.0, 0.0, vx=10.0)
    states = simulate(ego, straight_plan(10.0))[0]
    t = np.arange(41) * 0.1
    assert states.shape == (41, 11)
    np.testing.assert_allclose(states[:, StateIndex.X], 10.0 * t, atol=1e-9)
    np.testing.assert_allclose(states[:, StateIndex.Y], 0.0, atol=1e-12)
    np.testing.assert_allclose(states[:, StateIndex.HEADING], 0.0, atol=1e-12)
    np.testing.assert_allclose(states[:, StateIndex.VELOCITY_X], 10.0, atol=1e-9)
    np.testing.assert_allclose(states[:, StateIndex.ACCELERATION_X], 0.0, atol=1e-9)


def test_reference_is_linear_in_time_with_the_current_pose_first():
    ego = EgoState(1.0, 2.0, 0.3, vx=5.0)
    plan = straight_plan(5.0)
    ref = reference_poses(ego, plan)[0]
    assert ref.shape == (41, 3)
    np.testing.assert_allclose(ref[0], ego.pose, atol=1e-12)
    # t = 0.25 s is halfway between the ego (t = 0) and the first plan pose (t = 0.5 s)
    local = absolute_to_relative(ego.pose, ref)
    np.testing.assert_allclose(local[:, 0], 5.0 * np.arange(41) * 0.1, atol=1e-9)
    np.testing.assert_allclose(local[5], [2.5, 0.0, 0.0], atol=1e-9)


def test_reference_interpolates_heading_along_the_short_arc():
    ego = EgoState(0.0, 0.0, 3.0)
    plan = np.array([[0.0, 0.0, 0.4]] * 8)  # heading 3.4 rad -> crosses +-pi
    ref = reference_poses(ego, plan)[0]
    assert ref[1, 2] == pytest.approx(3.08, abs=1e-12)  # 0.1 s: 3.0 + 0.4 * 0.2
    assert ref[2, 2] == pytest.approx(3.16 - 2 * np.pi, abs=1e-12)  # 0.2 s: 3.16 rad, wrapped to [-pi, pi)


def test_constant_turn_follows_the_circle_with_the_hand_derived_yaw_rate():
    speed, radius = 8.0, 40.0
    steering = np.arctan(PACIFICA.wheel_base / radius)
    ego = EgoState(0.0, 0.0, 0.0, vx=speed, steering_angle=steering)
    states = simulate(ego, circle_plan(speed, radius))[0]
    distance_to_centre = np.hypot(states[:, StateIndex.X], states[:, StateIndex.Y] - radius)
    # the reference is made of 0.5 s chords and the tracker is loose: within 15 cm of the circle
    np.testing.assert_allclose(distance_to_centre, radius, atol=0.15)
    # the yaw rate is v / R (within 5 %) and the speed is held
    np.testing.assert_allclose(states[1:, StateIndex.ANGULAR_VELOCITY], speed / radius, rtol=0.05)
    np.testing.assert_allclose(states[:, StateIndex.VELOCITY_X], speed, atol=0.01)
    assert tracking_error(ego, circle_plan(speed, radius))[0] < 0.2


def test_tracker_follows_a_feasible_lane_change_closely():
    t = (np.arange(8) + 1) * 0.5
    y = 3.5 * (1 - np.cos(np.pi * t / 4.0)) / 2
    dy = 3.5 * np.pi / 8.0 * np.sin(np.pi * t / 4.0)
    plan = np.stack([10.0 * t, y, np.arctan2(dy, 10.0)], axis=-1)
    ego = EgoState(0.0, 0.0, 0.0, vx=10.0)
    # NAVSIM's tracker lags a lateral manoeuvre by a few decimetres (it starts with zero steering)
    assert tracking_error(ego, plan)[0] < 0.5
    assert tracking_error(ego, straight_plan(10.0))[0] < 1e-9


def test_an_impossible_plan_is_not_followed():
    ego = EgoState(0.0, 0.0, 0.0, vx=10.0)
    jump = straight_plan(10.0) + np.array([0.0, 8.0, 0.0])  # 8 m sideways within 0.5 s
    assert tracking_error(ego, jump)[0] > 1.0


def test_stopped_ego_with_a_stationary_plan_stays_put():
    ego = EgoState(0.0, 0.0, 0.0)
    states = simulate(ego, np.zeros((8, 3)))[0]
    np.testing.assert_allclose(states[:, :3], 0.0, atol=1e-12)
    np.testing.assert_allclose(states[:, StateIndex.VELOCITY_X], 0.0, atol=1e-12)


def test_bicycle_step_applies_command_lags_and_clipping():
    model = KinematicBicycleModel()
    state = initial_state(EgoState(0.0, 0.0, 0.0, vx=10.0, ax=0.0, steering_angle=0.1))
    out = model.propagate(state[None], np.array([3.0]), np.array([2.0]), 0.1)[0]
    assert out[StateIndex.X] == pytest.approx(1.0)
    assert out[StateIndex.HEADING] == pytest.approx(10.0 * np.tan(0.1) / PACIFICA.wheel_base * 0.1)
    assert out[StateIndex.ACCELERATION_X] == pytest.approx(1.0)  # 1/3 of the way to 3 m/s^2
    assert out[StateIndex.VELOCITY_X] == pytest.approx(10.1)
    # steering: ideal 0.1 + 0.2 = 0.3, lag 2/3 of the way -> 0.1 + 0.2 * 2/3
    assert out[StateIndex.STEERING_ANGLE] == pytest.approx(0.1 + 0.2 * 2.0 / 3.0)
    saturated = model.propagate(state[None], np.array([0.0]), np.array([100.0]), 0.1)[0]
    assert saturated[StateIndex.STEERING_ANGLE] == pytest.approx(np.pi / 3)


def test_stopping_controller_brakes_proportionally_near_standstill():
    tracker = BatchLQRTracker()
    ref = np.zeros((1, 41, 3))
    speeds, curvatures = tracker.fit_profiles(ref)
    state = initial_state(EgoState(0.0, 0.0, 0.0, vx=0.15))[None]
    accel, steering_rate = tracker.command(0, state, ref, speeds, curvatures)
    assert accel[0] == pytest.approx(-0.5 * 0.15)
    assert steering_rate[0] == 0.0


def test_simulation_is_invariant_under_a_rigid_transform_of_the_scene():
    plan = circle_plan(9.0, 30.0) + np.array([0.0, 0.3, 0.0])
    ego = EgoState(0.0, 0.0, 0.0, vx=8.0, ax=0.5)
    base = simulate(ego, plan)[0]
    origin = np.array([120.0, -45.0, 2.5])
    moved_pose = relative_to_absolute(origin, ego.pose)
    moved = EgoState(*moved_pose, vx=8.0, ax=0.5)
    other = simulate(moved, plan)[0]  # the plan is in the ego frame: unchanged
    back = absolute_to_relative(origin, other[:, :3])
    np.testing.assert_allclose(back[:, :2], base[:, :2], atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (back[:, 2] - base[:, 2]))), 0.0, atol=1e-9)
    np.testing.assert_allclose(other[:, 3:], base[:, 3:], atol=1e-9)
    # the same plan given in the scene frame
    scene_plan = relative_to_absolute(moved.pose, plan)
    np.testing.assert_allclose(simulate(moved, scene_plan, plan_frame="scene")[0], other, atol=1e-9)


def test_each_plan_of_a_batch_is_simulated_as_if_alone():
    ego = EgoState(0.0, 0.0, 0.0, vx=10.0)
    plans = np.stack([straight_plan(10.0), circle_plan(10.0, 25.0), np.full((8, 3), 2.0)])
    together = simulate(ego, plans)
    for i, plan in enumerate(plans):
        np.testing.assert_array_equal(together[i], simulate(ego, plan)[0])


def test_other_plan_samplings_are_accepted():
    ego = EgoState(0.0, 0.0, 0.0, vx=10.0)
    dense = straight_plan(10.0, num=40, dt=0.1)
    states = simulate(ego, dense, interval_s=0.1)[0]
    np.testing.assert_allclose(states[:, StateIndex.X], np.arange(41), atol=1e-9)
    short = straight_plan(10.0, num=4)  # 2 s: the last pose is held afterwards
    ref = reference_poses(ego, short)[0]
    np.testing.assert_allclose(ref[20:, 0], 20.0, atol=1e-12)


def test_non_finite_plan_is_rejected_with_its_position():
    plan = straight_plan(10.0)
    plan[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"plans\[0\] pose 3"):
        simulate(EgoState(0.0, 0.0, 0.0), plan)
    with pytest.raises(ValueError, match="shape"):
        simulate(EgoState(0.0, 0.0, 0.0), np.zeros((8, 2)))


@pytest.mark.skipif(not (EXAMPLES / "examples.jsonl").exists(), reason="worked examples not available")
def test_matches_navsims_10hz_states_of_the_worked_examples():
    for line in (EXAMPLES / "examples.jsonl").read_text().splitlines():
        result = json.loads(line)
        scene = json.loads((EXAMPLES / result["scene"]).read_text())
        e = scene["ego"]
        ego = EgoState(e["x"], e["y"], e["heading"], e["vx"], e["vy"], e["ax"], e["ay"])
        # NAVSIM's Trajectory holds float32 poses
        plan = np.asarray(scene["trajectory"], dtype=np.float32).astype(np.float64)
        states = simulate(ego, plan)[0]
        expected = np.array([[s["x"], s["y"], s["heading"], s["v"], s["a"]] for s in result["v1"]["simulated_plan_10hz"]])
        got = states[:, [StateIndex.X, StateIndex.Y, StateIndex.HEADING, StateIndex.VELOCITY_X, StateIndex.ACCELERATION_X]]
        np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=result["scene"])
