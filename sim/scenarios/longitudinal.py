"""Longitudinal control along a path: the Intelligent Driver Model with leaders, stop rules, comfort limits.

Everyone who drives in the synthetic world uses it: the expert ego, background cars following each
other, cross traffic stopping at its lights. It is one-dimensional: positions are arc lengths along the
follower's own path, leaders are given as the arc length of their REAR along that path (NaN when not in
the follower's corridor), stop rules as a position the follower's FRONT must not pass while active.

Time runs on the fine grid `FINE_TIMES` (0.1 s, t = -1.5 ... 5.0 s, 66 steps), a superset of NAVSIM's 2 Hz
agent grid (every 5th step) and of the 10 Hz grid the scorer simulates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from sim import conventions as C

FINE_DT = 0.1
FINE_TIMES = np.round(np.arange(-15, 51) * FINE_DT, 10)  # -1.5 ... 5.0 s
CURRENT = 15  # index of t = 0 in FINE_TIMES
TWO_HZ = np.arange(0, len(FINE_TIMES), 5)  # FINE_TIMES[TWO_HZ] == conventions.AGENT_TIMES_S
assert np.allclose(FINE_TIMES[TWO_HZ], C.AGENT_TIMES_S)


@dataclass(frozen=True)
class IDM:
    """Intelligent Driver Model parameters plus comfort limits (m, s, m/s, m/s^2, m/s^3).

    The defaults are a calm driver inside NAVSIM's comfort bounds (a_lon in (-4.05, 2.40), jerk < 4.13)."""

    target_speed: float
    a_max: float = 1.8
    b_comf: float = 2.8
    min_gap: float = 2.0
    headway: float = 1.3
    stop_gap: float = 0.8  # how far before an active stop rule the front comes to rest
    delta: float = 4.0
    a_min: float = -3.8  # hardest braking allowed
    jerk_max: float = 3.5
    reaction_delay: float = -math.inf  # leaders/stops are ignored until this time (s; the "late brake" driver)
    anticipation: float = 1.0  # weight of the closing-speed term (< 1: reacts late to a braking lead)

    def with_(self, **changes) -> "IDM":
        return replace(self, **changes)

    def acceleration(self, v: float, obstacles: list[tuple[float, float, float]], target: float | None = None) -> float:
        """IDM acceleration at own speed v against obstacles (gap m, closing speed m/s (> 0 closing), minimum
        gap m); `target` lowers the target speed locally (e.g. before a bend)."""
        v0 = max(self.target_speed if target is None else min(target, self.target_speed), 0.1)
        free = self.a_max * (1.0 - (v / v0) ** self.delta)
        if v > v0:  # above the target speed: slow down calmly instead of IDM's steep free-road term
            free = max(free, -self.b_comf)
        if not obstacles:
            return free
        brake_term = self.anticipation * v / (2.0 * math.sqrt(self.a_max * self.b_comf))
        interaction = 0.0
        for gap, closing, min_gap in obstacles:
            desired = min_gap + max(0.0, v * self.headway + closing * brake_term)
            interaction = max(interaction, (desired / max(gap, 1e-3)) ** 2)
        return free - self.a_max * interaction


@dataclass(frozen=True)
class SpeedCap:
    """A limit on the target speed along a path: v_allow (N,) at arc lengths s (N,), already lowered ahead
    of each bend so that braking into it needs at most `decel`."""

    s: np.ndarray
    v_allow: np.ndarray

    @staticmethod
    def from_curvature(s: np.ndarray, curvature: np.ndarray, lateral_accel: float, yaw_rate: float, decel: float = 1.5) -> "SpeedCap":
        """Limits from a lateral acceleration and a yaw rate: v^2 |k| <= lateral_accel, v |k| <= yaw_rate."""
        kappa = np.maximum(np.abs(curvature), 1e-4)
        v_cap_sq = np.minimum(lateral_accel / kappa, (yaw_rate / kappa) ** 2)
        # v_allow(s_i)^2 = min over j >= i of (v_cap_j^2 + 2 decel (s_j - s_i))
        reach = v_cap_sq + 2.0 * decel * s
        best = np.minimum.accumulate(reach[::-1])[::-1]
        return SpeedCap(np.asarray(s, dtype=np.float64), np.sqrt(np.maximum(best - 2.0 * decel * s, 0.0)))

    def at(self, s: float) -> float:
        return float(np.interp(s, self.s, self.v_allow))


@dataclass
class StopRule:
    """A position the follower's front must not pass while `active` (fine grid, bool (66,)).

    kind: "red_light", "stop_sign", "yield" (waiting for another road user), "phantom" (a negative's
    imaginary reason to stop). A stop sign (`hold_s` > 0) is released for good once the follower has stood
    still within `near_m` of it for `hold_s` seconds."""

    s: float
    active: np.ndarray
    kind: str
    hold_s: float = 0.0
    near_m: float = 4.0
    token: Optional[str] = None  # the road user a yield waits for


@dataclass
class Profile:
    """A longitudinal profile on the fine grid: arc length s, speed v, acceleration a (66,)."""

    s: np.ndarray
    v: np.ndarray
    a: np.ndarray


