"""Negative samples: the typical sub-optimal drive of a scenario, re-driven from the same start.

Each kind changes one thing about the driver and nothing else (the world is the same, non-reactive):

  hesitate           brakes for an imaginary reason ahead, then crawls on at half the speed limit
  late_brake         notices leaders, lights and crossing road users 1.2-2.2 s after the expert brakes
  tailgate           keeps a much shorter gap to the lead (0.2-0.4 s headway), reacts late to its braking
  no_yield           does not wait for the road user it should yield to (drives into the conflict)
  run_red            ignores a red light (and the cross traffic it releases)
  run_stop_sign      rolls through a stop sign without stopping
  drift_out_of_lane  drifts sideways out of its lane within 15-25 m
  cut_corner         cuts the inside of a turn, leaving the lane connector
  squeeze_into_gap   changes lane at once into the tightest gap of the target lane, without waiting
  ignore_obstacle    keeps its lane and speed into a blocked lane (no nudge, no lane change)

The negative is stored as `Scene.negative_trajectory`; `Scene.future` keeps the expert's ground truth.
A builder returns None when the scene offers no such mistake (e.g. no car to squeeze next to).

Severity (`severity` in [0, 1], 1 by default: the gross mistake above, unchanged) grades a mistake for the
logged human driver (`sim.scenarios.human`). 0 is the expert's plan; in between, a kind with a knob moves
that knob from the expert's value towards the gross value: the reaction delay and the braking limits of a
surprised driver (late_brake), the headway, gap and anticipation (tailgate), the drift offset
(drift_out_of_lane), the cut depth (cut_corner). The other kinds (hesitate, and the decisions no_yield,
run_red, run_stop_sign, squeeze_into_gap, ignore_obstacle, whose knob is all or nothing) go `severity` of
the way from the expert's drive to the gross one: arc length, speed and acceleration along the route and
the lateral offset are blended (a brief slow-down, a partial yield, a stop over the line, a rolling stop, an
early half-merge, passing the obstacle with part of the margin). The random draws are the same at every
severity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import shapely

from sim.geometry import ego_corners
from sim.scenarios.expert import EGO_FRONT, Plan, corridor, realise
from sim.scenarios.longitudinal import CURRENT, FINE_TIMES, Profile, StopRule, drive
from sim.paths import Smoothstep

HESITATION_LAG_M = 2.0  # a hesitating driver is at least this far behind the expert after 3 s
# A red-light stop rule sits at the stop line's near edge, 1.4 m before the lane connector it guards.
RED_RUN_DEPTH_M = 1.9

NEGATIVE_KINDS = (
    "hesitate",
    "late_brake",
    "tailgate",
    "no_yield",
    "run_red",
    "run_stop_sign",
    "drift_out_of_lane",
    "cut_corner",
    "squeeze_into_gap",
    "ignore_obstacle",
)


@dataclass(frozen=True)
class Negated:
    """The opposite of a lateral component (undoes a route's lane shift: the driver keeps its lane)."""

    component: object

    def __call__(self, s):
        d, dp = self.component(s)
        return -d, -dp


def toward(expert: float, gross: float, severity: float) -> float:
    """The knob `severity` of the way from the expert's value to the gross mistake's (exactly `gross` at 1)."""
    return gross if severity >= 1.0 else expert + severity * (gross - expert)


@dataclass(frozen=True)
class _Toward:
    """A lateral component: `weight` times (gross - expert) lateral offsets."""

    expert: object
    gross: object
    weight: float

    def __call__(self, s):
        de, dpe = self.expert(s)
        dg, dpg = self.gross(s)
        return self.weight * (dg - de), self.weight * (dpg - dpe)


def partway(scenario, plan: Plan, gross: Optional[Plan], severity: float) -> Optional[Plan]:
    """The drive `severity` of the way from the expert's `plan` to the `gross` mistake (None stays None; 1:
    the gross mistake itself): the longitudinal profile (s, v, a on the fine grid) and the lateral offset
    are blended, so speeds and accelerations stay between the two drivers'."""
    if gross is None or severity >= 1.0:
        return gross
    w = float(severity)
    p, g = plan.profile, gross.profile
    profile = Profile((1.0 - w) * p.s + w * g.s, (1.0 - w) * p.v + w * g.v, (1.0 - w) * p.a + w * g.a)
    lateral = plan.lateral.plus(_Toward(plan.lateral, gross.lateral, w))
    return realise(scenario.route, lateral, profile, gross.yields)


def redrive(scenario, idm=None, stops=None, lateral=None, ignore=frozenset(), yields=()) -> Plan:
    """Drive the scenario again with another driver (no yield search, no acceptance checks)."""
    start = scenario.start
    lateral = start.lateral if lateral is None else lateral
    cor = corridor(scenario.route, lateral, scenario.tracks, scenario.statics)
    if ignore:
        cor = cor.without(set(ignore))
    stops = scenario.stops if stops is None else stops
    idm = scenario.idm if idm is None else idm
    profile = drive(
        idm, start.s, start.speed, start.accel, EGO_FRONT, cor.rear, cor.speed, list(stops) + list(yields), scenario.speed_cap
    )
    return realise(scenario.route, lateral, profile, list(yields))


def hesitate(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Optional[Plan]:
    """Brake for nothing: a phantom stop held for 3.5-5 s, a third to a half of the way the expert drives in
    5 s (but no closer than a firm stop needs), and a target speed of half the limit. Graded: `severity` of
    the way from the expert's drive to that one (a brief, milder slow-down)."""
    s_front = scenario.start.s + EGO_FRONT
    v0 = scenario.start.speed
    travel = float(plan.profile.s[-1] - plan.profile.s[CURRENT])
    distance = max(float(rng.uniform(0.3, 0.5)) * travel, v0**2 / (2 * 3.5) + 1.0)
    release = float(rng.uniform(3.5, 5.0))
    phantom = StopRule(s_front + distance, FINE_TIMES < release, "phantom")
    negative = redrive(scenario, yields=plan.yields + [phantom], idm=scenario.idm.with_(target_speed=0.5 * scenario.idm.target_speed))
    # when the expert itself slows down as much (it waits for a gap), there is no hesitation to show
    at_3s = CURRENT + 30
    if negative.profile.s[at_3s] > plan.profile.s[at_3s] - HESITATION_LAG_M:
        return None
    return partway(scenario, plan, negative, severity)


def late_brake(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Notice everything ahead 1.2-2.2 s after the expert starts braking (2.2-3.2 s in when it does not
    brake), then brake hard. Graded: everything ahead is noticed `severity` times that delay after t = 0,
    and the braking limits move `severity` of the way from the expert's to the surprised driver's."""
    braking = np.flatnonzero(plan.profile.a[CURRENT:] < -0.5)
    onset = float(FINE_TIMES[CURRENT + braking[0]]) if braking.size else 1.0
    delay = onset + float(rng.uniform(1.2, 2.2))
    idm = scenario.idm
    idm = idm.with_(reaction_delay=toward(0.0, delay, severity), a_min=toward(idm.a_min, -6.0, severity),
                    jerk_max=toward(idm.jerk_max, 20.0, severity), b_comf=toward(idm.b_comf, 4.0, severity),
                    a_max=toward(idm.a_max, 2.2, severity))
    return redrive(scenario, idm=idm, yields=plan.yields)


def tailgate(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Follow at 0.2-0.4 s headway and react to the lead's braking only when the gap is gone. Graded: every
    car-following parameter moves `severity` of the way from the expert's to the tailgater's."""
    gross = dict(headway=float(rng.uniform(0.2, 0.4)), min_gap=0.5, anticipation=0.15, a_max=2.5, b_comf=3.5, a_min=-6.0,
                 jerk_max=15.0)
    idm = scenario.idm.with_(**{key: toward(getattr(scenario.idm, key), value, severity) for key, value in gross.items()})
    return redrive(scenario, idm=idm, yields=plan.yields)


def no_yield(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Ignore the road users the expert waited for (they are not seen as leaders either)."""
    tokens = set(plan.waited_for()) | set(scenario.facts.get("yield_to", ()))
    return partway(scenario, plan, redrive(scenario, ignore=frozenset(tokens), yields=[]), severity)


def run_red(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Optional[Plan]:
    """Ignore the red light and the cross traffic; None when the light is no longer red by the time the
    driver reaches the stop line (nothing to run)."""
    stops = [s for s in scenario.stops if s.kind != "red_light"]
    cross = {t.token for t in scenario.tracks if t.role == "cross_traffic"}
    negative = redrive(scenario, stops=stops, ignore=frozenset(cross), yields=[])
    front = negative.profile.s + EGO_FRONT
    for light in (s for s in scenario.stops if s.kind == "red_light"):
        # the front past the stop line and 0.5 m into the junction's lane connector while the light holds
        if np.any(light.active[CURRENT:] & (front[CURRENT:] > light.s + RED_RUN_DEPTH_M)):
            return partway(scenario, plan, negative, severity)
    return None


def run_stop_sign(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Drive through the stop sign and the cross traffic (graded: a rolling stop)."""
    stops = [s for s in scenario.stops if s.kind != "stop_sign"]
    cross = {t.token for t in scenario.tracks if t.role == "cross_traffic"}
    return partway(scenario, plan, redrive(scenario, stops=stops, ignore=frozenset(cross), yields=[]), severity)


def drift_out_of_lane(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Drift 0.5 lane + 0.8-1.3 m sideways within 15-25 m (towards the outside of a bend when there is one).
    Graded: `severity` times that offset."""
    s0 = scenario.start.s + float(rng.uniform(1.0, 4.0))
    side = scenario.facts.get("drift_side") or (1.0 if rng.random() < 0.5 else -1.0)
    amount = toward(0.0, side * (scenario.lane_width / 2.0 + float(rng.uniform(0.8, 1.3))), severity)
    drift = Smoothstep(s0, s0 + float(rng.uniform(15.0, 25.0)), 0.0, amount)
    return redrive(scenario, lateral=scenario.start.lateral.plus(drift), yields=plan.yields)


def cut_corner(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Leave the lane connector towards the inside of the turn (2-3 m at the apex; graded: `severity` times
    that depth)."""
    s_in, s_out = scenario.facts["turn_span"]
    side = 1.0 if scenario.turn == "left" else -1.0
    amount = toward(0.0, side * float(rng.uniform(2.0, 3.0)), severity)
    mid = 0.5 * (s_in + s_out)
    bump = (Smoothstep(s_in - 6.0, mid, 0.0, amount), Smoothstep(mid, s_out + 6.0, 0.0, -amount))
    return redrive(scenario, lateral=scenario.start.lateral.plus(*bump), yields=plan.yields)


def squeeze_into_gap(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Optional[Plan]:
    """Change lane at once (starting 1-8 m ahead, over 18-26 m), without waiting, into the tightest gap of
    the target lane: of a few start points, the one that crosses into that lane closest to a car there
    (and closer than the expert does); None when no start point gives a tighter gap."""
    shift = scenario.facts["route_shift"]
    length = float(rng.uniform(18.0, 26.0))
    others = frozenset(t.token for t in scenario.tracks if t.role in ("target_lane", "background"))
    targets = [t for t in scenario.tracks if t.role == "target_lane"]
    best, best_gap = None, merge_gap(scenario, plan, targets)
    for ahead in (1.0, 3.0, 5.0, 8.0):
        s0 = scenario.start.s + ahead
        early = Smoothstep(s0, s0 + length, shift.d0, shift.d1)
        candidate = redrive(scenario, lateral=scenario.start.lateral.plus(Negated(shift), early), ignore=others, yields=[],
                            idm=scenario.idm.with_(a_max=2.5))
        gap = merge_gap(scenario, candidate, targets)
        if gap < best_gap - 0.5:
            best, best_gap = candidate, gap
    return partway(scenario, plan, best, severity)


def merge_gap(scenario, plan: Plan, tracks: list) -> float:
    """Distance (m) between the ego box and the nearest of `tracks` when the ego's rear axle crosses into
    the next lane (half a lane from the start lane's centre line)."""
    _, d = scenario.facts["lane_path"].project(plan.poses[CURRENT:, :2])
    crossing = np.flatnonzero(np.abs(d) > scenario.lane_width / 2.0)
    if crossing.size == 0 or not tracks:
        return np.inf
    k = CURRENT + int(crossing[0])
    ego = shapely.Polygon(ego_corners(plan.poses[k]))
    return min(float(shapely.distance(ego, shapely.Polygon(t.corners()[k]))) for t in tracks)


def ignore_obstacle(scenario, plan: Plan, rng: np.random.Generator, severity: float = 1.0) -> Plan:
    """Keep the lane (undo nudges / the lane shift around the obstacle) and do not brake for it."""
    components = tuple(Negated(c) for c in scenario.facts.get("avoidance", ()))
    lateral = scenario.start.lateral.plus(*components)
    obstacle = set(scenario.facts.get("obstacle_tokens", ()))
    return partway(scenario, plan, redrive(scenario, lateral=lateral, ignore=frozenset(obstacle), yields=[]), severity)


BUILDERS = {
    "hesitate": hesitate,
    "late_brake": late_brake,
    "tailgate": tailgate,
    "no_yield": no_yield,
    "run_red": run_red,
    "run_stop_sign": run_stop_sign,
    "drift_out_of_lane": drift_out_of_lane,
    "cut_corner": cut_corner,
    "squeeze_into_gap": squeeze_into_gap,
    "ignore_obstacle": ignore_obstacle,
}
assert set(BUILDERS) == set(NEGATIVE_KINDS)


def differs_enough(plan: Plan, negative: Plan, min_ade_m: float = 0.8, min_max_m: float = 0.6, severity: float = 1.0) -> bool:
    """A negative must be visibly different from the ground truth over 5 s: an average displacement of
    `min_ade_m` or a largest one of `min_max_m` (both times `severity` for a graded mistake)."""
    a, b = plan.future_poses(), negative.future_poses()
    error = np.linalg.norm(a[:, :2] - b[:, :2], axis=1)
    if severity < 1.0:
        min_ade_m, min_max_m = severity * min_ade_m, severity * min_max_m
    return float(error.mean()) >= min_ade_m or float(error.max()) >= min_max_m

