"""Other road users: their motion on the fine 0.1 s grid and their conversion to the scene's 2 Hz `Agent`s.

Background traffic is non-reactive (NAVSIM replays logs): every track is fixed before the ego plans.
Behaviours: lane followers with IDM (queues, stop-and-go, cross traffic obeying its lights), braking leads,
cut-ins (a lane change into the ego lane), oncoming cars, swerving around an obstacle, pedestrians and
cyclists crossing, parked cars.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from sim.geometry import box_corners, wrap_angle
from sim.scene import Agent
from sim.scenarios.longitudinal import FINE_DT, FINE_TIMES, IDM, TWO_HZ, StopRule, drive_from_start
from sim.paths import Path


@dataclass(frozen=True)
class Dimensions:
    length: float
    width: float
    height: float


@dataclass
class Track:
    """A road user on the fine grid: box-centre poses (66, 3) and velocities (66, 2) in the world frame.

    role: what it does in the scenario ("lead", "cut_in", "oncoming", "crossing", "cross_traffic",
    "parked", "queue", "background"); the reasoning labels and the negatives read it."""

    token: str
    type: str
    dims: Dimensions
    poses: np.ndarray
    velocities: np.ndarray
    role: str = "background"
    present: np.ndarray = field(default_factory=lambda: np.ones(len(FINE_TIMES), dtype=bool))

    def corners(self) -> np.ndarray:
        """(66, 4, 2) box corners (far away where absent)."""
        corners = box_corners(self.poses, self.dims.length, self.dims.width)
        return np.where(self.present[:, None, None], corners, 1e6)

    @property
    def speed(self) -> np.ndarray:
        return np.linalg.norm(self.velocities, axis=-1)

    def to_agent(self) -> Agent:
        """The 2 Hz scene agent (NaN rows where absent)."""
        poses = self.poses[TWO_HZ].copy()
        velocities = self.velocities[TWO_HZ].copy()
        absent = ~self.present[TWO_HZ]
        poses[absent] = np.nan
        velocities[absent] = np.nan
        return Agent(self.token, self.type, self.dims.length, self.dims.width, self.dims.height, poses, velocities)


def vehicle_dims(rng: np.random.Generator, allow_truck: bool = True) -> Dimensions:
    if allow_truck and rng.random() < 0.12:
        return Dimensions(float(rng.uniform(7.0, 10.0)), float(rng.uniform(2.4, 2.55)), float(rng.uniform(3.0, 3.6)))
    return Dimensions(float(rng.uniform(4.2, 5.2)), float(rng.uniform(1.8, 2.0)), float(rng.uniform(1.45, 1.9)))


def pedestrian_dims(rng: np.random.Generator) -> Dimensions:
    return Dimensions(float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.5, 0.8)), float(rng.uniform(1.55, 1.9)))


def bicycle_dims(rng: np.random.Generator) -> Dimensions:
    return Dimensions(float(rng.uniform(1.7, 1.9)), float(rng.uniform(0.6, 0.8)), float(rng.uniform(1.6, 1.8)))


def _velocities(poses: np.ndarray) -> np.ndarray:
    if len(poses) < 2:
        return np.zeros((len(poses), 2))
    return np.gradient(poses[:, :2], FINE_DT, axis=0)


def track_on_path(
    token: str,
    kind: str,
    dims: Dimensions,
    path: Path,
    s: np.ndarray,
    d: Optional[np.ndarray] = None,
    role: str = "background",
) -> Track:
    """A road user whose box centre sits at arc length s(t) and lateral offset d(t) of `path`."""
    s = np.asarray(s, dtype=np.float64)
    d = np.zeros_like(s) if d is None else np.asarray(d, dtype=np.float64)
    ds = np.gradient(s, FINE_DT)
    dd = np.gradient(d, FINE_DT)
    slope = np.where(np.abs(ds) > 0.3, dd / np.where(np.abs(ds) > 0.3, ds, 1.0), 0.0)
    poses = path.frenet_to_pose(s, d, slope)
    velocities = _velocities(poses)
    return Track(token, kind, dims, poses, velocities, role)


def parked(token: str, dims: Dimensions, pose: np.ndarray, kind: str = "vehicle", role: str = "parked") -> Track:
    """A road user standing still at `pose` (x, y, heading) the whole time."""
    poses = np.tile(np.asarray(pose, dtype=np.float64), (len(FINE_TIMES), 1))
    return Track(token, kind, dims, poses, np.zeros((len(FINE_TIMES), 2)), role)


def constant_speed_s(s_at_zero: float, speed: float) -> np.ndarray:
    """Arc lengths (66,) of a road user moving at constant speed, at `s_at_zero` when t = 0."""
    return s_at_zero + speed * FINE_TIMES


def braking_speeds(speed: float, t_brake: float, decel: float, v_final: float = 0.0, jerk: float = 6.0) -> np.ndarray:
    """Speeds (66,) of a road user cruising at `speed` that brakes from `t_brake` with a deceleration
    ramping up to `decel` (> 0) at `jerk`, down to `v_final` (then it holds that speed)."""
    n = len(FINE_TIMES)
    v = np.empty(n)
    a_now = 0.0
    v[0] = speed
    for k in range(n - 1):
        braking = FINE_TIMES[k] >= t_brake and v[k] > v_final
        target = -decel if braking else 0.0
        a_now = float(np.clip(target, a_now - jerk * FINE_DT, a_now + jerk * FINE_DT))
        v[k + 1] = max(v_final if braking else 0.0, v[k] + a_now * FINE_DT)
        if v[k + 1] <= v_final:
            a_now = 0.0
    return v


def speed_profile_s(s_at_zero: float, speeds: np.ndarray) -> np.ndarray:
    """Arc lengths (66,) from a speed profile (66,) (trapezoidal integration), at `s_at_zero` when t = 0."""
    s = np.concatenate([[0.0], np.cumsum((speeds[1:] + speeds[:-1]) / 2.0 * FINE_DT)])
    return s - s[15] + s_at_zero


def idm_followers(
    path: Path,
    leader_s: Optional[np.ndarray],
    leader_length: float,
    starts: list[tuple[float, float]],
    lengths: list[float],
    idm: IDM,
    stops: list[StopRule] = (),
) -> list[np.ndarray]:
    """A queue on one lane: each car follows the one before it with IDM from t = -1.5 s.

    leader_s: (66,) centre arc length of the first car's leader (None: free road); starts: (s, v) of each
    follower at t = -1.5 s, front to back. Returns the centre arc lengths (66,) of every follower."""
    result = []
    prev_s, prev_len = leader_s, leader_length
    for (s_start, v_start), length in zip(starts, lengths):
        if prev_s is None:
            rear, speed = np.full((0, len(FINE_TIMES)), np.nan), np.full((0, len(FINE_TIMES)), np.nan)
        else:
            rear = (prev_s - prev_len / 2.0)[None]
            speed = np.gradient(prev_s, FINE_DT)[None]
        profile = drive_from_start(idm, s_start, v_start, length / 2.0, rear, speed, list(stops))
        result.append(profile.s)
        prev_s, prev_len = profile.s, length
    return result


def crossing_walk(
    start: np.ndarray,
    heading: float,
    speed: float,
    t_start: float,
    accel: float = 1.5,
) -> np.ndarray:
    """Poses (66, 3) of a pedestrian or cyclist that stands at `start` until `t_start` (s, may be before
    the grid begins: it is then already under way), then walks / rides straight along `heading`, speeding
    up at `accel` to `speed`."""
    u = np.maximum(FINE_TIMES - t_start, 0.0)
    ramp = speed / accel
    dist = np.where(u <= ramp, 0.5 * accel * u**2, 0.5 * accel * ramp**2 + speed * (u - ramp))
    direction = np.array([np.cos(heading), np.sin(heading)])
    xy = np.asarray(start)[None] + dist[:, None] * direction[None]
    return np.concatenate([xy, np.full((len(FINE_TIMES), 1), wrap_angle(heading))], axis=1)


def free_track(token: str, kind: str, dims: Dimensions, poses: np.ndarray, role: str) -> Track:
    """A track from poses (66, 3); velocities by finite differences."""
    return Track(token, kind, dims, poses, _velocities(poses), role)

