"""Lane changes the route requires: the ego lane ends (a taper) or is blocked by a stalled car, or a
construction zone closes it. The route centre line itself moves into the adjacent lane (as the lane graph
would route it), so PDM-Closed and the expert both change lane; traffic in the target lane must be merged
with.

facts: "lane_path" (the start lane), "route_shift" (the route's lateral transition relative to the start
lane), "merge_side" (+1 left, -1 right), "avoidance" (lateral components that avoid the obstacle),
"obstacle_tokens", "reason_kind" ("lane_end" | "stalled" | "construction").
"""
from __future__ import annotations

import numpy as np

from sim.scene import CriticalObject, StaticObject
from sim.scenarios.expert import EGO_FRONT
from sim.scenarios.families.base import road_scenario, ROAD_START, Family, background_traffic, build_road, ego_s_on_lane, relative_location
from sim.scenarios.longitudinal import CURRENT, IDM
from sim.paths import Path, Smoothstep
from sim.scenarios.road import Taper
from sim.scenarios.scenario import EgoStart, Scenario
from sim.scenarios.traffic import Track, idm_followers, parked, track_on_path, vehicle_dims


def shifted_route(lane_path: Path, shift: Smoothstep) -> Path:
    """The start lane's centre line moved over by `shift` (dense where it moves, two points elsewhere)."""
    stations = np.concatenate([[0.0], np.arange(shift.s0, shift.s1 + 1.0, 1.0), [lane_path.length]])
    stations = np.unique(np.clip(stations, 0.0, lane_path.length))
    d, _ = shift(stations)
    return Path(lane_path.frenet_to_pose(stations, d)[:, :2])


def target_lane_traffic(rng, road, lane: int, ego_s: float, ego_speed: float, max_cars: int = 3) -> list[Track]:
    """An IDM queue in the target lane around the ego (gaps of 18-40 m), at about the ego's speed."""
    path = road.forward_path(lane)
    n = int(rng.integers(1, max_cars + 1))
    first = ego_s + float(rng.uniform(-10.0, 45.0))
    positions = [first - sum(float(rng.uniform(18.0, 40.0)) for _ in range(k)) for k in range(n)]
    dims = [vehicle_dims(rng) for _ in positions]
    v = max(4.0, ego_speed + float(rng.uniform(-2.0, 2.0)))
    starts = [(p - 1.5 * v, v) for p in positions]
    idm = IDM(target_speed=v, headway=1.2, min_gap=2.0)
    profiles = idm_followers(path, None, 0.0, starts, [d.length for d in dims], idm)
    return [track_on_path(f"target_{k}", "vehicle", d, path, s, role="target_lane") for k, (d, s) in enumerate(zip(dims, profiles))]


class LaneChange(Family):
    """The ego lane ends or is blocked by a stalled car ahead: change into the adjacent lane."""

    name = "lane_change"
    negative_kinds = ("squeeze_into_gap", "hesitate")
    recovery_kinds = ("bad_merge", "off_centre")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.3, 3.7))
        limit = float(rng.uniform(10.0, 16.0))
        lane_end = rng.random() < 0.5
        ego_lane = n_fwd - 1 if lane_end else int(rng.integers(n_fwd))
        if lane_end:
            target = ego_lane - 1
        else:
            choices = [c for c in (ego_lane - 1, ego_lane + 1) if 0 <= c < n_fwd]
            target = choices[int(rng.integers(len(choices)))]
        # the lane change lies in the road's straight frame: reference s == lane s
        s_ego_ref = -ROAD_START + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.75, 0.95))
        s_a = s_ego_ref + float(rng.uniform(3.0, 9.0))
        length = max(26.0, v0 * float(rng.uniform(2.5, 3.2)))
        taper = None
        if lane_end:
            t0 = s_a + length + float(rng.uniform(2.0, 12.0))
            taper = Taper(t0, t0 + 40.0)
        layout = build_road(rng, n_fwd, n_bwd, width, limit, ego_lane, taper=taper)
        road = layout.road
        lane_path = layout.lane_path
        shift = Smoothstep(s_a, s_a + length, 0.0, road.forward_offset(target) - road.forward_offset(ego_lane))
        route = shifted_route(lane_path, shift)
        s0 = ego_s_on_lane(layout, s_ego_ref)
        tracks = target_lane_traffic(rng, road, target, s0, v0)
        facts = {"lane_path": lane_path, "route_shift": shift, "merge_side": 1.0 if target < ego_lane else -1.0}
        if lane_end:
            facts.update(reason_kind="lane_end", lane_end_s=taper.s_start, obstacle_tokens=(), avoidance=(shift,))
        else:
            s_block = s_a + length + float(rng.uniform(4.0, 12.0))
            stalled = parked("stalled", vehicle_dims(rng), lane_path.pose_at(s_block), role="stalled")
            tracks.append(stalled)
            facts.update(reason_kind="stalled", obstacle_tokens=("stalled",), avoidance=(shift,))
        tracks += background_traffic(rng, layout, s0, v0, skip_lanes=(target,), max_per_lane=2)
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng, facts, route=route,
        )

    def critical(self, scenario, plan):
        side = "left" if scenario.facts["merge_side"] > 0 else "right"
        if scenario.facts["reason_kind"] == "lane_end":
            where = scenario.facts["lane_path"].point_at(scenario.facts["lane_end_s"])
            return [CriticalObject("lane_end", relative_location(plan, where), f"forcing a merge to the {side}")]
        stalled = next(t for t in scenario.tracks if t.token == "stalled")
        return [CriticalObject("vehicle", relative_location(plan, stalled.poses[CURRENT]), "stopped in my lane")]

    def reason(self, scenario, plan):
        return "I merge into the next lane where the gap in its traffic is safe"


