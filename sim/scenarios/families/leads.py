"""Car following: a braking lead, a cut-in from the next lane, stop-and-go queues.

facts: "lane_path", "lead" (token of the car the ego follows: the too-close recovery moves up to it).
"""
from __future__ import annotations

import numpy as np

from sim.scene import CriticalObject
from sim.scenarios.expert import EGO_FRONT
from sim.scenarios.families.base import road_scenario, Family, background_traffic, build_road, ego_s_on_lane, relative_location, track_by_token
from sim.scenarios.longitudinal import CURRENT, FINE_TIMES, IDM
from sim.paths import Smoothstep
from sim.scenarios.scenario import EgoStart, Scenario
from sim.scenarios.traffic import braking_speeds, idm_followers, speed_profile_s, track_on_path, vehicle_dims


def _scenario(name, layout, limit, width, tracks, start, rng, facts) -> Scenario:
    return road_scenario(name, layout, limit, width, tracks, start, rng, {"lane_path": layout.lane_path, **facts})


class LeadBraking(Family):
    """The car ahead in the ego lane brakes (2.5-4.5 m/s^2), to a stop or to a lower speed."""

    name = "lead_braking"
    negative_kinds = ("late_brake", "tailgate")
    recovery_kinds = ("too_close", "off_centre")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.2, 3.8))
        limit = float(rng.uniform(10.0, 17.0))
        layout = build_road(rng, n_fwd, n_bwd, width, limit, int(rng.integers(n_fwd)))
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.8, 1.0))
        dims = vehicle_dims(rng)
        gap = v0 * float(rng.uniform(1.1, 1.8)) + 2.5
        v_lead = max(3.0, v0 + float(rng.uniform(-1.5, 0.5)))
        to_stop = rng.random() < 0.5
        v_final = 0.0 if to_stop else v_lead * float(rng.uniform(0.2, 0.5))
        speeds = braking_speeds(v_lead, float(rng.uniform(0.0, 1.2)), float(rng.uniform(2.5, 4.5)), v_final)
        s_lead = speed_profile_s(s0 + EGO_FRONT + gap + dims.length / 2.0, speeds)
        lead = track_on_path("lead", "vehicle", dims, layout.lane_path, s_lead, role="lead")
        tracks = [lead] + background_traffic(rng, layout, s0, v0)
        facts = {"lead": "lead", "lead_stops": to_stop}
        return _scenario(self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng, facts)

    def critical(self, scenario, plan):
        lead = track_by_token(scenario, "lead")
        behaviour = "braking to a stop" if scenario.facts["lead_stops"] else "braking hard"
        return [CriticalObject("vehicle", relative_location(plan, lead.poses[CURRENT]), behaviour)]

    def reason(self, scenario, plan):
        return "I need to keep a safe gap to it"


class CutIn(Family):
    """A slower car from the next lane cuts in close ahead of the ego."""

    name = "cut_in"
    negative_kinds = ("late_brake",)
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.3, 3.8))
        limit = float(rng.uniform(11.0, 17.0))
        ego_lane = int(rng.integers(n_fwd))
        layout = build_road(rng, n_fwd, n_bwd, width, limit, ego_lane)
        choices = [c for c in (ego_lane - 1, ego_lane + 1) if 0 <= c < n_fwd]
        cut_lane = choices[int(rng.integers(len(choices)))]
        s0 = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        v0 = limit * float(rng.uniform(0.75, 0.95))
        dims = vehicle_dims(rng, allow_truck=False)
        ahead = float(rng.uniform(6.0, 14.0))
        v_cut = max(4.0, v0 - float(rng.uniform(0.5, 3.0)))
        t_cut, duration = float(rng.uniform(-0.5, 1.0)), float(rng.uniform(2.5, 3.5))
        if rng.random() < 0.7:
            speeds = braking_speeds(v_cut, t_cut + duration * 0.7, float(rng.uniform(1.5, 3.0)), v_cut * float(rng.uniform(0.2, 0.6)))
        else:
            speeds = np.full(len(FINE_TIMES), v_cut)
        s_cut = speed_profile_s(s0 + EGO_FRONT + ahead + dims.length / 2.0, speeds)
        shift = Smoothstep(t_cut, t_cut + duration, 0.0, layout.road.forward_offset(ego_lane) - layout.road.forward_offset(cut_lane))
        d_cut, _ = shift(FINE_TIMES)
        cutter = track_on_path("cut_in", "vehicle", dims, layout.road.forward_path(cut_lane), s_cut, d_cut, role="cut_in")
        tracks = [cutter] + background_traffic(rng, layout, s0, v0, skip_lanes=(cut_lane,))
        facts = {"lead": None, "cut_side": "left" if cut_lane < ego_lane else "right"}
        return _scenario(self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng, facts)

    def critical(self, scenario, plan):
        cutter = track_by_token(scenario, "cut_in")
        side = scenario.facts["cut_side"]
        # what the cameras show at t = 0: already drifting over, or still in its lane
        origin = plan.poses[CURRENT]
        lateral_speed = float(-np.sin(origin[2]) * cutter.velocities[CURRENT, 0] + np.cos(origin[2]) * cutter.velocities[CURRENT, 1])
        moving_over = abs(lateral_speed) > 0.3
        behaviour = f"moving over into my lane from the {side}" if moving_over else "driving slower than me in the next lane"
        return [CriticalObject("vehicle", relative_location(plan, cutter.poses[CURRENT]), behaviour)]

    def reason(self, scenario, plan):
        return "It is about to cut in close in front of me"


