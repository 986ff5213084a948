"""Recovery samples: the same scenario started from a perturbed ego state, with the expert's correction.

Kinds (how the start is perturbed; the ego history leads smoothly into it):

  off_centre   0.4-1.0 m beside the lane centre, parallel to it -> steer back to the centre
  bad_heading  0.3-0.7 m off centre, heading 4-9 deg across the lane -> straighten up without overshooting
  too_close    much closer to the lead (time gap about half of the expert's) -> brake to reopen the gap
  bad_merge    already 1.0-1.4 m into the adjacent lane next to traffic -> abort and return to the lane

The perturbed scenario is driven by the expert (with all its acceptance checks: the ego starts and stays
inside the drivable area); `Scene.recovery_trajectory` = `Scene.future` = its correction. The correction
is finished within about 3 s of driving; an ego that would wait at a line the whole time starts further
back, still approaching, so that it has room to correct.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.scenarios.expert import EGO_FRONT
from sim.paths import QuinticReturn

RECOVERY_KINDS = ("off_centre", "bad_heading", "too_close", "bad_merge")


MIN_TRAVEL_M = 12.0  # an ego that covers less in 5 s (waiting at a line) is moved back to get room to correct
BACK_OFF_M = 15.0


def _room(scenario, travel: float):
    """A start with room to correct: when the unperturbed expert covers less than MIN_TRAVEL_M in 5 s, the
    perturbed ego starts BACK_OFF_M further back, still approaching at 5 m/s or more. Returns (start, the
    distance it can be expected to cover)."""
    start = scenario.start
    if travel >= MIN_TRAVEL_M:
        return start, travel
    return replace(start, s=start.s - BACK_OFF_M, speed=max(start.speed, 5.0), accel=0.0), travel + BACK_OFF_M


def _return_length(speed: float, travel: float, rng: np.random.Generator) -> float:
    """Length (m) of the correction: about 3 s of driving, finished well within the distance covered."""
    return float(np.clip(0.7 * travel, 10.0, max(18.0, speed * float(rng.uniform(2.8, 3.6)))))


def off_centre(scenario, rng: np.random.Generator, travel: float, side: float, scale: float = 1.0):
    start, travel = _room(scenario, travel)
    d0 = side * scale * float(rng.uniform(0.4, 1.0))
    correction = QuinticReturn(start.s, _return_length(start.speed, travel, rng), d0, 0.0)
    return replace(scenario, start=replace(start, lateral=start.lateral.plus(correction)))


def bad_heading(scenario, rng: np.random.Generator, travel: float, side: float, scale: float = 1.0):
    """Off the centre on one side and pointing across the lane towards the other (it would overshoot)."""
    start, travel = _room(scenario, travel)
    angle = np.deg2rad(scale * float(rng.uniform(4.0, 9.0)))
    d0 = side * scale * float(rng.uniform(0.3, 0.7))
    length = _return_length(start.speed, travel, rng)
    correction = QuinticReturn(start.s, length, d0, -side * np.tan(angle), history_length=12.0)
    return replace(scenario, start=replace(start, lateral=start.lateral.plus(correction)))


def too_close(scenario, rng: np.random.Generator, travel: float, side: float, scale: float = 1.0):
    """Move the ego forward towards the lead so that its time gap is 0.9-1.2 s (less than the expert's)."""
    lead = scenario.facts.get("lead")
    if lead is None:
        raise ValueError(f"family {scenario.family!r} has no lead vehicle to be too close to")
    track = next(t for t in scenario.tracks if t.token == lead)
    start = scenario.start
    s_lead, _ = scenario.route.project(track.poses[15, :2])
    gap = float(s_lead) - track.dims.length / 2.0 - (start.s + EGO_FRONT)
    speed = max(start.speed, 1.0)
    target_gap = max(2.5, speed * float(rng.uniform(0.9, 1.2)) / max(scale, 1e-3))
    if gap <= target_gap + 1.0:
        raise ValueError(f"family {scenario.family!r}: the ego is already close to the lead")
    shift = gap - target_gap
    return replace(scenario, start=replace(start, s=start.s + shift))


def bad_merge(scenario, rng: np.random.Generator, travel: float, side: float, scale: float = 1.0):
    """`side` is ignored: the perturbation goes towards the lane the route merges into."""
    side = scenario.facts.get("merge_side")
    if side is None:
        raise ValueError(f"family {scenario.family!r} has no adjacent lane to start a bad merge into")
    start, travel = _room(scenario, travel)
    d0 = side * scale * float(rng.uniform(1.0, 1.4))
    slope = side * np.tan(np.deg2rad(scale * float(rng.uniform(2.0, 4.0))))
    correction = QuinticReturn(start.s, _return_length(start.speed, travel, rng), d0, slope, history_length=20.0)
    return replace(scenario, start=replace(start, lateral=start.lateral.plus(correction)))


PERTURBATIONS = {"off_centre": off_centre, "bad_heading": bad_heading, "too_close": too_close, "bad_merge": bad_merge}
assert set(PERTURBATIONS) == set(RECOVERY_KINDS)


def perturb(scenario, kind: str, rng: np.random.Generator, travel: float, side: float = 1.0, scale: float = 1.0):
    """The scenario with its start perturbed by `kind` towards `side` (+1 left, -1 right; scale < 1 gives
    a milder perturbation); `travel`: how far (m) the unperturbed expert drives in 5 s."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown recovery kind {kind!r}; known: {RECOVERY_KINDS}")
    return PERTURBATIONS[kind](scenario, rng, travel, side, scale)

