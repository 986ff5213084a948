"""Junction families: a stop sign with priority cross traffic, a red light with cross traffic, protected
turns on a green arrow, and an unprotected left turn through oncoming traffic.

The ego approaches from the west arm. The driving command comes from the route (the turn is in reach).
facts: "lane_path" (the approaching lane), "turn_span" (route arc lengths of the junction), "stop_is_rule"
(a stop for a sign or light is labelled "stop", not "yield"), "yield_to", "light" (ego light states).
"""
from __future__ import annotations

import numpy as np

from sim.scene import CriticalObject
from sim.scenarios.families.base import Family, default_idm, relative_location
from sim.scenarios.families.junction_common import (
    JunctionLayout,
    ego_approach,
    junction_layout,
    light_states,
    platoon_times,
    traffic_stream,
)
from sim.scenarios.intersection import add_stop_lines, lights_for_arm
from sim.scenarios.longitudinal import CURRENT, StopRule, active_mask
from sim.scenarios.scenario import EgoStart, Scenario


def _turn(rng: np.random.Generator, weights=(0.6, 0.2, 0.2)) -> str:
    return ("straight", "left", "right")[int(rng.choice(3, p=np.array(weights)))]


def _scenario(name, layout: JunctionLayout, tracks, lights, start, stops, rng, facts) -> Scenario:
    return Scenario(
        family=name,
        builder=layout.builder,
        route=layout.route,
        route_roadblocks=layout.route_roadblocks,
        speed_limit=layout.speed_limit,
        lane_width=layout.lane_width,
        tracks=tracks,
        statics=[],
        lights=lights,
        start=start,
        stops=stops,
        idm=default_idm(rng, layout.speed_limit),
        turn=layout.turn,
        turn_end_s=layout.s_exit,
        facts={"lane_path": layout.approach, "turn_span": (layout.s_enter, layout.s_exit), **facts},
    )


def _cross_streams(rng, layout: JunctionLayout, states, t_from, t_to, headway, speed, queue=0, near_headway=None) -> list:
    """Through traffic on the north and south arms (every lane). The southbound lanes (from "N") are the
    near side for the ego coming from the west; `near_headway` makes them denser."""
    tracks = []
    for arm, to in (("N", "S"), ("S", "N")):
        if arm not in layout.junction.arms or to not in layout.junction.arms:
            continue
        for c in layout.junction.connectors_from(arm):
            if c.to_arm != to:
                continue
            gaps = near_headway if (arm == "N" and near_headway is not None) else headway
            times = platoon_times(rng, t_from, t_to, gaps)
            tracks += traffic_stream(rng, layout.junction, c, f"cross_{arm}{c.from_lane}", times, speed, states, "cross_traffic", queue)
    return tracks


class StopSign(Family):
    """A stop sign on the ego's approach; the crossing road has priority and steady traffic."""

    name = "stop_sign"
    negative_kinds = ("run_stop_sign", "late_brake")
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        turn = _turn(rng)
        lanes = int(rng.integers(1, 3))
        layout = junction_layout(rng, turn, ("E", "N", "W", "S"), lanes, float(rng.uniform(9.0, 13.0)), (2.0, 3.5))
        add_stop_lines(layout.builder, layout.junction, "W", "stop_sign")
        add_stop_lines(layout.builder, layout.junction, "E", "stop_sign")
        s0, v0, a0 = ego_approach(rng, layout, 6.0, 30.0, stopped_share=0.2)
        speed = float(rng.uniform(8.0, 12.0))
        tracks = _cross_streams(rng, layout, None, -1.0, 7.0, (1.8, 3.5), speed, near_headway=(1.3, 2.2))
        stops = [StopRule(layout.s_stop, np.ones(66, dtype=bool), "stop_sign", hold_s=1.0)]
        facts = {"stop_is_rule": True, "stop_s": layout.s_stop}
        return _scenario(self.name, layout, tracks, [], EgoStart(s0, v0, a0), stops, rng, facts)

    def critical(self, scenario, plan):
        where = scenario.route.point_at(scenario.facts["stop_s"])
        return [CriticalObject("stop_sign", relative_location(plan, where), "requiring a full stop before the crossing road")]

    def reason(self, scenario, plan):
        return "Cross traffic has priority, so I go only when the crossing is clear"


class RedLight(Family):
    """The ego's light is red (sometimes turning green late); the crossing road has a green light and
    dense traffic, so running the red means a crash."""

    name = "red_light"
    negative_kinds = ("run_red", "late_brake")
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        turn = _turn(rng, (0.7, 0.15, 0.15))
        lanes = int(rng.integers(1, 3))
        layout = junction_layout(rng, turn, ("E", "N", "W", "S"), lanes, float(rng.uniform(10.0, 14.0)), (3.0, 5.0))
        add_stop_lines(layout.builder, layout.junction, "W", "traffic_light")
        green_at = float(rng.uniform(2.0, 4.0)) if rng.random() < 0.35 else None
        ego_states = light_states(green_at, "red", "green")
        cross_states = light_states(None if green_at is None else green_at - 1.0, "green", "red", amber_s=2.5)
        lights = lights_for_arm(layout.junction, "W", ego_states) + lights_for_arm(layout.junction, "E", ego_states)
        lights += lights_for_arm(layout.junction, "N", cross_states) + lights_for_arm(layout.junction, "S", cross_states)
        s0, v0, a0 = ego_approach(rng, layout, 8.0, 40.0, stopped_share=0.2)
        speed = float(rng.uniform(9.0, 13.0))
        tracks = _cross_streams(rng, layout, cross_states, -1.0, 6.0, (1.3, 2.2), speed, near_headway=(1.0, 1.7))
        stops = [StopRule(layout.s_stop, active_mask(ego_states), "red_light")]
        facts = {"stop_is_rule": True, "light": ego_states, "green_at": green_at}
        return _scenario(self.name, layout, tracks, lights, EgoStart(s0, v0, a0), stops, rng, facts)

    def critical(self, scenario, plan):
        return [_light_object_for(scenario, plan, "red")]

    def reason(self, scenario, plan):
        return "Cross traffic is flowing through the junction on its green"