class StopAndGo(Family):
    """A queue in the ego lane moving in stop-and-go waves; the ego follows the last car."""

    name = "stop_and_go"
    negative_kinds = ("late_brake", "tailgate")
    recovery_kinds = ("too_close", "off_centre")

    def layout(self, rng: np.random.Generator) -> Scenario:
        n_fwd, n_bwd = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        width = float(rng.uniform(3.2, 3.7))
        limit = float(rng.uniform(10.0, 14.0))
        layout = build_road(rng, n_fwd, n_bwd, width, limit, int(rng.integers(n_fwd)))
        path = layout.lane_path
        s_ego = ego_s_on_lane(layout) + float(rng.uniform(-5.0, 5.0))
        mean, amp = float(rng.uniform(3.0, 5.5)), float(rng.uniform(3.0, 5.5))
        period, phase = float(rng.uniform(6.0, 10.0)), float(rng.uniform(0.0, 2 * np.pi))
        front_speed = np.maximum(0.0, mean + amp * np.cos(2 * np.pi * FINE_TIMES / period + phase))
        n_queue = int(rng.integers(2, 5))
        dims = [vehicle_dims(rng, allow_truck=False) for _ in range(n_queue)]
        spacing = [float(rng.uniform(9.0, 14.0)) + d.length for d in dims]
        s_front_at_zero = s_ego + 20.0 + sum(spacing)
        front_s = speed_profile_s(s_front_at_zero, front_speed)
        idm = IDM(target_speed=limit, headway=1.2, min_gap=2.0, a_max=1.5, b_comf=2.5)
        starts, s_prev = [], front_s[0]
        for gap in spacing[1:]:
            s_prev -= gap
            starts.append((s_prev, front_speed[0]))
        followers = idm_followers(path, front_s, dims[0].length, starts, [d.length for d in dims[1:]], idm)
        queue_s = [front_s] + followers
        tracks = [track_on_path(f"queue_{i}", "vehicle", d, path, s, role="queue") for i, (d, s) in enumerate(zip(dims, queue_s))]
        last = queue_s[-1]
        v_last = float(np.gradient(last, 0.1)[CURRENT])
        v0 = max(1.0, v_last + float(rng.uniform(0.0, 1.5)))
        gap_ego = v0 * float(rng.uniform(1.1, 1.6)) + 2.5
        s0 = float(last[CURRENT]) - dims[-1].length / 2.0 - gap_ego - EGO_FRONT
        tracks += background_traffic(rng, layout, s0, v0, max_per_lane=2)
        facts = {"lead": f"queue_{n_queue - 1}"}
        return _scenario(self.name, layout, limit, width, tracks, EgoStart(s0, v0, 0.0), rng, facts)

    def critical(self, scenario, plan):
        lead = track_by_token(scenario, scenario.facts["lead"])
        return [CriticalObject("vehicle", relative_location(plan, lead.poses[CURRENT]), "moving in stop-and-go traffic")]

    def reason(self, scenario, plan):
        return "The queue keeps stopping and starting, so I match its speed with a safe gap"
