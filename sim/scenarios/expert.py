"""The rule-based expert: follows the route centre line (with lateral offsets for nudges and corrections),
obeys lights and stop signs, keeps IDM gaps to whatever is in its corridor and yields to road users whose
future paths cross it. It knows the (non-reactive) future of everyone, like the human in a driving log.

Planning loop: drive with IDM (leaders = whatever is in the corridor ahead; rules = lights, signs) -> find
the first box overlap, including NAVSIM's time-to-collision look-ahead -> add a yield rule for that road
user (wait as close to the conflict as the ego's box stays clear of it, in force as late as gentle braking
allows, until it has passed) -> repeat. The accepted plan is then driven by NAVSIM's own tracker and
bicycle model (`sim.kinematics`): the driven motion must follow it closely, stay on the drivable area and
hit nothing. A plan failing any check is rejected (`Plan.ok` False with a reason) and the scenario redrawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from sim.conventions import NAVSIM_PLAN_POSES, NUM_SIM_STATES, PACIFICA
from sim.geometry import absolute_to_relative, wrap_angle
from sim.kinematics import simulate as navsim_simulate
from sim.scene import EgoState
from sim.scenarios.checks import DrivableArea, Obstacles, boxes_overlap, first_violation, inflated_ego_corners
from sim.scenarios.longitudinal import CURRENT, FINE_DT, FINE_TIMES, Profile, StopRule, drive
from sim.paths import LateralProfile, Path
from sim.scenarios.scenario import Scenario

EGO_FRONT = PACIFICA.front_length  # rear axle -> front bumper
EGO_HALF_WIDTH = PACIFICA.width / 2.0
MAX_YIELDS = 6
YIELD_STOP_BEFORE_M = 0.3  # a yield rule sits this far before the conflict (plus the IDM stop gap)
# A yield comes into force this long before the other road user reaches the conflict (shortest first;
# None: from the start); braking harder than GENTLE_BRAKING for a later one is not worth the progress.
YIELD_LEADS_S = (1.0, 2.0, 3.5, None)
GENTLE_BRAKING = -3.0
# While waiting, the ego's box keeps this clear (sideways, lengthwise) of the road user it waits for.
YIELD_CLEARANCE_LAT_M = 0.3
YIELD_CLEARANCE_LON_M = 0.6

# Comfort limits of an accepted plan (inside NAVSIM's bounds with a margin for the tracker's smoothing).
MAX_ACCEL = 2.2
MIN_ACCEL = -3.9
MAX_YAW_RATE = 0.8
# NAVSIM drives a plan with an LQR tracker and a bicycle model: the driven motion must stay this close
# sideways; along the path it may lag more (the tracker's acceleration lag when braking).
MAX_LATERAL_DEVIATION_M = 0.8
MAX_LONGITUDINAL_DEVIATION_M = 2.0


@dataclass
class Corridor:
    """Other road users as seen along the ego's corridor: rear arc length and speed along the route
    (M, 66), NaN where the object is outside the corridor."""

    tokens: list[str]
    rear: np.ndarray
    speed: np.ndarray
    inside: np.ndarray  # (M, 66) bool

    def without(self, tokens: set[str]) -> "Corridor":
        keep = np.array([t not in tokens for t in self.tokens], dtype=bool)
        return Corridor([t for t in self.tokens if t not in tokens], self.rear[keep], self.speed[keep], self.inside[keep])

    def index(self, token: str) -> int:
        return self.tokens.index(token)


def corridor(route: Path, lateral: LateralProfile, tracks: list, statics: list, margin: float = 0.25) -> Corridor:
    """Project every road user and static object onto the route and keep what overlaps the ego's corridor
    (its box width plus `margin`, following the lateral profile)."""
    n = len(FINE_TIMES)
    tokens, centres, headings, velocities, half_l, half_w, present = [], [], [], [], [], [], []
    for track in tracks:
        tokens.append(track.token)
        centres.append(track.poses[:, :2])
        headings.append(track.poses[:, 2])
        velocities.append(track.velocities)
        half_l.append(track.dims.length / 2.0)
        half_w.append(track.dims.width / 2.0)
        present.append(track.present)
    for obj in statics:
        tokens.append(obj.token)
        centres.append(np.tile([obj.x, obj.y], (n, 1)))
        headings.append(np.full(n, obj.heading))
        velocities.append(np.zeros((n, 2)))
        half_l.append(obj.length / 2.0)
        half_w.append(obj.width / 2.0)
        present.append(np.ones(n, dtype=bool))
    if not tokens:
        empty = np.zeros((0, n))
        return Corridor([], empty, empty, empty.astype(bool))
    centres = np.stack(centres)
    s_c, d_c = route.project(centres)
    path_heading = route.heading_at(s_c)
    rel = wrap_angle(np.stack(headings) - path_heading)
    hl, hw = np.array(half_l)[:, None], np.array(half_w)[:, None]
    ext_s = np.abs(hl * np.cos(rel)) + np.abs(hw * np.sin(rel))
    ext_d = np.abs(hl * np.sin(rel)) + np.abs(hw * np.cos(rel))
    d_ego, _ = lateral(s_c)
    inside = (np.abs(d_c - d_ego) < ext_d + EGO_HALF_WIDTH + margin) & np.stack(present)
    inside &= (s_c > 0.0) & (s_c < route.length)
    tangent = np.stack([np.cos(path_heading), np.sin(path_heading)], axis=-1)
    speed_along = np.einsum("mtj,mtj->mt", np.stack(velocities), tangent)
    rear = np.where(inside, s_c - ext_s, np.nan)
    return Corridor(tokens, rear, np.where(inside, speed_along, np.nan), inside)


@dataclass
class Plan:
    """The expert's (or a negative driver's) drive on the fine grid, world frame."""

    profile: Profile
    poses: np.ndarray  # (66, 3) rear axle
    speeds: np.ndarray  # (66,) rear-axle speed along the actual path
    lateral: LateralProfile
    yields: list[StopRule]
    ok: bool = True
    reason: str = ""
    ahead: tuple[str, ...] = ()  # road users in the ego's corridor ahead of it at some time from t = 0

    def future_poses(self) -> np.ndarray:
        """(10, 3) rear-axle poses at t = 0.5 ... 5.0 s (world frame)."""
        return self.poses[CURRENT + 5 :: 5]

    def waited_for(self) -> list[str]:
        """Road users the plan has a yield rule for."""
        return [y.token for y in self.yields if y.token is not None]

    def slowed_for(self, tokens) -> list[str]:
        """Of `tokens`, those the ego waited for, or that were in its corridor ahead while it slowed down
        (by 1 m/s or more below its current speed)."""
        slowed = float(np.min(self.speeds[CURRENT:])) < float(self.speeds[CURRENT]) - 1.0
        return [t for t in tokens if t in self.waited_for() or (slowed and t in self.ahead)]


def ego_poses(route: Path, lateral: LateralProfile, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rear-axle poses (66, 3) along the route with lateral offsets, and the stretch factor of the actual
    path relative to the route arc length (speed = ds/dt * stretch)."""
    d, dp = lateral(s)
    poses = route.frenet_to_pose(s, d, dp)
    stretch = np.sqrt((1.0 - route.curvature_at(s) * d) ** 2 + dp**2)
    return poses, stretch