def _light_object_for(scenario: Scenario, plan, words: str) -> CriticalObject:
    light = next(l for l in scenario.lights if l.lane_connector_id in {ln.id for ln in scenario.builder.lanes if ln.roadblock_id in scenario.route_roadblocks})
    return CriticalObject("traffic_light", relative_location(plan, np.array(light.head[:2])), words)


class ProtectedTurn(Family):
    """A left or right turn on a green arrow (crossing and opposing traffic wait at red), sometimes at a
    T-junction where going straight leaves the road."""

    name = "protected_turn"
    negative_kinds = ("cut_corner",)
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        turn = "left" if rng.random() < 0.5 else "right"
        arms = ("N", "W", "S") if rng.random() < 0.7 else ("E", "N", "W", "S")
        lanes = int(rng.integers(1, 3))
        layout = junction_layout(rng, turn, arms, lanes, float(rng.uniform(8.0, 10.5)))
        add_stop_lines(layout.builder, layout.junction, "W", "traffic_light")
        green, red = light_states(None, "green", "green"), light_states(None, "red", "red")
        lights = lights_for_arm(layout.junction, "W", green)
        waiting = []
        for arm in arms:
            if arm == "W":
                continue
            lights += lights_for_arm(layout.junction, arm, red)
            for c in layout.junction.connectors_from(arm):
                if c.turn == "straight" or (arm == "N" and "E" not in arms and c.turn == "right"):
                    # a few metres back from the line: the ego's turn sweeps past the front of the queue
                    waiting += traffic_stream(
                        rng, layout.junction, c, f"wait_{c.lane_id}", [], 10.0, red, "waiting",
                        queue=int(rng.integers(0, 3)), queue_setback=float(rng.uniform(3.0, 6.0)),
                    )
        s0, _, _ = ego_approach(rng, layout, 3.0, 15.0, stopped_share=0.0)
        scenario = _scenario(self.name, layout, waiting, lights, EgoStart(s0, 0.0, 0.0), [], rng, {"stop_is_rule": False})
        # on a green arrow the ego arrives at the speed the turn allows, not ready to stop
        v0 = min(layout.speed_limit * float(rng.uniform(0.7, 1.0)), scenario.speed_cap.at(s0) + 1.0)
        scenario.start = EgoStart(s0, v0, 0.0)
        return scenario

    def critical(self, scenario, plan):
        return [_light_object_for(scenario, plan, f"showing a green arrow to the {scenario.turn}")]

    def reason(self, scenario, plan):
        return f"The other approaches are stopped at red, so I take the {scenario.turn} turn at a comfortable speed"


class UnprotectedLeft(Family):
    """A left turn on a plain green: oncoming traffic has priority; wait in the junction for a gap."""

    name = "unprotected_left"
    negative_kinds = ("no_yield",)
    recovery_kinds = ("off_centre", "bad_heading")

    def layout(self, rng: np.random.Generator) -> Scenario:
        lanes = int(rng.integers(1, 3))
        layout = junction_layout(rng, "left", ("E", "N", "W", "S"), lanes, float(rng.uniform(9.0, 12.0)))
        add_stop_lines(layout.builder, layout.junction, "W", "traffic_light")
        green, red = light_states(None, "green", "green"), light_states(None, "red", "red")
        lights = lights_for_arm(layout.junction, "W", green) + lights_for_arm(layout.junction, "E", green)
        lights += lights_for_arm(layout.junction, "N", red) + lights_for_arm(layout.junction, "S", red)
        speed = float(rng.uniform(8.0, 12.0))
        tracks = []
        for c in layout.junction.connectors_from("E"):
            if c.to_arm == "W":
                times = platoon_times(rng, float(rng.uniform(-1.0, 1.5)), float(rng.uniform(3.0, 6.0)), (1.6, 3.0))
                tracks += traffic_stream(rng, layout.junction, c, f"oncoming_{c.from_lane}", times, speed, green, "oncoming")
        s0, v0, a0 = ego_approach(rng, layout, 5.0, 25.0, stopped_share=0.15)
        facts = {"stop_is_rule": False, "yield_to": tuple(t.token for t in tracks)}
        return _scenario(self.name, layout, tracks, lights, EgoStart(s0, v0, 0.0), [], rng, facts)

    def accept(self, scenario, plan) -> bool:
        return bool(plan.slowed_for(scenario.facts["yield_to"]))

    def critical(self, scenario, plan):
        first = min((t for t in scenario.tracks if t.role == "oncoming"), key=lambda t: np.hypot(*(t.poses[CURRENT, :2] - plan.poses[CURRENT, :2])))
        return [CriticalObject("oncoming_vehicle", relative_location(plan, first.poses[CURRENT]), "driving straight through the junction")]

    def reason(self, scenario, plan):
        return "Oncoming traffic has the right of way on a plain green"
