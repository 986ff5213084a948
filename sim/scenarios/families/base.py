"""What every scenario family shares: the `Family` interface, road layouts, background traffic and the
derivation of reasoning labels from the expert's plan.

A family lays out a random scenario (`layout`), says which negative and recovery kinds make sense for it,
and describes the critical objects of its scenes. `sim.scenarios.generator` drives the expert on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from sim import conventions as C
from sim.geometry import absolute_to_relative
from sim.scene import CriticalObject, Reasoning
from sim.scenarios import negatives, recovery
from sim.scenarios.expert import Plan
from sim.scenarios.longitudinal import CURRENT, IDM
from sim.paths import Path, arc, concatenate, straight
from sim.scenarios.reasoning import SELF_TYPE, classify_lateral, classify_longitudinal, compose, location_text
from sim.scenarios.road import MapBuilder, Road, Taper, add_road
from sim.scenarios.scenario import Scenario
from sim.scenarios.traffic import Track, constant_speed_s, idm_followers, track_on_path, vehicle_dims

ROAD_START = -70.0  # world x of the start of generated roads (the ego starts near x = 0)
ROAD_LENGTH = 310.0


class Family:
    """A scenario family. Subclasses set `name`, the kinds, and implement `layout` and `critical`."""

    name: str = ""
    negative_kinds: tuple[str, ...] = ()
    recovery_kinds: tuple[str, ...] = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        raise NotImplementedError

    def accept(self, scenario: Scenario, plan: Plan) -> bool:
        """Does the expert's (safe) plan show what the family is about? (e.g. it did wait for the
        pedestrian). Layouts that fail are redrawn."""
        return True

    def critical(self, scenario: Scenario, plan: Plan) -> list[CriticalObject]:
        """Critical objects at t = 0 (empty: a plain scene, fast reasoning)."""
        return []

    def reason(self, scenario: Scenario, plan: Plan) -> str:
        """An optional middle sentence of the trace (why the decision)."""
        return ""

    def negative(self, scenario: Scenario, plan: Plan, kind: str, rng: np.random.Generator, severity: float = 1.0) -> Optional[Plan]:
        """The negative drive of `kind` on this scenario at `severity` (1: the gross mistake, 0: the expert's
        plan; `sim.scenarios.negatives`), or None when the scene offers no such mistake."""
        if kind not in self.negative_kinds:
            raise ValueError(f"family {self.name!r} cannot produce a {kind!r} negative (it has {self.negative_kinds})")
        return negatives.BUILDERS[kind](scenario, plan, rng, severity)

    def recover(self, scenario: Scenario, plan: Plan, kind: str, rng: np.random.Generator, side: float, scale: float) -> Scenario:
        """The scenario started from a perturbed ego state (`plan`: the unperturbed expert's drive)."""
        if kind not in self.recovery_kinds:
            raise ValueError(f"family {self.name!r} cannot produce a {kind!r} recovery (it has {self.recovery_kinds})")
        travel = float(plan.profile.s[-1] - plan.profile.s[CURRENT])
        return recovery.perturb(scenario, kind, rng, travel, side, scale)

    def reasoning(self, scenario: Scenario, plan: Plan, rng: np.random.Generator, recovery_kind: Optional[str]) -> Reasoning:
        """Decisions from what the plan does (so they always agree with the ground truth), wording from rng."""
        origin = plan.poses[CURRENT]
        # Decisions describe the NAVSIM plan horizon (4 s), which is what a policy outputs and what is scored.
        future = absolute_to_relative(origin, plan.future_poses())[: C.NAVSIM_PLAN_POSES]
        lane = absolute_to_relative(origin, np.concatenate([scenario.facts["lane_path"].xy, np.zeros((len(scenario.facts["lane_path"].xy), 1))], axis=1))[:, :2]
        longitudinal = classify_longitudinal(float(plan.speeds[CURRENT]), future)
        lateral = classify_lateral(future, lane)
        # slowing down or stopping for another road user (not for a sign or a light) is yielding
        waited = plan.waited_for() + plan.slowed_for(scenario.facts.get("yield_to", ()))
        if longitudinal in ("decelerate", "stop") and waited and not scenario.facts.get("stop_is_rule", False):
            longitudinal = "yield"
        critical = self.critical(scenario, plan)
        reason = self.reason(scenario, plan)
        if recovery_kind is not None:
            critical = [recovery_object(recovery_kind, scenario, plan)] + critical
            reason = RECOVERY_REASONS[recovery_kind]
        fast = not critical and longitudinal in ("keep speed", "accelerate") and lateral == "keep lane"
        return compose(rng, critical, longitudinal, lateral, "" if fast else reason, fast=fast)


RECOVERY_REASONS = {
    "off_centre": "I steer smoothly back to the centre of my lane",
    "bad_heading": "I correct my heading and settle back on the lane centre",
    "too_close": "I brake to reopen a safe gap",
    "bad_merge": "The gap is not safe, so I abort the merge and return to my lane",
}


def recovery_object(kind: str, scenario: Scenario, plan: Plan) -> CriticalObject:
    """The ego's own bad start, described as the first critical item of a recovery scene."""
    behaviour = {
        "off_centre": "off the lane centre",
        "bad_heading": "pointing out of the lane",
        "too_close": "too close to the car ahead",
        "bad_merge": "half into the next lane beside traffic",
    }[kind]
    return CriticalObject(SELF_TYPE, "in my lane", behaviour)


def relative_location(plan: Plan, xy: np.ndarray) -> str:
    rel = absolute_to_relative(plan.poses[CURRENT], np.array([xy[0], xy[1], 0.0]))
    return location_text(float(rel[0]), float(rel[1]))


def track_by_token(scenario: Scenario, token: str) -> Track:
    for t in scenario.tracks:
        if t.token == token:
            return t
    raise KeyError(token)


# ---- roads ---------------------------------------------------------------------------------------------


@dataclass
class RoadLayout:
    builder: MapBuilder
    road: Road
    ego_lane: int

    @property
    def lane_path(self) -> Path:
        return self.road.forward_path(self.ego_lane)


def road_reference(rng: np.random.Generator, curve: Optional[tuple[float, float, float]] = None) -> Path:
    """The road's centre divider from x = ROAD_START: straight, or straight-arc-straight.

    curve: (start arc length, radius, signed angle) of the bend."""
    start = np.array([ROAD_START, 0.0])
    if curve is None:
        return straight(start, 0.0, ROAD_LENGTH)
    s_curve, radius, angle = curve
    first = straight(start, 0.0, s_curve)
    bend = arc(first.xy[-1], 0.0, radius, angle)
    rest = straight(bend.xy[-1], float(angle), ROAD_LENGTH - s_curve)
    return concatenate([first, bend, rest])


def build_road(
    rng: np.random.Generator,
    n_forward: int,
    n_backward: int,
    lane_width: float,
    speed_limit: float,
    ego_lane: int,
    curve: Optional[tuple[float, float, float]] = None,
    taper: Optional[Taper] = None,
) -> RoadLayout:
    builder = MapBuilder()
    reference = road_reference(rng, curve)
    road = Road("road", reference, 0.0, reference.length, lane_width, n_forward, n_backward, speed_limit, taper)
    add_road(builder, road)
    return RoadLayout(builder, road, ego_lane)


def ego_s_on_lane(layout: RoadLayout, s_reference: float = -ROAD_START) -> float:
    """Arc length along the ego lane abreast of arc length `s_reference` of the road's reference line
    (by default the point at world x = 0 of a road that starts straight)."""
    point = layout.road.reference.frenet_to_pose(np.array([s_reference]), np.array([layout.road.forward_offset(layout.ego_lane)]))
    s, _ = layout.lane_path.project(point[0, :2])
    return float(s)


def background_traffic(
    rng: np.random.Generator,
    layout: RoadLayout,
    ego_s: float,
    ego_speed: float,
    skip_lanes: tuple[int, ...] = (),
    max_per_lane: int = 3,
    oncoming: bool = True,
    prefix: str = "bg",
) -> list[Track]:
    """Cars in the other forward lanes (IDM queues at about the ego's speed) and oncoming cars.

    Forward cars are spaced so that none sits beside the ego at t = 0 (so lane keeping stays free)."""
    tracks: list[Track] = []
    road = layout.road
    idm = IDM(target_speed=road.speed_limit * float(rng.uniform(0.8, 1.0)))
    for i in range(road.n_forward):
        if i == layout.ego_lane or i in skip_lanes:
            continue
        path = road.forward_path(i)
        n = int(rng.integers(0, max_per_lane + 1))
        positions = sorted(ego_s + rng.uniform(-50.0, 70.0, size=n), reverse=True)
        kept: list[float] = []
        for p in positions:
            if abs(p - ego_s) < 12.0 or any(abs(p - q) < 16.0 for q in kept):
                continue
            kept.append(float(p))
        if not kept:
            continue
        dims = [vehicle_dims(rng) for _ in kept]
        v = ego_speed * float(rng.uniform(0.85, 1.1))
        starts = [(p - 1.5 * v, v) for p in kept]
        profiles = idm_followers(path, None, 0.0, starts, [d.length for d in dims], idm)
        for k, (s, dims_k) in enumerate(zip(profiles, dims)):
            tracks.append(track_on_path(f"{prefix}_f{i}_{k}", "vehicle", dims_k, path, s))
    if oncoming:
        for j in range(road.n_backward):
            path = road.backward_path(j)
            n = int(rng.integers(0, max_per_lane + 1))
            ego_on_back = path.length - ego_s  # roughly where the ego is, seen along the backward lane
            used: list[float] = []
            for k in range(n):
                s0 = ego_on_back + float(rng.uniform(-60.0, 80.0))
                if any(abs(s0 - q) < 18.0 for q in used):
                    continue
                used.append(s0)
                v = road.speed_limit * float(rng.uniform(0.7, 1.0))
                tracks.append(
                    track_on_path(f"{prefix}_b{j}_{k}", "vehicle", vehicle_dims(rng), path, constant_speed_s(s0, v), role="oncoming_background")
                )
    return tracks


def default_idm(rng: np.random.Generator, speed_limit: float) -> IDM:
    return IDM(target_speed=speed_limit, headway=float(rng.uniform(1.2, 1.5)), min_gap=float(rng.uniform(2.0, 3.0)))



def road_scenario(family: str, layout, limit: float, width: float, tracks: list, start, rng: np.random.Generator,
                  facts: dict, route=None, statics=()) -> Scenario:
    """A scenario on a straight or curved road (no lights, no stop lines): the ego follows `route` (default
    the ego lane) within the road's forward roadblock, with `facts` for the family's labels and samples."""
    return Scenario(
        family=family,
        builder=layout.builder,
        route=layout.lane_path if route is None else route,
        route_roadblocks={layout.road.forward_roadblock},
        speed_limit=limit,
        lane_width=width,
        tracks=tracks,
        statics=list(statics),
        lights=[],
        start=start,
        stops=[],
        idm=default_idm(rng, limit),
        facts=facts,
    )


def lead_track(
    rng: np.random.Generator, path: Path, s_centre: np.ndarray, token: str = "lead", role: str = "lead"
) -> Track:
    return track_on_path(token, "vehicle", vehicle_dims(rng, allow_truck=True), path, s_centre, role=role)
