"""Shared layout of the junction families: the ego approaches from the west arm ("W", driving east) and
leaves straight ("E"), left ("N") or right ("S"); streams of other traffic through the junction obey
their own lights (IDM with stop rules) and keep constant speeds otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from sim.scenarios.expert import EGO_FRONT
from sim.scenarios.intersection import Connector, Junction, build_junction
from sim.scenarios.longitudinal import FINE_TIMES, IDM, StopRule, active_mask
from sim.paths import Path
from sim.scenarios.road import MapBuilder
from sim.scenarios.traffic import Track, idm_followers, track_on_path, vehicle_dims

EXIT_ARM = {"straight": "E", "left": "N", "right": "S"}
NUM_FRAMES = 14  # 2 Hz light states over t = -1.5 ... 5.0 s


@dataclass
class JunctionLayout:
    builder: MapBuilder
    junction: Junction
    connector: Connector
    route: Path
    route_roadblocks: set[str]
    approach: Path  # the ego's approaching lane
    s_stop: float  # route arc length of the stop line's near edge
    s_enter: float  # route arc length where the junction begins
    s_exit: float  # route arc length where the ego leaves the junction
    lane_width: float
    speed_limit: float
    turn: str


def junction_layout(
    rng: np.random.Generator,
    turn: str,
    arms: tuple[str, ...],
    lanes: int,
    speed_limit: float,
    corner_radius: tuple[float, float] = (5.0, 9.0),
) -> JunctionLayout:
    """A junction with `lanes` lanes per direction on every arm; the ego's route through it makes `turn`.
    Tight kerbs (small corner radius) put the stop line close to the crossing road. A car turning left
    along the connector's centre line swings its front corner about 1.8 m outside it: single-lane exits
    are too narrow for that, so left turns always get two lanes per direction."""
    if turn == "left":
        lanes = 2
    width = float(rng.uniform(3.2, 3.6))
    corner = float(rng.uniform(*corner_radius))
    lengths = {a: 90.0 for a in arms}
    lengths["W"] = 110.0
    lengths[EXIT_ARM[turn]] = 160.0
    builder = MapBuilder()
    junction = build_junction(builder, np.zeros(2), {a: lanes for a in arms}, width, corner, lengths, speed_limit)
    to_arm = EXIT_ARM[turn]
    if turn == "left":
        j = 0
    elif turn == "right":
        j = lanes - 1
    else:
        j = int(rng.integers(lanes))
    connector = junction.connector("W", to_arm, j)
    approach = junction.incoming_path("W", j)
    route = junction.movement_path(connector)
    s_enter = approach.length
    return JunctionLayout(
        builder=builder,
        junction=junction,
        connector=connector,
        route=route,
        route_roadblocks={"W:B", connector.roadblock_id, f"{to_arm}:F"},
        approach=approach,
        s_stop=junction.stop_s("W", j),
        s_enter=s_enter,
        s_exit=s_enter + connector.path.length,
        lane_width=width,
        speed_limit=speed_limit,
        turn=turn,
    )


def light_states(change_at: Optional[float], before: str, after: str, amber_s: float = 0.0) -> list[str]:
    """14 states at 2 Hz: `before` until `change_at` (s), `after` from then on (with `amber_s` of yellow
    before a change to red)."""
    states = []
    for k in range(NUM_FRAMES):
        t = -1.5 + 0.5 * k
        if change_at is None or t < change_at - (amber_s if after == "red" else 0.0):
            states.append(before)
        elif after == "red" and t < change_at:
            states.append("yellow")
        else:
            states.append(after)
    return states


def ego_approach(rng: np.random.Generator, layout: JunctionLayout, min_distance: float, max_distance: float, stopped_share: float) -> tuple[float, float, float]:
    """(s0, v0, a0): the ego before the stop line, slow enough to stop there comfortably."""
    if rng.random() < stopped_share:
        gap = float(rng.uniform(0.9, 2.0))
        return layout.s_stop - gap - EGO_FRONT, 0.0, 0.0
    distance = float(rng.uniform(min_distance, max_distance))
    comfortable = np.sqrt(2.0 * 1.8 * max(distance - 2.0, 0.5))
    v0 = float(min(layout.speed_limit * rng.uniform(0.6, 1.0), comfortable))
    a0 = -float(rng.uniform(0.0, 0.8)) if v0 > 3.0 else 0.0
    return layout.s_stop - distance - EGO_FRONT, v0, a0


def traffic_stream(
    rng: np.random.Generator,
    junction: Junction,
    connector: Connector,
    prefix: str,
    pass_times: list[float],
    speed: float,
    states: Optional[list[str]],
    role: str,
    queue: int = 0,
    queue_setback: float = 1.0,
) -> list[Track]:
    """Cars on one movement through the junction (approach + connector + exit).

    pass_times: when each car (front to back) would reach the junction boundary at `speed`; with `states`
    (their light) they stop at their stop line while it is red or yellow (IDM). queue: extra cars standing
    at the stop line at t = -1.5 s (a queue at a red light), the first `queue_setback` m behind it."""
    path = junction.movement_path(connector)
    s_boundary = junction.incoming_path(connector.from_arm, connector.from_lane).length
    s_stop = junction.stop_s(connector.from_arm, connector.from_lane) - (queue_setback - 1.0)
    stops = [] if states is None else [StopRule(s_stop, active_mask(states), "red_light")]
    idm = IDM(target_speed=speed, headway=0.9, min_gap=2.0, a_max=2.0, b_comf=3.0, a_min=-5.0, jerk_max=8.0)
    dims, starts = [], []
    s_queue = s_stop - 1.0
    for _ in range(queue):
        d = vehicle_dims(rng, allow_truck=False)
        starts.append((s_queue - d.length / 2.0, 0.0))
        dims.append(d)
        s_queue -= d.length + float(rng.uniform(1.5, 3.0))
    for t_pass in sorted(pass_times):
        d = vehicle_dims(rng, allow_truck=False)
        s_start = s_boundary - speed * (t_pass - FINE_TIMES[0]) - d.length / 2.0
        if starts and s_start > starts[-1][0] - dims[-1].length - 6.0:
            continue  # too close behind the previous car
        starts.append((s_start, speed))
        dims.append(d)
    if not starts:
        return []
    profiles = idm_followers(path, None, 0.0, starts, [d.length for d in dims], idm, stops)
    return [track_on_path(f"{prefix}_{k}", "vehicle", d, path, s, role=role) for k, (d, s) in enumerate(zip(dims, profiles))]


def platoon_times(rng: np.random.Generator, t_from: float, t_to: float, headway: tuple[float, float]) -> list[float]:
    """Boundary passing times of a platoon covering [t_from, t_to] with random headways."""
    times, t = [], t_from + float(rng.uniform(0.0, headway[0]))
    while t < t_to:
        times.append(t)
        t += float(rng.uniform(*headway))
    return times