def realise(route: Path, lateral: LateralProfile, profile: Profile, yields: list[StopRule]) -> Plan:
    poses, stretch = ego_poses(route, lateral, profile.s)
    return Plan(profile, poses, profile.v * stretch, lateral, list(yields))


def _episode(inside: np.ndarray, k: int) -> Optional[tuple[int, int]]:
    """The contiguous run of True in `inside` containing k, or the first one after the present."""
    if not inside[k]:
        later = np.flatnonzero(inside[CURRENT:]) + CURRENT
        if later.size == 0:
            return None
        k = int(later[np.argmin(np.abs(later - k))])
    lo = k
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = k
    while hi < len(inside) - 1 and inside[hi + 1]:
        hi += 1
    return lo, hi


def yield_rule(
    scenario: Scenario,
    cor: Corridor,
    obstacles: Obstacles,
    token: str,
    k: int,
    lead_s: Optional[float] = None,
    release_margin_s: float = 0.4,
) -> Optional[StopRule]:
    """A stop before the zone where `token` meets the ego corridor, in force from `lead_s` seconds before
    it gets there (None: from the start) until it has left the corridor or moved on ahead of that zone
    (then it is an ordinary leader). The ego waits as far on as its (stopped) box stays clear of the other
    road user's boxes during that time, like a driver pulling up to the conflict."""
    ego_s0 = scenario.start.s
    m = cor.index(token)
    episode = _episode(cor.inside[m], k)
    if episode is None:
        return None
    lo, hi = episode
    rear = cor.rear[m, lo : hi + 1]
    s_conflict = float(np.nanmin(rear))
    if s_conflict <= ego_s0 + EGO_FRONT:
        return None  # the conflict is already beside the ego: stopping cannot help
    after = np.arange(len(FINE_TIMES)) > k
    passed = cor.inside[m] & (cor.rear[m] > s_conflict + 8.0) & (cor.speed[m] > 1.0)
    gone = ~cor.inside[m]
    release_candidates = np.flatnonzero(after & (passed | gone) & (np.arange(len(FINE_TIMES)) > lo))
    release = FINE_TIMES[release_candidates[0]] + release_margin_s if release_candidates.size else np.inf
    active = FINE_TIMES < release
    if lead_s is not None:
        active &= FINE_TIMES >= FINE_TIMES[lo] - lead_s
    stop_at = s_conflict - YIELD_STOP_BEFORE_M
    waiting = FINE_TIMES < release
    clear = _last_clear_rear_s(scenario, obstacles.corners[obstacles.tokens.index(token), lo : max(hi + 1, int(np.sum(waiting)))], ego_s0, s_conflict + 20.0)
    if clear is not None:
        stop_at = max(stop_at, clear + EGO_FRONT + scenario.idm.stop_gap)
    return StopRule(stop_at, active, "yield", token=token)


