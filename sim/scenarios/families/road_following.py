"""Lane following: straight multi-lane roads with background traffic, and bends.

facts: "lane_path" (the ego lane's centre line), "drift_side" (+1 left / -1 right: where drifting hurts
most; the outside of a bend).
"""
from __future__ import annotations

import numpy as np

from sim.scene import CriticalObject
from sim.scenarios.families.base import (
    ROAD_START,
    Family,
    background_traffic,
    build_road,
    ego_s_on_lane,
    lead_track,
    relative_location,
    road_scenario,
)
from sim.scenarios.scenario import EgoStart, Scenario
from sim.scenarios.traffic import constant_speed_s


def _start_speed(rng: np.random.Generator, limit: float) -> tuple[float, float]:
    v0 = limit * float(rng.uniform(0.75, 1.0))
    a0 = float(rng.uniform(0.0, 0.5)) if v0 < 0.93 * limit else 0.0
    return v0, a0


class LaneFollow(Family):
    """Plain driving on a straight road with 1-3 lanes per direction and background traffic; sometimes a
    distant car ahead at about the speed limit."""

    name = "lane_follow"
    negative_kinds = ("hesitate", "drift_out_of_lane")
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        width = float(rng.uniform(3.2, 3.8))
        limit = float(rng.uniform(9.0, 17.0))
        layout = build_road(rng, n_fwd, n_bwd, width, limit, int(rng.integers(n_fwd)))
        path = layout.lane_path
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0, a0 = _start_speed(rng, limit)
        tracks = background_traffic(rng, layout, s0, v0)
        if rng.random() < 0.5:
            gap = float(rng.uniform(45.0, 75.0))
            tracks.append(lead_track(rng, path, constant_speed_s(s0 + gap, limit * float(rng.uniform(0.9, 1.0))), role="distant_lead"))
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, a0), rng,
            {"lane_path": path, "drift_side": None}, route=path,
        )


class Curve(Family):
    """Lane following through a bend (radius 45-160 m, either direction) at the speed it allows."""

    name = "curve"
    negative_kinds = ("drift_out_of_lane", "hesitate")
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.3, 3.8))
        radius = float(rng.uniform(45.0, 160.0))
        side = 1.0 if rng.random() < 0.5 else -1.0
        angle = side * float(rng.uniform(0.7, 1.4))
        s_curve = -ROAD_START + float(rng.uniform(-25.0, 25.0))
        # lanes on the inside of the bend are tighter than the divider's radius
        tightest = radius - (n_fwd * width if side < 0 else 0.0)
        limit = float(min(17.0, np.sqrt(tightest * rng.uniform(1.1, 1.7))))
        layout = build_road(rng, n_fwd, n_bwd, width, limit, int(rng.integers(n_fwd)), curve=(s_curve, radius, angle))
        path = layout.lane_path
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-3.0, 3.0))
        v0, a0 = _start_speed(rng, limit)
        tracks = background_traffic(rng, layout, s0, v0, max_per_lane=2)
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, a0), rng,
            {"lane_path": path, "drift_side": -side, "bend": "left" if side > 0 else "right", "radius": radius},
            route=path,
        )

    def critical(self, scenario, plan):
        if scenario.speed_limit**2 / scenario.facts["radius"] < 1.3:
            return []
        ahead = scenario.route.point_at(plan.profile.s[15] + 25.0)
        return [CriticalObject("road_curve", relative_location(plan, ahead), f"bending to the {scenario.facts['bend']}")]

    def reason(self, scenario, plan):
        return "I follow the bend at a speed that keeps the lateral acceleration comfortable"