def history_profile(s0: float, v0: float, a0: float) -> Profile:
    """The past (t = -1.5 ... 0) of a follower that drove with constant acceleration a0 into (s0, v0).

    Speeds are clipped at 0 (the follower stood still before it started, or was stopped already)."""
    t = FINE_TIMES[: CURRENT + 1]
    v = np.maximum(0.0, v0 + a0 * t)
    # integrate backwards from s0
    ds = (v[1:] + v[:-1]) / 2.0 * FINE_DT
    s = s0 - np.concatenate([np.cumsum(ds[::-1])[::-1], [0.0]])
    a = np.where(v > 0.0, a0, 0.0)
    return Profile(s, v, a)


def simulate(
    idm: IDM,
    s_start: float,
    v_start: float,
    a_start: float,
    front: float,
    leader_rear: np.ndarray,
    leader_speed: np.ndarray,
    stops: list[StopRule],
    start_index: int = CURRENT,
    speed_cap: SpeedCap | None = None,
) -> Profile:
    """Drive from `start_index` to the end of the fine grid; returns the full-grid profile whose entries
    before `start_index` are NaN (fill them with a history).

    leader_rear / leader_speed: (K, 66) arc length of each leader's rear along the follower's path and its
    speed along the path; NaN where it is not in the follower's corridor. Leaders whose rear is behind the
    follower's reference point are ignored (they are beside or behind it). speed_cap: a position-dependent
    limit on the target speed (curves)."""
    n = len(FINE_TIMES)
    leader_rear = np.asarray(leader_rear, dtype=np.float64).reshape(-1, n)
    leader_speed = np.asarray(leader_speed, dtype=np.float64).reshape(-1, n)
    seen = np.isfinite(leader_rear)
    keep = seen.any(axis=1)
    rears = np.where(seen[keep], leader_rear[keep], -np.inf).T.tolist()  # (n, K') python floats
    speeds = np.nan_to_num(leader_speed[keep]).T.tolist()
    actives = [stop.active.tolist() for stop in stops]
    s = [math.nan] * n
    v = [math.nan] * n
    a = [math.nan] * n
    s[start_index], v[start_index], a[start_index] = float(s_start), float(v_start), float(a_start)
    released = [False] * len(stops)
    still_time = [0.0] * len(stops)
    jerk_step = idm.jerk_max * FINE_DT
    for k in range(start_index, n - 1):
        sk, vk = s[k], v[k]
        front_pos = sk + front
        obstacles = []
        if FINE_TIMES[k] >= idm.reaction_delay - 1e-9:
            for rear, speed in zip(rears[k], speeds[k]):
                if rear > sk:
                    obstacles.append((rear - front_pos, vk - speed, idm.min_gap))
            for i, stop in enumerate(stops):
                if released[i] or not actives[i][k]:
                    continue
                gap = stop.s - front_pos
                if stop.hold_s > 0.0 and vk < 0.1 and gap < stop.near_m:
                    still_time[i] += FINE_DT
                    if still_time[i] >= stop.hold_s - 1e-9:
                        released[i] = True
                        continue
                if gap < -2.0:  # already well past it: nothing to stop for any more
                    continue
                obstacles.append((gap, vk, idm.stop_gap))
        target = None if speed_cap is None else speed_cap.at(sk)
        command = min(max(idm.acceleration(vk, obstacles, target), idm.a_min), idm.a_max)
        command = min(max(command, a[k] - jerk_step), a[k] + jerk_step)
        v_next = vk + command * FINE_DT
        if v_next < 0.0:
            v_next = 0.0
            command = -vk / FINE_DT
        a[k] = command
        v[k + 1] = v_next
        s[k + 1] = sk + 0.5 * (vk + v_next) * FINE_DT
        a[k + 1] = command
    s, v, a = np.array(s), np.array(v), np.array(a)
    return Profile(s, v, a)


def drive(
    idm: IDM,
    s0: float,
    v0: float,
    a0: float,
    front: float,
    leader_rear: np.ndarray,
    leader_speed: np.ndarray,
    stops: list[StopRule],
    speed_cap: SpeedCap | None = None,
) -> Profile:
    """History (constant acceleration a0 into (s0, v0) at t = 0) followed by IDM driving to t = 5 s."""
    past = history_profile(s0, v0, a0)
    future = simulate(idm, s0, v0, a0 if v0 > 0.05 else 0.0, front, leader_rear, leader_speed, stops, speed_cap=speed_cap)
    h = CURRENT
    return Profile(
        np.concatenate([past.s[:h], future.s[h:]]),
        np.concatenate([past.v[:h], future.v[h:]]),
        np.concatenate([past.a[:h], future.a[h:]]),
    )


def drive_from_start(
    idm: IDM,
    s_start: float,
    v_start: float,
    front: float,
    leader_rear: np.ndarray,
    leader_speed: np.ndarray,
    stops: list[StopRule],
) -> Profile:
    """IDM driving over the whole fine grid from t = -1.5 s (background traffic)."""
    return simulate(idm, s_start, v_start, 0.0, front, leader_rear, leader_speed, stops, start_index=0)


def active_mask(states: list[str], stop_states: tuple[str, ...] = ("red", "yellow")) -> np.ndarray:
    """Fine-grid (66,) mask of a light's 2 Hz states (14 frames) being one of `stop_states`.

    A 2 Hz state holds from its frame to the next one."""
    two_hz = np.array([state in stop_states for state in states])
    index = np.minimum(np.arange(len(FINE_TIMES)) // 5, len(two_hz) - 1)
    return two_hz[index]
