"""How NAVSIM turns a plan into driven motion: 10 Hz reference, batch LQR tracker, kinematic bicycle.

A plan is a few rear-axle poses (NAVSIM: 8 poses at 0.5 s, in the ego frame at t = 0). NAVSIM does not
score the poses themselves but the motion of a simulated Chrysler Pacifica that tracks them:

1. `reference_poses`: the poses go to the scene frame, the current ego pose is prepended at t = 0 and the
   sequence is resampled at 10 Hz (linear in x, y; heading interpolated along the shorter arc) -> 41 poses.
2. `BatchLQRTracker`: fits a speed profile and a curvature profile to those poses once (regularised least
   squares: the speed comes from the pose spacing *projected on the poses' own headings*), then, every
   0.1 s, computes an acceleration (one-step LQR on the speed 1 s ahead, or a P controller when stopping)
   and a steering rate (LQR on the linearised lateral error over a 1 s window). nuPlan's default tuning.
3. `KinematicBicycleModel`: rear-axle bicycle, forward Euler at 0.1 s, first-order lag on the commands,
   steering clipped to +-60 deg, no lateral velocity.

`simulate` chains the three and returns (P, 41, 11) state arrays indexed by `StateIndex`. All functions are
vectorised over P plans; each plan's result is independent of the others in the batch.

Frames and units: scene frame (the frame the `EgoState` pose is given in), metres, radians, seconds.
Velocities and accelerations in the state arrays are the rear axle's, in the vehicle's body frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Optional

import numpy as np

from sim.conventions import LOG_INTERVAL_S, NUM_SIM_STATES, PACIFICA, SIM_INTERVAL_S, VehicleParameters
from sim.geometry import relative_to_absolute, wrap_angle
from sim.scene import EgoState


class StateIndex(IntEnum):
    """Columns of a simulated state array (NAVSIM's `StateIndex`). Body-frame rear-axle dynamics."""

    X = 0
    Y = 1
    HEADING = 2
    VELOCITY_X = 3
    VELOCITY_Y = 4
    ACCELERATION_X = 5
    ACCELERATION_Y = 6
    STEERING_ANGLE = 7
    STEERING_RATE = 8
    ANGULAR_VELOCITY = 9  # yaw rate
    ANGULAR_ACCELERATION = 10  # yaw acceleration


NUM_STATE_VALUES = len(StateIndex)
SE2 = slice(StateIndex.X, StateIndex.HEADING + 1)  # (x, y, heading) columns

__all__ = [
    "StateIndex",
    "NUM_STATE_VALUES",
    "SE2",
    "initial_state",
    "reference_poses",
    "sample_poses",
    "BatchLQRTracker",
    "KinematicBicycleModel",
    "track",
    "simulate",
    "tracking_error",
]


def _normalize_angle(angle: np.ndarray) -> np.ndarray:
    """Angle in [-pi, pi] via atan2 (the tracker's convention; `wrap_angle` is the motion model's)."""
    return np.arctan2(np.sin(angle), np.cos(angle))


def initial_state(ego: EgoState) -> np.ndarray:
    """(11,) state array of the current ego: pose, body-frame velocity/acceleration, steering angle.

    Steering rate, yaw rate and yaw acceleration are 0, as in NAVSIM's ego state built from a log frame.
    """
    state = np.zeros(NUM_STATE_VALUES, dtype=np.float64)
    state[SE2] = (ego.x, ego.y, ego.heading)
    state[StateIndex.VELOCITY_X : StateIndex.VELOCITY_Y + 1] = (ego.vx, ego.vy)
    state[StateIndex.ACCELERATION_X : StateIndex.ACCELERATION_Y + 1] = (ego.ax, ego.ay)
    state[StateIndex.STEERING_ANGLE] = ego.steering_angle
    return state


def sample_poses(
    knot_times_s: np.ndarray,
    knot_poses: np.ndarray,
    query_times_s: np.ndarray,
) -> np.ndarray:
    """Resample pose sequences at new times, as nuPlan's `InterpolatedTrajectory` does.

    knot_times_s: (K,) increasing; knot_poses: (P, K, 3); query_times_s: (Q,) -> (P, Q, 3).
    Times are rounded down to whole microseconds first (nuPlan's `TimePoint`) and clipped to the knots'
    range; x, y are linear in time; headings are unwrapped along each sequence, interpolated linearly and
    wrapped back to [-pi, pi).
    """
    knots_us = np.array([int(t * 1e6) for t in np.asarray(knot_times_s, dtype=np.float64)], dtype=np.float64)
    query_us = np.array([int(t * 1e6) for t in np.asarray(query_times_s, dtype=np.float64)], dtype=np.float64)
    query_us = np.clip(query_us, knots_us[0], knots_us[-1])
    poses = np.asarray(knot_poses, dtype=np.float64).copy()
    poses[..., 2] = np.unwrap(poses[..., 2], axis=-1)

    # scipy's interp1d arithmetic: y_lo + slope * (t - t_lo), with the segment found by searchsorted.
    hi = np.clip(np.searchsorted(knots_us, query_us, side="left"), 1, len(knots_us) - 1)
    lo = hi - 1
    fraction_den = knots_us[hi] - knots_us[lo]
    offset = query_us - knots_us[lo]
    y_lo, y_hi = poses[:, lo], poses[:, hi]
    slope = (y_hi - y_lo) / fraction_den[None, :, None]
    out = slope * offset[None, :, None] + y_lo
    out[..., 2] = wrap_angle(out[..., 2])
    return out


def reference_poses(
    ego: EgoState,
    plans: np.ndarray,
    interval_s: float = LOG_INTERVAL_S,
    plan_frame: str = "ego",
    num_steps: int = NUM_SIM_STATES - 1,
    step_s: float = SIM_INTERVAL_S,
) -> np.ndarray:
    """The 10 Hz reference NAVSIM tracks: (P, num_steps + 1, 3) rear-axle poses in the scene frame.

    plans: (P, N, 3) or (N, 3) rear-axle poses at t = interval_s, 2 * interval_s, ... N * interval_s,
      in the ego frame at t = 0 (`plan_frame="ego"`, NAVSIM's `Trajectory`) or in the scene frame ("scene").
    The current ego pose is prepended at t = 0; beyond the plan's last time the last pose is held.
    """
    plans = _as_plan_batch(plans)
    if plan_frame == "ego":
        plans = relative_to_absolute(ego.pose, plans)
    elif plan_frame != "scene":
        raise ValueError(f"plan_frame must be 'ego' or 'scene', got {plan_frame!r}")
    num_poses = plans.shape[1]
    # nuPlan's time grids: knots arange(0, H, dt) + dt, queries arange(0, T + dt, dt).
    horizon = num_poses * interval_s
    knot_times = np.concatenate([[0.0], np.arange(0.0, horizon, interval_s)[:num_poses] + interval_s])
    query_times = np.arange(0.0, num_steps * step_s + step_s, step_s)[: num_steps + 1]
    ego_pose = np.broadcast_to(ego.pose, (plans.shape[0], 1, 3))
    return sample_poses(knot_times, np.concatenate([ego_pose, plans], axis=1), query_times)


def _as_plan_batch(plans: np.ndarray) -> np.ndarray:
    plans = np.asarray(plans, dtype=np.float64)
    if plans.ndim == 2:
        plans = plans[None]
    if plans.ndim != 3 or plans.shape[-1] != 3 or plans.shape[1] < 1:
        raise ValueError(f"plans must have shape (P, N, 3) or (N, 3), got {plans.shape}")
    if not np.all(np.isfinite(plans)):
        bad = np.argwhere(~np.isfinite(plans))[0]
        raise ValueError(f"plans[{bad[0]}] pose {bad[1]} is not finite: {plans[bad[0], bad[1]].tolist()}")
    return plans


# --- tracker ------------------------------------------------------------------------------------------


def _profile_from_derivatives(initial: np.ndarray, derivatives: np.ndarray, dt: float) -> np.ndarray:
    """(B,) initial values + (B, M) rates -> (B, M + 1) values by Euler integration."""
    cumsum = np.cumsum(derivatives * dt, axis=-1)
    return initial[..., None] + np.concatenate([np.zeros(cumsum.shape[:-1] + (1,)), cumsum], axis=-1)


def _fit_speed_profile(poses: np.ndarray, dt: float, jerk_penalty: float) -> np.ndarray:
    """Least-squares initial speed + accelerations explaining the pose displacements.

    poses: (B, K, 3) -> speed profile (B, K - 1). Each displacement is modelled as (v_j * dt) along the
    heading of its starting pose, with a small quadratic penalty on the accelerations (see below).
    """
    batch, num_poses, _ = poses.shape
    m = num_poses - 1
    displacements = np.diff(poses[..., :2], axis=1).reshape(batch, -1)  # (B, 2M): dx0, dy0, dx1, ...
    unit = np.zeros_like(displacements)
    unit[:, 0::2] = np.cos(poses[:, :-1, 2])
    unit[:, 1::2] = np.sin(poses[:, :-1, 2])
    # design matrix: displacement j = (v0 + dt * sum_{i<j} a_i) * dt along heading j
    design = np.repeat(unit[..., None] * dt**2, m, axis=2)
    design[..., 0] = unit * dt
    later = np.repeat(np.triu(np.ones((m, m), dtype=bool), k=1), 2, axis=0)
    design[:, later] = 0.0
    # NAVSIM's batch port builds its "jerk" difference matrix with an overlapping assignment, so it is -I
    # plus a single +1 in the last row: the penalty acts on the accelerations themselves, not on their
    # differences. Reproduced as is, since it shapes every fitted speed profile.
    jerk = np.zeros((m - 2, m), dtype=np.float64)
    jerk[:, 1:-1] = -np.eye(m - 2)
    jerk[-1, -1] = 1.0
    design_t = design.transpose(0, 2, 1)
    normal = design_t @ design + jerk_penalty * (jerk.T @ jerk)[None]
    solution = np.matmul(np.linalg.pinv(normal) @ design_t, displacements[..., None])[..., 0]
    return _profile_from_derivatives(solution[:, 0], solution[:, 1:], dt)


def _fit_curvature_profile(
    poses: np.ndarray, speeds: np.ndarray, dt: float, rate_penalty: float, initial_penalty: float = 1e-10
) -> np.ndarray:
    """Least-squares initial curvature + curvature rates explaining the heading increments.

    poses: (B, K, 3), speeds: (B, K - 1) -> curvature profile (B, K - 1). A tiny penalty on the initial
    curvature keeps the problem well posed at zero speed.
    """
    heading_steps = _normalize_angle(np.diff(poses[..., 2], axis=1))
    batch, m = heading_steps.shape
    design = np.repeat(np.tri(m, dtype=np.float64)[None], batch, axis=0)
    design[:, :, 0] = speeds * dt
    design[:, 1:, 1:] *= (speeds * dt**2)[:, 1:, None]
    penalty = rate_penalty * np.eye(m)
    penalty[0, 0] = initial_penalty
    design_t = design.transpose(0, 2, 1)
    solution = np.matmul(np.linalg.pinv(design_t @ design + penalty) @ design_t, heading_steps[..., None])[..., 0]
    return _profile_from_derivatives(solution[:, 0], solution[:, 1:], dt)


@dataclass
class BatchLQRTracker:
    """nuPlan's LQR tracker with its default tuning, over a batch of references (NAVSIM `BatchLQRTracker`).

    Longitudinal: one-step LQR bringing the speed to the reference speed `horizon` steps ahead, holding
    the acceleration constant. Lateral: LQR on (lateral error, heading error, steering angle), linearised
    around the reference curvature and the resulting speed profile over `horizon` steps, with steering rate
    as input. Near standstill (current and reference speed <= stopping_speed) a P controller brakes instead.
    """

    q_longitudinal: float = 10.0
    r_longitudinal: float = 1.0
    q_lateral: tuple[float, float, float] = (1.0, 10.0, 0.0)
    r_lateral: float = 1.0
    dt: float = SIM_INTERVAL_S
    horizon: int = 10
    jerk_penalty: float = 1e-4
    curvature_rate_penalty: float = 1e-2
    stopping_gain: float = 0.5
    stopping_speed: float = 0.2
    wheel_base: float = PACIFICA.wheel_base

    def fit_profiles(self, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference poses (B, K, 3) -> (speed, curvature) profiles, each (B, K - 1)."""
        speeds = _fit_speed_profile(reference, self.dt, self.jerk_penalty)
        curvatures = _fit_curvature_profile(reference, speeds, self.dt, self.curvature_rate_penalty)
        return speeds, curvatures

    def command(
        self,
        step: int,
        states: np.ndarray,
        reference: np.ndarray,
        speed_profile: np.ndarray,
        curvature_profile: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(acceleration, steering rate) commands (B,) for the states (B, 11) at simulation step `step`."""
        target = reference[:, step]
        dx, dy = states[:, StateIndex.X] - target[:, 0], states[:, StateIndex.Y] - target[:, 1]
        lateral = np.stack(
            [
                -dx * np.sin(target[:, 2]) + dy * np.cos(target[:, 2]),
                _normalize_angle(states[:, StateIndex.HEADING] - target[:, 2]),
                states[:, StateIndex.STEERING_ANGLE],
            ],
            axis=-1,
        )
        speed = states[:, StateIndex.VELOCITY_X]

        last = speed_profile.shape[1] - 1
        ref_idx = min(step + self.horizon, last)
        ref_speed = speed_profile[:, ref_idx]
        curvatures = np.empty((len(states), self.horizon), dtype=np.float64)
        n_ref = ref_idx - step
        curvatures[:, :n_ref] = curvature_profile[:, step:ref_idx]
        curvatures[:, n_ref:] = curvature_profile[:, ref_idx, None]

        stopping = (ref_speed <= self.stopping_speed) & (speed <= self.stopping_speed)
        lookahead = self.horizon * self.dt
        inverse = -1.0 / (lookahead * self.q_longitudinal * lookahead + self.r_longitudinal)
        # longitudinal LQR where moving, P controller (and no steering) where stopping
        accel = np.where(stopping, -self.stopping_gain * (speed - ref_speed),
                         inverse * lookahead * self.q_longitudinal * (speed - ref_speed))
        held = np.repeat(accel[:, None], self.horizon, axis=-1)
        speeds = _profile_from_derivatives(speed, held, self.dt)[:, : self.horizon]
        with np.errstate(invalid="ignore", over="ignore"):
            steering_rate = np.where(stopping, 0.0, self._lateral_command(lateral, speeds, curvatures))
        return accel, steering_rate

    def _lateral_command(self, lateral: np.ndarray, speeds: np.ndarray, curvatures: np.ndarray) -> np.ndarray:
        """Steering rate (B,) from the lateral state (B, 3) and the (B, horizon) speed/curvature window.

        Over the window the linearised error dynamics are x_{k+1} = S_k x_k + b u + g_k with
        S_k = [[1, v_k dt, 0], [0, 1, v_k dt / L], [0, 0, 1]], b = (0, 0, dt), g_k = (0, -v_k kappa_k dt, 0)
        and u held constant; composing them gives x_N = A x_0 + B u + g. The matrices are unit upper
        triangular, so every entry of the composition is a running sum; written with cumulative sums it is
        the same arithmetic, in the same order, as multiplying the matrices step by step (NAVSIM's einsum).
        """
        dt = self.dt
        s01 = speeds * dt  # (B, horizon)
        s12 = speeds * dt / self.wheel_base
        affine = -speeds * curvatures * dt

        def running(increments):  # (B, n, horizon) -> values before each step, values after the last step
            sums = np.cumsum(increments, axis=-1)
            before = np.zeros_like(sums)
            before[..., 1:] = sums[..., :-1]
            return before, sums[..., -1]

        dts = np.full_like(speeds, dt)
        before, after = running(np.stack([s12, s01, dts, affine], axis=1))
        a12_before, b2_before, g1_before = before[:, 0], before[:, 2], before[:, 3]
        a12, a01, b2, g1 = after[:, 0], after[:, 1], after[:, 2], after[:, 3]
        before, after = running(np.stack([s01 * a12_before, s12 * b2_before, s01 * g1_before], axis=1))
        a02, b1, g0 = after[:, 0], after[:, 1], after[:, 2]
        _, b0 = running((s01 * before[:, 1])[:, None])
        b0 = b0[:, 0]

        x0, x1, x2 = lateral[:, 0], lateral[:, 1], lateral[:, 2]
        free0 = (x0 + a01 * x1) + a02 * x2 + g0
        free1 = (0.0 * x0 + x1) + a12 * x2 + g1
        free2 = (0.0 * x0 + 0.0 * x1) + x2 + 0.0
        free1 = np.arctan2(np.sin(free1), np.cos(free1))
        free2 = np.arctan2(np.sin(free2), np.cos(free2))
        q0, q1, q2 = self.q_lateral
        w0, w1, w2 = b0 * q0, b1 * q1, b2 * q2
        inverse = -1.0 / ((w0 * b0 + w1 * b1) + w2 * b2 + self.r_lateral)
        return inverse * ((w0 * free0 + w1 * free1) + w2 * free2)


@dataclass
class KinematicBicycleModel:
    """Rear-axle kinematic bicycle with first-order command lags (nuPlan `KinematicBicycleModel`)."""

    wheel_base: float = PACIFICA.wheel_base
    max_steering_angle: float = np.pi / 3
    accel_time_constant: float = 0.2
    steering_time_constant: float = 0.05

    def propagate(self, states: np.ndarray, accel_cmd: np.ndarray, steering_rate_cmd: np.ndarray, dt: float) -> np.ndarray:
        """States (B, 11) + commands (B,) -> states (B, 11) after `dt` seconds (forward Euler)."""
        speed = states[:, StateIndex.VELOCITY_X]
        accel = states[:, StateIndex.ACCELERATION_X]
        steering = states[:, StateIndex.STEERING_ANGLE]
        # low-pass filtered commands
        lagged_accel = dt / (dt + self.accel_time_constant) * (accel_cmd - accel) + accel
        ideal_steering = dt * steering_rate_cmd + steering
        lagged_steering = dt / (dt + self.steering_time_constant) * (ideal_steering - steering) + steering
        lagged_steering_rate = (lagged_steering - steering) / dt

        heading = states[:, StateIndex.HEADING]
        out = states.copy()
        out[:, StateIndex.X] = states[:, StateIndex.X] + speed * np.cos(heading) * dt
        out[:, StateIndex.Y] = states[:, StateIndex.Y] + speed * np.sin(heading) * dt
        out[:, StateIndex.HEADING] = wrap_angle(heading + speed * np.tan(steering) / self.wheel_base * dt)
        out[:, StateIndex.VELOCITY_X] = speed + lagged_accel * dt
        out[:, StateIndex.VELOCITY_Y] = 0.0
        out[:, StateIndex.STEERING_ANGLE] = np.clip(
            steering + lagged_steering_rate * dt, -self.max_steering_angle, self.max_steering_angle
        )
        out[:, StateIndex.ANGULAR_VELOCITY] = (
            out[:, StateIndex.VELOCITY_X] * np.tan(out[:, StateIndex.STEERING_ANGLE]) / self.wheel_base
        )
        out[:, StateIndex.ACCELERATION_X] = lagged_accel
        out[:, StateIndex.ACCELERATION_Y] = 0.0
        out[:, StateIndex.ANGULAR_ACCELERATION] = (
            out[:, StateIndex.ANGULAR_VELOCITY] - states[:, StateIndex.ANGULAR_VELOCITY]
        ) / dt
        out[:, StateIndex.STEERING_RATE] = lagged_steering_rate
        return out


def track(
    reference: np.ndarray,
    start: np.ndarray,
    tracker: Optional[BatchLQRTracker] = None,
    model: Optional[KinematicBicycleModel] = None,
) -> np.ndarray:
    """Drive the bicycle along references: (P, K, 3) scene-frame poses, start state (11,) or (P, 11)
    -> (P, K, 11) simulated states; row 0 is the start state."""
    tracker = tracker or BatchLQRTracker()
    model = model or KinematicBicycleModel(wheel_base=tracker.wheel_base)
    reference = np.asarray(reference, dtype=np.float64)
    num_plans, num_steps = reference.shape[:2]
    states = np.zeros((num_plans, num_steps, NUM_STATE_VALUES), dtype=np.float64)
    states[:, 0] = start
    speed_profile, curvature_profile = tracker.fit_profiles(reference)
    # nuPlan integrates over the difference of two microsecond time points: 100000 * 1e-6, not 0.1.
    model_dt = int(round(tracker.dt * 1e6)) * 1e-6
    for step in range(num_steps - 1):
        accel, steering_rate = tracker.command(step, states[:, step], reference, speed_profile, curvature_profile)
        states[:, step + 1] = model.propagate(states[:, step], accel, steering_rate, model_dt)
    return states


def simulate(
    ego: EgoState,
    plans: np.ndarray,
    interval_s: float = LOG_INTERVAL_S,
    plan_frame: str = "ego",
    vehicle: VehicleParameters = PACIFICA,
) -> np.ndarray:
    """NAVSIM's simulation of plans: (P, N, 3) rear-axle poses (see `reference_poses`) -> (P, 41, 11) states
    at t = 0, 0.1, ..., 4.0 s in the scene frame, columns `StateIndex`. Row 0 is the current ego state."""
    reference = reference_poses(ego, plans, interval_s=interval_s, plan_frame=plan_frame)
    tracker = BatchLQRTracker(wheel_base=vehicle.wheel_base)
    return track(reference, initial_state(ego), tracker)


def tracking_error(
    ego: EgoState,
    plans: np.ndarray,
    interval_s: float = LOG_INTERVAL_S,
    plan_frame: str = "ego",
    vehicle: VehicleParameters = PACIFICA,
) -> np.ndarray:
    """(P,) largest distance (m) between the simulated rear axle and its 10 Hz reference over 0-4 s.

    A plan whose tracking error is small (a few cm) is one the NAVSIM ego can actually drive.
    """
    reference = reference_poses(ego, plans, interval_s=interval_s, plan_frame=plan_frame)
    tracker = BatchLQRTracker(wheel_base=vehicle.wheel_base)
    states = track(reference, initial_state(ego), tracker)
    return np.max(np.linalg.norm(states[..., :2] - reference[..., :2], axis=-1), axis=-1)
