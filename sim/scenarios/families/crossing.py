"""Vulnerable road users crossing: a pedestrian or a cyclist crosses the road ahead from either side,
timed so that it is in the ego lane when an ego keeping its speed would get there.

facts: "lane_path", "yield_to", "vru" (token), "vru_kind" ("pedestrian" | "cyclist"), "from_side".
"""
from __future__ import annotations

import numpy as np

from sim.scene import CriticalObject
from sim.scenarios.expert import EGO_FRONT
from sim.scenarios.families.base import road_scenario, Family, background_traffic, build_road, ego_s_on_lane, relative_location, track_by_token
from sim.scenarios.longitudinal import CURRENT
from sim.scenarios.scenario import EgoStart, Scenario
from sim.scenarios.traffic import bicycle_dims, crossing_walk, free_track, pedestrian_dims


class VRUCrossing(Family):
    """A pedestrian (or cyclist) crosses ahead: slow down and wait until it has left the ego's path."""

    name = "vru_crossing"
    negative_kinds = ("no_yield",)
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.2, 3.6))
        limit = float(rng.uniform(8.0, 13.0))
        ego_lane = int(rng.integers(n_fwd))
        layout = build_road(rng, n_fwd, n_bwd, width, limit, ego_lane)
        road, path = layout.road, layout.lane_path
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.75, 0.95))
        distance = max(float(rng.uniform(16.0, 36.0)), v0**2 / (2 * 2.5) + 8.0)
        s_cross = s0 + EGO_FRONT + distance
        cyclist = rng.random() < 0.3
        from_right = rng.random() < 0.5
        kind, dims = ("bicycle", bicycle_dims(rng)) if cyclist else ("pedestrian", pedestrian_dims(rng))
        speed = float(rng.uniform(3.5, 5.5)) if cyclist else float(rng.uniform(1.1, 1.7))
        # in the road's reference frame: the carriageway spans d in [-n_fwd W, n_bwd W]
        edge = -road.n_forward * width - 1.2 if from_right else road.n_backward * width + 1.2
        start_pose = road.reference.frenet_to_pose(np.array([s_cross]), np.array([edge]))[0]
        heading = start_pose[2] + (np.pi / 2.0 if from_right else -np.pi / 2.0)
        to_lane = abs(road.forward_offset(ego_lane) - edge)
        arrival = distance / max(v0, 1.0)
        accel = 2.5 if cyclist else 1.5
        # time to reach the ego lane from a standstill: distance / speed + the speeding-up phase
        t_start = arrival + float(rng.uniform(-0.8, 0.6)) - (to_lane / speed + speed / (2.0 * accel))
        walk = crossing_walk(start_pose[:2], float(heading), speed, t_start, accel=accel)
        vru = free_track("vru", kind, dims, walk, role="crossing")
        tracks = [vru] + background_traffic(rng, layout, s0, v0, max_per_lane=2)
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng,
            {"lane_path": path, "yield_to": ("vru",), "vru": "vru", "vru_kind": "cyclist" if cyclist else "pedestrian", "from_side": "right" if from_right else "left"},
            route=path,
        )

    def accept(self, scenario, plan) -> bool:
        return bool(plan.slowed_for(("vru",)))

    def critical(self, scenario, plan):
        vru = track_by_token(scenario, "vru")
        moving = np.linalg.norm(vru.velocities[CURRENT]) > 0.2
        behaviour = f"crossing from the {scenario.facts['from_side']}" if moving else f"about to cross from the {scenario.facts['from_side']}"
        return [CriticalObject(scenario.facts["vru_kind"], relative_location(plan, vru.poses[CURRENT]), behaviour)]

    def reason(self, scenario, plan):
        return "It will be in my path, so I must not pass before it has crossed"