def _last_clear_rear_s(scenario: Scenario, corners: np.ndarray, s_from: float, s_to: float) -> Optional[float]:
    """The largest rear-axle arc length (from s_from, 0.5 m steps) up to which the ego's box, standing on its
    path, stays clear of all the given boxes (T, 4, 2) with a margin; None if it is not clear even at s_from."""
    s = np.arange(s_from, s_to, 0.5)
    if s.size == 0 or corners.size == 0:
        return None
    d, dp = scenario.start.lateral(s)
    poses = scenario.route.frenet_to_pose(s, d, dp)
    ego = inflated_ego_corners(poses, YIELD_CLEARANCE_LAT_M, YIELD_CLEARANCE_LON_M)
    blocked = boxes_overlap(ego[:, None], corners[None]).any(axis=1)
    first = int(np.argmax(blocked)) if blocked.any() else len(s)
    return float(s[first - 1]) if first > 0 else None


def drive_expert(
    scenario: Scenario,
    drivable: Optional[DrivableArea] = None,
    obstacles: Optional[Obstacles] = None,
    accept=None,
) -> Plan:
    """Plan the ego's drive from `scenario.start` (history by constant acceleration, future by IDM with
    yields). Returns the plan, with ok False and a reason when it cannot be made safe, leaves the drivable
    area or is not driven faithfully by NAVSIM's tracker (both checked when `drivable` is given), breaks
    the comfort limits, or fails `accept(scenario, plan)` (checked before the costly tracker)."""
    start = scenario.start
    cor = corridor(scenario.route, start.lateral, scenario.tracks, scenario.statics)
    obstacles = obstacles if obstacles is not None else Obstacles.build(scenario.tracks, scenario.statics)
    yields: list[StopRule] = []
    plan = None
    for _ in range(MAX_YIELDS + 1):
        profile = drive(
            scenario.idm, start.s, start.speed, start.accel, EGO_FRONT, cor.rear, cor.speed,
            list(scenario.stops) + yields, scenario.speed_cap,
        )
        plan = realise(scenario.route, start.lateral, profile, yields)
        violation = first_violation(plan.poses, plan.speeds, obstacles)
        if violation is None:
            break
        if violation.token not in cor.tokens:
            return _reject(plan, f"collision course with {violation.token} at t={FINE_TIMES[violation.index]:.1f}s")
        if any(y.token == violation.token and y.active[violation.index] for y in yields):
            return _reject(plan, f"cannot keep clear of {violation.token} while yielding")
        yields = _add_yield(scenario, cor, obstacles, yields, violation)
        if yields is None:
            return _reject(plan, f"no room to yield to {violation.token}")
    else:
        return _reject(plan, "too many conflicts")
    ahead = cor.inside[:, CURRENT:] & (cor.rear[:, CURRENT:] > plan.profile.s[None, CURRENT:])
    plan.ahead = tuple(t for t, seen in zip(cor.tokens, ahead.any(axis=1)) if seen)
    plan = check_plan(plan, drivable)
    if plan.ok and accept is not None and not accept(scenario, plan):
        return _reject(plan, "the plan does not show the situation of the scenario")
    if plan.ok and drivable is not None:
        plan = check_driven(plan, drivable, obstacles)
    return plan


def _add_yield(scenario: Scenario, cor: Corridor, obstacles: Obstacles, yields: list[StopRule], violation) -> Optional[list[StopRule]]:
    """The yields plus a rule for the violating road user: in force as late as possible (shortest lead
    time) while the ego still keeps clear of it with gentle braking, else from the start; None when
    even that cannot work."""
    start = scenario.start
    token, k = violation.token, violation.index + violation.lookahead
    others = [y for y in yields if y.token != token]
    for lead in YIELD_LEADS_S:
        rule = yield_rule(scenario, cor, obstacles, token, k, lead)
        if rule is None:
            return None
        if lead is None:
            if rule.s - (start.s + EGO_FRONT) < start.speed**2 / (2 * 3.0) + 1.0:
                return None
            return others + [rule]
        profile = drive(
            scenario.idm, start.s, start.speed, start.accel, EGO_FRONT, cor.rear, cor.speed,
            list(scenario.stops) + others + [rule], scenario.speed_cap,
        )
        if np.nanmin(profile.a[CURRENT:]) < GENTLE_BRAKING:
            continue
        candidate = realise(scenario.route, start.lateral, profile, others + [rule])
        again = first_violation(candidate.poses, candidate.speeds, obstacles)
        if again is None or again.token != token:
            return others + [rule]
    return None