def construction_objects(rng, lane_path: Path, width: float, side: float, s_start: float, taper: float, length: float) -> list[StaticObject]:
    """Cones in a taper across the closed lane and along its open edge, barriers and a sign inside."""
    objects: list[StaticObject] = []
    edge = side * (width / 2.0 - 0.4)
    far = -side * (width / 2.0 - 0.4)
    s_values = np.arange(s_start, s_start + taper, float(rng.uniform(2.5, 3.5)))
    for s in s_values:
        d = far + (edge - far) * (s - s_start) / taper
        objects.append(_static(lane_path, s, d, "traffic_cone", 0.45, 0.45, 0.75, len(objects)))
    for s in np.arange(s_start + taper, s_start + taper + length, float(rng.uniform(4.0, 6.0))):
        objects.append(_static(lane_path, s, edge, "traffic_cone", 0.45, 0.45, 0.75, len(objects)))
    objects.append(_static(lane_path, s_start - 6.0, far * 0.6, "czone_sign", 0.7, 0.3, 1.6, len(objects)))
    for k in range(int(rng.integers(1, 3))):
        objects.append(_static(lane_path, s_start + taper + 4.0 + 9.0 * k, -side * 0.3, "barrier", 2.4, 0.6, 1.0, len(objects)))
    return objects


def _static(path: Path, s: float, d: float, kind: str, length: float, width: float, height: float, index: int) -> StaticObject:
    pose = path.frenet_to_pose(np.array([s]), np.array([d]))[0]
    return StaticObject(f"{kind}_{index}", kind, float(pose[0]), float(pose[1]), float(pose[2]), length, width, height)


class ConstructionZone(Family):
    """Cones and barriers close the ego lane ahead: merge into the open adjacent lane."""

    name = "construction_zone"
    negative_kinds = ("ignore_obstacle", "hesitate")
    recovery_kinds = ("off_centre", "bad_merge")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.3, 3.7))
        limit = float(rng.uniform(9.0, 14.0))
        ego_lane = int(rng.integers(n_fwd))
        choices = [c for c in (ego_lane - 1, ego_lane + 1) if 0 <= c < n_fwd]
        target = choices[int(rng.integers(len(choices)))]
        layout = build_road(rng, n_fwd, n_bwd, width, limit, ego_lane)
        road, lane_path = layout.road, layout.lane_path
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.75, 0.95))
        zone_start = s0 + EGO_FRONT + float(rng.uniform(40.0, 70.0))
        length = max(30.0, v0 * float(rng.uniform(2.8, 3.6)))
        s_b = zone_start - float(rng.uniform(4.0, 10.0)) - EGO_FRONT
        s_a = max(s0 + 5.0, s_b - length)
        shift = Smoothstep(s_a, s_b, 0.0, road.forward_offset(target) - road.forward_offset(ego_lane))
        route = shifted_route(lane_path, shift)
        side = 1.0 if target < ego_lane else -1.0
        statics = construction_objects(rng, lane_path, width, side, zone_start, float(rng.uniform(12.0, 20.0)), float(rng.uniform(30.0, 60.0)))
        tracks = target_lane_traffic(rng, road, target, s0, v0, max_cars=2)
        tracks += background_traffic(rng, layout, s0, v0, skip_lanes=(target,), max_per_lane=2)
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng,
            {
                "lane_path": lane_path,
                "route_shift": shift,
                "merge_side": side,
                "avoidance": (shift,),
                "obstacle_tokens": tuple(o.token for o in statics),
                "zone_start": zone_start,
                "reason_kind": "construction",
            },
            route=route, statics=statics,
        )

    def critical(self, scenario, plan):
        where = scenario.facts["lane_path"].point_at(scenario.facts["zone_start"])
        return [CriticalObject("construction_zone", relative_location(plan, where), "closing my lane")]

    def reason(self, scenario, plan):
        return "Cones block my lane, so I move over to the open lane in time"
