"""Objects around the ego at every 10 Hz step, as NAVSIM's metric cache holds them.

NAVSIM records boxes at 2 Hz and interpolates them to 10 Hz when it builds the metric cache. The quirks
reproduced here (all from `MetricCacheProcessor._interpolate_gt_observation`):
- a track is interpolated linearly (heading unwrapped) between the frames in which it is present, gaps
  included, and exists only between its first and last appearance;
- a track present in exactly one frame is copied unchanged into every step;
- the collision classification uses each track's velocity and heading at its FIRST step in the
  observation (`Occupancy.speed`, `Occupancy.heading`), with its current polygon.
v1 caches 0-5 s (51 steps, no lights); v2 caches 0-4 s (41 steps) and adds, at each step, the polygon of
every on-route lane connector whose light is red, under the token `red_light_<lane id>`. v2 replays the
log minus any track overlapping the ego at t = 0 (`LogReplayTrafficAgents`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import shapely

from sim import conventions as C
from sim.scene import Scene

from rewards.pdm.boxes import box_coords, ego_box_polygon, polygons

RED_LIGHT = "red_light"


@dataclass
class Occupancy:
    """Per-step object polygons of one scene.

    tokens: all track tokens; per token (arrays of len(tokens)): is_agent (vehicle/pedestrian/bicycle),
      speed and heading at the first appearance, red_light (NAVSIM skips these in NC/TTC: token contains
      "red_light"), light (TLC: token starts with "red_light").
    steps: per stored step, a dict with `obj` (token indices), `poly` (shapely polygons), `center`, `radius`
      (a circle enclosing each polygon, for a conservative pre-test) and `centroid` (polygon centroids).
    step_of: maps a 10 Hz index to a stored step (PDM-Closed stores one step every 0.2 s).
    ignored: token indices ignored from the start by NC and TTC (PDM-Closed: objects touching the ego at t=0).
    """

    tokens: list[str]
    is_agent: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    red_light: np.ndarray
    light: np.ndarray
    steps: list[dict]
    step_of: np.ndarray
    ignored: frozenset = frozenset()

    def __post_init__(self):
        # every stored step padded to the same object count, for tests over all steps at once
        width = max([len(step["obj"]) for step in self.steps] + [1])
        num = len(self.steps)
        self.pad_obj = np.full((num, width), -1, dtype=np.int64)
        self.pad_poly = np.full((num, width), None, dtype=object)
        self.pad_center = np.full((num, width, 2), np.nan)
        self.pad_radius = np.full((num, width), np.nan)
        self.pad_centroid = np.full((num, width, 2), np.nan)
        for i, step in enumerate(self.steps):
            n = len(step["obj"])
            self.pad_obj[i, :n] = step["obj"]
            self.pad_poly[i, :n] = step["poly"]
            self.pad_center[i, :n] = step["center"]
            self.pad_radius[i, :n] = step["radius"]
            self.pad_centroid[i, :n] = step["centroid"]

    def at(self, k: int) -> dict:
        return self.steps[int(self.step_of[k])]

    @property
    def num_indices(self) -> int:
        return len(self.step_of)


def make_step(obj: np.ndarray, polys: np.ndarray) -> dict:
    """Bundle one step's objects with the data used by the intersection pre-test."""
    obj = np.asarray(obj, dtype=np.int64)
    if len(obj) == 0:
        empty = np.zeros((0, 2))
        return {"obj": obj, "poly": np.array([], dtype=object), "center": empty, "radius": np.zeros(0), "centroid": empty}
    bounds = shapely.bounds(polys)
    center = np.stack([(bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2], axis=-1)
    radius = 0.5 * np.hypot(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    centroid = shapely.get_coordinates(shapely.centroid(polys))
    for p in polys:
        shapely.prepare(p)
    return {"obj": obj, "poly": polys, "center": center, "radius": radius, "centroid": centroid}


def interp_linear(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """scipy's `interp1d` linear arithmetic: y (K, D) at x (K,) -> (len(x_new), D); no bounds check."""
    hi = np.clip(np.searchsorted(x, x_new, side="left"), 1, len(x) - 1)
    lo = hi - 1
    slope = (y[hi] - y[lo]) / (x[hi] - x[lo])[:, None]
    return slope * (x_new - x[lo])[:, None] + y[lo]


def _normalize_angle(angle):
    return np.arctan2(np.sin(angle), np.cos(angle))


@dataclass
class _Track:
    token: str
    is_agent: bool
    length: float
    width: float
    times: np.ndarray  # (n,) present 2 Hz times, s
    states: np.ndarray  # (n, 5) x, y, heading, vx, vy


def _scene_tracks(scene: Scene, horizon_s: float) -> list[_Track]:
    """Agents and static objects on the 2 Hz frames t = 0 ... horizon_s, in first-appearance order."""
    num_frames = int(round(horizon_s / C.LOG_INTERVAL_S)) + 1
    frame_times = np.arange(0, num_frames, 1, dtype=float) * C.LOG_INTERVAL_S
    tracks: list[_Track] = []
    for agent in scene.agents:
        rows = C.AGENT_CURRENT_INDEX + np.arange(num_frames)
        rows = rows[rows < len(agent.poses)]
        present = np.isfinite(agent.poses[rows, 0])
        if not np.any(present):
            continue
        states = np.concatenate([agent.poses[rows], np.nan_to_num(agent.velocities[rows])], axis=-1)[present]
        tracks.append(_Track(agent.token, agent.type in C.AGENT_TYPES, agent.length, agent.width,
                             frame_times[: len(rows)][present], states))
    for obj in scene.static_objects:
        states = np.tile([obj.x, obj.y, obj.heading, 0.0, 0.0], (num_frames, 1)).astype(np.float64)
        tracks.append(_Track(obj.token, obj.type in C.AGENT_TYPES, obj.length, obj.width, frame_times, states))
    first = {}
    for i, t in enumerate(tracks):
        first.setdefault(t.times[0], []).append(i)
    return [tracks[i] for t0 in sorted(first) for i in first[t0]]


def _interpolated_states(track: _Track, step_times: np.ndarray) -> np.ndarray:
    """(S, 5) states at the 10 Hz step times, NaN rows where the track does not exist."""
    out = np.full((len(step_times), 5), np.nan)
    if len(track.times) == 1:  # seen once: frozen at every step, exactly as recorded
        out[:] = track.states[0]
        return out
    states = track.states.copy()
    states[:, 2] = np.unwrap(states[:, 2], axis=0)
    inside = (track.times[0] <= step_times) & (step_times <= track.times[-1])
    values = interp_linear(track.times, states, step_times[inside])
    values[:, 2] = _normalize_angle(values[:, 2])
    out[inside] = values
    return out


def log_replay_occupancy(
    scene: Scene,
    version: str,
    route_lane_ids: Optional[set] = None,
    drop_overlapping_ego: Optional[bool] = None,
) -> Occupancy:
    """The cached observation of `scene` for NAVSIM `version` ("v1": 51 steps; "v2": 41 steps + red lights).

    drop_overlapping_ego: remove tracks whose box intersects the ego box at t = 0 (v2 log replay; default
    on for v2, off for v1).
    """
    horizon = 5.0 if version == "v1" else 4.0
    num_steps = int(horizon / C.SIM_INTERVAL_S) + 1
    step_times = np.arange(0, num_steps, 1, dtype=float) * C.SIM_INTERVAL_S
    tracks = _scene_tracks(scene, horizon)
    states = [_interpolated_states(t, step_times) for t in tracks]
    drop = version == "v2" if drop_overlapping_ego is None else drop_overlapping_ego
    if drop and tracks:
        ego_poly = ego_box_polygon(scene.ego.pose)
        keep = []
        for track, st in zip(tracks, states):
            if np.isfinite(st[0, 0]):
                box = polygons(box_coords(st[0, :2], st[0, 2], track.length, track.width))
                if shapely.intersects(box, ego_poly):
                    continue
            keep.append((track, st))
        tracks, states = [t for t, _ in keep], [s for _, s in keep]

    tokens = [t.token for t in tracks]
    is_agent = np.array([t.is_agent for t in tracks], dtype=bool)
    speed = np.zeros(len(tracks))
    heading = np.zeros(len(tracks))
    for i, (track, st) in enumerate(zip(tracks, states)):
        first = np.flatnonzero(np.isfinite(st[:, 0]))[0]
        heading[i] = st[first, 2]
        speed[i] = np.hypot(st[first, 3], st[first, 4]) if track.is_agent else 0.0

    light_polys: dict[str, shapely.Polygon] = {}
    light_states: list[list[str]] = []
    if version == "v2":
        route = route_lane_ids if route_lane_ids is not None else {lane.id for lane in scene.map.lanes if lane.on_route}
        lanes = {lane.id: lane for lane in scene.map.lanes}
        for light in scene.traffic_lights:
            lane_id = light.lane_connector_id
            if lane_id in route and lane_id in lanes and f"{RED_LIGHT}_{lane_id}" not in light_polys:
                light_polys[f"{RED_LIGHT}_{lane_id}"] = shapely.Polygon(lanes[lane_id].polygon)
                light_states.append([light.state_at(0.5 * (k // 5)) for k in range(num_steps)])
    light_tokens = list(light_polys)
    tokens_all = tokens + light_tokens
    n_tracks = len(tokens)

    all_states = np.stack(states) if states else np.zeros((0, num_steps, 5))
    lengths = np.array([t.length for t in tracks])
    widths = np.array([t.width for t in tracks])
    steps = []
    for k in range(num_steps):
        present = np.flatnonzero(np.isfinite(all_states[:, k, 0])) if n_tracks else np.zeros(0, dtype=np.int64)
        coords = box_coords(all_states[present, k, :2], all_states[present, k, 2], lengths[present], widths[present])
        polys = polygons(coords) if len(present) else np.array([], dtype=object)
        red = [j for j, st in enumerate(light_states) if st[k] == "red"]
        obj = np.concatenate([present, n_tracks + np.array(red, dtype=np.int64)])
        polys = np.concatenate([polys, np.array([light_polys[light_tokens[j]] for j in red], dtype=object)])
        steps.append(make_step(obj, polys))

    return Occupancy(
        tokens=tokens_all,
        is_agent=np.concatenate([is_agent, np.zeros(len(light_tokens), dtype=bool)]),
        speed=np.concatenate([speed, np.zeros(len(light_tokens))]),
        heading=np.concatenate([heading, np.zeros(len(light_tokens))]),
        red_light=np.array([RED_LIGHT in t for t in tokens_all], dtype=bool),
        light=np.array([t.startswith(RED_LIGHT) for t in tokens_all], dtype=bool),
        steps=steps,
        step_of=np.arange(num_steps),
    )


__all__ = ["Occupancy", "log_replay_occupancy", "make_step", "interp_linear", "RED_LIGHT"]