def _reject(plan: Plan, reason: str) -> Plan:
    plan.ok = False
    plan.reason = reason
    return plan


def check_plan(plan: Plan, drivable: Optional[DrivableArea]) -> Plan:
    """Comfort and drivable-area acceptance of a plan (history and future)."""
    a = plan.profile.a[CURRENT:]
    if np.nanmax(a) > MAX_ACCEL or np.nanmin(a) < MIN_ACCEL:
        return _reject(plan, f"acceleration out of comfort bounds [{np.nanmin(a):.2f}, {np.nanmax(a):.2f}]")
    yaw_rate = np.abs(np.diff(np.unwrap(plan.poses[:, 2]))) / FINE_DT
    if np.max(yaw_rate) > MAX_YAW_RATE:
        return _reject(plan, f"yaw rate {np.max(yaw_rate):.2f} rad/s")
    if drivable is not None:
        inside = drivable.ego_inside(plan.poses)
        if not np.all(inside):
            first = int(np.argmin(inside))
            return _reject(plan, f"leaves the drivable area at t={FINE_TIMES[first]:.1f}s")
        # the stored ground truth is 2 Hz; whoever replays it interpolates linearly between its poses
        if not np.all(drivable.ego_inside(interpolated_ground_truth(plan))):
            return _reject(plan, "the 2 Hz ground truth, interpolated, leaves the drivable area")
    return plan


def interpolated_ground_truth(plan: Plan) -> np.ndarray:
    """(51, 3) the 2 Hz future poses (t = 0 ... 5 s, current pose first) linearly resampled at 10 Hz."""
    knots = plan.poses[CURRENT::5]
    t_knots = np.arange(len(knots)) * 0.5
    t = np.arange(0.0, t_knots[-1] + 1e-9, FINE_DT)
    heading = np.unwrap(knots[:, 2])
    return np.stack([np.interp(t, t_knots, knots[:, 0]), np.interp(t, t_knots, knots[:, 1]), np.interp(t, t_knots, heading)], axis=-1)


def ego_state_at_start(plan: Plan) -> EgoState:
    """The ego state at t = 0 as NAVSIM sees it (world frame, steering 0)."""
    pose = plan.poses[CURRENT]
    return EgoState(float(pose[0]), float(pose[1]), float(pose[2]), float(plan.speeds[CURRENT]), 0.0, float(plan.profile.a[CURRENT]), 0.0)


def driven_states(plan: Plan) -> np.ndarray:
    """(41, 11) NAVSIM's simulation (LQR tracker + bicycle, `sim.kinematics`) of the plan's first 8 poses."""
    origin = plan.poses[CURRENT]
    poses = absolute_to_relative(origin, plan.future_poses()[:NAVSIM_PLAN_POSES])
    return navsim_simulate(ego_state_at_start(plan), poses[None])[0]


def check_driven(plan: Plan, drivable: DrivableArea, obstacles: Obstacles) -> Plan:
    """Accept a plan only if NAVSIM's simulated ego follows it closely, stays inside the drivable area and
    hits nothing (its own look-ahead included)."""
    states = driven_states(plan)
    reference = plan.poses[CURRENT : CURRENT + NUM_SIM_STATES]
    c, s = np.cos(reference[:, 2]), np.sin(reference[:, 2])
    dx, dy = states[:, 0] - reference[:, 0], states[:, 1] - reference[:, 1]
    lateral = float(np.max(np.abs(-s * dx + c * dy)))
    longitudinal = float(np.max(np.abs(c * dx + s * dy)))
    if lateral > MAX_LATERAL_DEVIATION_M or longitudinal > MAX_LONGITUDINAL_DEVIATION_M:
        return _reject(plan, f"the tracked plan deviates {lateral:.2f} m sideways, {longitudinal:.2f} m along")
    inside = drivable.ego_inside(states[:, :3])
    if not np.all(inside):
        return _reject(plan, f"the tracked plan leaves the drivable area at t={0.1 * int(np.argmin(inside)):.1f}s")
    poses, speeds = plan.poses.copy(), plan.speeds.copy()
    poses[CURRENT : CURRENT + NUM_SIM_STATES] = states[:, :3]
    speeds[CURRENT : CURRENT + NUM_SIM_STATES] = np.hypot(states[:, 3], states[:, 4])
    violation = first_violation(poses, speeds, obstacles, margin_lat=0.1, margin_lon=0.2, stop=CURRENT + NUM_SIM_STATES)
    if violation is not None:
        return _reject(plan, f"the tracked plan comes too close to {violation.token}")
    return plan
