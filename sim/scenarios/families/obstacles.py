"""Obstacles at the lane edge and narrow roads: nudging around a parked car or cones that stick into the
lane; yielding to an oncoming car that swerves into the ego lane around a car parked on its side.

facts: "lane_path", "avoidance" (the nudge's lateral components), "obstacle_tokens", "drift_side",
"yield_to" (tokens the expert should wait for).
"""
from __future__ import annotations

import numpy as np

from sim.conventions import PACIFICA
from sim.scene import CriticalObject, StaticObject
from sim.scenarios.expert import EGO_FRONT
from sim.scenarios.families.base import road_scenario, Family, background_traffic, build_road, ego_s_on_lane, relative_location, track_by_token
from sim.scenarios.longitudinal import CURRENT
from sim.paths import LateralProfile, Smoothstep
from sim.scenarios.scenario import EgoStart, Scenario
from sim.scenarios.traffic import constant_speed_s, parked, track_on_path, vehicle_dims

NUDGE_CLEARANCE = (0.5, 0.7)


class ParkedObstacle(Family):
    """A parked car or van, or a row of cones, sticks 0.6-1.1 m into the ego lane from the kerb: nudge."""

    name = "parked_obstacle"
    negative_kinds = ("ignore_obstacle", "hesitate")
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.3, 3.8))
        limit = float(rng.uniform(8.0, 13.0))
        ego_lane = n_fwd - 1  # the kerb-side lane
        layout = build_road(rng, n_fwd, n_bwd, width, limit, ego_lane)
        path = layout.lane_path
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.75, 0.95))
        intrusion = float(rng.uniform(0.6, 1.1))
        s_obs = s0 + EGO_FRONT + float(rng.uniform(18.0, 38.0))
        tracks, statics = [], []
        if rng.random() < 0.65:
            dims = vehicle_dims(rng)
            d_obs = -(width / 2.0) - dims.width / 2.0 + intrusion
            pose = path.frenet_to_pose(np.array([s_obs]), np.array([d_obs]))[0]
            tracks.append(parked("parked", dims, pose))
            half_length, inner_edge, tokens, kind = dims.length / 2.0, d_obs + dims.width / 2.0, ("parked",), "parked_vehicle"
        else:
            n_cones = int(rng.integers(3, 6))
            half_length = 2.0 * (n_cones - 1) / 2.0 + 0.25
            for k in range(n_cones):
                s = s_obs - half_length + 0.25 + 2.0 * k
                pose = path.frenet_to_pose(np.array([s]), np.array([-(width / 2.0) + intrusion - 0.25]))[0]
                statics.append(StaticObject(f"cone_{k}", "traffic_cone", float(pose[0]), float(pose[1]), float(pose[2]), 0.45, 0.45, 0.75))
            inner_edge, tokens, kind = -(width / 2.0) + intrusion, tuple(o.token for o in statics), "construction_zone"
        offset = max(0.0, inner_edge + PACIFICA.width / 2.0 + float(rng.uniform(*NUDGE_CLEARANCE)))
        ramp = max(12.0, 1.8 * v0)
        plateau_in = s_obs - half_length - EGO_FRONT - 1.5
        plateau_out = s_obs + half_length + PACIFICA.rear_length + 1.5
        bump = (Smoothstep(plateau_in - ramp, plateau_in, 0.0, offset), Smoothstep(plateau_out, plateau_out + ramp, 0.0, -offset))
        tracks += background_traffic(rng, layout, s0, v0, max_per_lane=2)
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0, LateralProfile(bump)), rng,
            {"lane_path": path, "avoidance": bump, "obstacle_tokens": tokens, "drift_side": -1.0, "obstacle_s": s_obs, "kind": kind},
            route=path, statics=statics,
        )

    def critical(self, scenario, plan):
        where = scenario.facts["lane_path"].point_at(scenario.facts["obstacle_s"])
        if scenario.facts["kind"] == "parked_vehicle":
            return [CriticalObject("parked_vehicle", relative_location(plan, where), "sticking into my lane")]
        return [CriticalObject("construction_zone", relative_location(plan, where), "narrowing my lane")]

    def reason(self, scenario, plan):
        return "There is room to pass it within the road if I keep a small lateral margin"


class NarrowOncoming(Family):
    """A narrow two-way road: an oncoming car swerves into the ego lane around a car parked on its side."""

    name = "narrow_oncoming"
    negative_kinds = ("no_yield",)
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        width = float(rng.uniform(2.9, 3.2))
        limit = float(rng.uniform(7.0, 9.5))
        layout = build_road(rng, 1, 1, width, limit, 0)
        path = layout.lane_path
        road = layout.road
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.75, 0.95))
        # the parked car sits mostly on the far kerb, its inner half in the oncoming lane
        distance = float(rng.uniform(26.0, 38.0))
        s_park = s0 + EGO_FRONT + distance
        park_dims = vehicle_dims(rng, allow_truck=False)
        park_pose = path.frenet_to_pose(np.array([s_park]), np.array([2 * width + 0.3 - width / 2.0]))[0]
        park_pose[2] += np.pi
        tracks = [parked("parked", park_dims, park_pose)]
        # the oncoming car, along the backward lane (its own arc length runs against the ego's); it passes
        # the parked car 2-3.5 s from now, about when an ego keeping its speed would meet it there
        back = road.backward_path(0)
        s_park_back, _ = back.project(park_pose[:2])
        dims = vehicle_dims(rng, allow_truck=False)
        v_onc = float(rng.uniform(6.0, 9.0))
        t_pass = float(rng.uniform(2.0, 3.5))
        s_onc = constant_speed_s(float(s_park_back) - v_onc * t_pass, v_onc)
        swerve = width / 2.0 + float(rng.uniform(0.5, 1.0)) - dims.width / 2.0 + 0.2
        half = park_dims.length / 2.0 + dims.length / 2.0
        around = LateralProfile((Smoothstep(s_park_back - half - 12.0, s_park_back - half - 2.0, 0.0, swerve), Smoothstep(s_park_back + half + 1.0, s_park_back + half + 7.0, 0.0, -swerve)))
        d_onc, _ = around(s_onc)
        tracks.append(track_on_path("oncoming", "vehicle", dims, back, s_onc, d_onc, role="oncoming"))
        # later oncoming traffic keeps to its lane
        for k in range(int(rng.integers(0, 3))):
            s_k = s_onc[CURRENT] - float(rng.uniform(25.0, 40.0)) * (k + 1)
            tracks.append(track_on_path(f"oncoming_{k}", "vehicle", vehicle_dims(rng), back, constant_speed_s(s_k, v_onc), role="oncoming_background"))
        return road_scenario(
            self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng,
            {"lane_path": path, "yield_to": ("oncoming",), "drift_side": 1.0}, route=path,
        )

    def accept(self, scenario, plan) -> bool:
        return bool(plan.slowed_for(("oncoming",)))

    def critical(self, scenario, plan):
        oncoming = track_by_token(scenario, "oncoming")
        return [CriticalObject("oncoming_vehicle", relative_location(plan, oncoming.poses[CURRENT]), "approaching a car parked in its lane")]

    def reason(self, scenario, plan):
        return "It will swerve into my lane to pass the parked car and the road is too narrow for both of us, so I let it pass first"

