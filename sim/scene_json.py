"""Read and write the scene JSON format (../shared/spec/scene_json.md) <-> `sim.scene.Scene`.

    scene, plan, notes = load_scene_json("scene.json")   # or a dict
    data = scene_to_json(scene, plan)                    # + write_scene_json(path, scene, plan)

The format describes one scene at t = 0 with agents from t = 0 at 2 Hz. Whatever a `Scene` holds beyond it
(history frames of agents and lights, the ground truth, negatives/recoveries, reasoning, cameras,
the cached PDM-Closed trajectories...) goes into one extension block "sim"; scenes written here read back
identical. JSON from elsewhere has no "sim" block and gets the defaults of scene_json.md, each reported in
`notes`: straight constant-velocity ego history, agent velocities from finite differences of the poses,
agent pose lists shorter than 0-5 s extrapolated at constant velocity. A plan is returned in the ego frame
at t = 0 (a "scene"-frame plan is converted). Every plan-like field (trajectory, human_trajectory,
previous_frame.trajectory, pdm_closed.trajectory) must be a NAVSIM plan: 8 poses at 0.5 s
(`sim.conventions.check_plan`). Bad input - a file that cannot be read, is not UTF-8 or not JSON, a missing or
malformed field, also inside the "sim" block - raises `SceneJsonError` naming the file and field.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from sim import conventions as C
from sim.geometry import absolute_to_relative
from sim.kinematics import reference_poses
from sim.scene import (
    Agent, Camera, CriticalObject, EgoState, Lane, MapArea, MapData, PreviousFrame, Reasoning, Scene, SceneError,
    StaticObject, StopLine, TrafficLight, constant_velocity_history,
)

NUM_FUTURE_FRAMES = 11  # agents at t = 0, 0.5, ..., 5.0 s (NAVSIM v1 caches 5 s)
_NOW = C.AGENT_CURRENT_INDEX


class SceneJsonError(ValueError):
    """Malformed scene JSON; the message starts with 'file: field:'."""


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str):
        raise SceneJsonError(f"{self.source}: {where}: {message}")

    @contextmanager
    def block(self, where: str):
        """Report a malformed block (a missing key, a wrong type) as `SceneJsonError` naming `where`."""
        try:
            yield
        except SceneJsonError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise SceneJsonError(f"{self.source}: {where}: malformed ({detail})") from exc

    def plan(self, value, where: str) -> np.ndarray:
        """A NAVSIM plan field: 8 rear-axle poses at 0.5 s (`sim.conventions.check_plan`)."""
        array = self.array(value, where, 3, min_rows=1)
        try:
            return C.check_plan(array, C.LOG_INTERVAL_S, where=f"{self.source}: {where}")
        except ValueError as exc:
            raise SceneJsonError(str(exc)) from exc

    def get(self, obj: dict, key: str, where: str, default: Any = ..., kind=None):
        if not isinstance(obj, dict):
            self.fail(where, f"expected an object, got {type(obj).__name__}")
        if key not in obj or obj[key] is None:
            if default is ...:
                self.fail(f"{where}.{key}" if where else key, "missing")
            return default
        value = obj[key]
        if kind is not None and not isinstance(value, kind):
            self.fail(f"{where}.{key}" if where else key, f"expected {getattr(kind, '__name__', kind)}")
        return value

    def number(self, obj: dict, key: str, where: str, default: Any = ...) -> float:
        value = self.get(obj, key, where, default)
        if value is default and default is not ...:
            return value
        path = f"{where}.{key}" if where else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            self.fail(path, f"expected a finite number, got {value!r}")
        return float(value)

    def array(self, value, where: str, width: Union[int, tuple], allow_null_rows: bool = False, min_rows: int = 0,
              names: tuple = ("x", "y", "heading")):
        """(N, width) float array; rows may be null (-> NaN) when allowed. width: int or accepted widths."""
        widths = (width,) if isinstance(width, int) else width
        shape = " or ".join(f"[{', '.join(names[:w])}]" for w in widths)
        if not isinstance(value, list):
            self.fail(where, f"expected a list of {shape}")
        if len(value) < min_rows:
            self.fail(where, f"expected at least {min_rows} entries, got {len(value)}")
        rows = []
        row_width = None
        for i, row in enumerate(value):
            if row is None and allow_null_rows:
                rows.append(None)
                continue
            ok = isinstance(row, list) and len(row) in widths and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in row)
            if not ok or (row_width is not None and len(row) != row_width):
                self.fail(f"{where}[{i}]", f"expected {shape}{' or null' if allow_null_rows else ''}, got {row!r}")
            row_width = len(row)
            rows.append([float(v) for v in row])
        row_width = row_width or widths[0]
        filled = [r if r is not None else [np.nan] * row_width for r in rows]
        return np.array(filled, dtype=np.float64).reshape(-1, row_width)

    def ego(self, obj: dict, where: str) -> EgoState:
        n = lambda key, default=...: self.number(obj, key, where, default)  # noqa: E731
        return EgoState(n("x"), n("y"), n("heading"), n("vx", 0.0), n("vy", 0.0), n("ax", 0.0), n("ay", 0.0),
                        n("steering_angle", 0.0))


def _finite_difference_velocities(poses: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Fill missing velocities (NaN rows) of present frames: central differences where both neighbours
    are present, one-sided otherwise, zero for an isolated frame. Scene frame, 2 Hz."""
    out = velocities.copy()
    present = np.isfinite(poses[:, 0])
    dt = C.LOG_INTERVAL_S
    for i in np.flatnonzero(present & ~np.isfinite(out[:, 0])):
        prev_ok = i > 0 and present[i - 1]
        next_ok = i + 1 < len(poses) and present[i + 1]
        if prev_ok and next_ok:
            out[i] = (poses[i + 1, :2] - poses[i - 1, :2]) / (2 * dt)
        elif next_ok:
            out[i] = (poses[i + 1, :2] - poses[i, :2]) / dt
        elif prev_ok:
            out[i] = (poses[i, :2] - poses[i - 1, :2]) / dt
        else:
            out[i] = 0.0
    return out


def _read_agent(r: _Reader, spec: dict, where: str, sim_history: Optional[dict], notes: list) -> Agent:
    token = str(r.get(spec, "token", where))
    kind = r.get(spec, "type", where, kind=str)
    if kind not in C.AGENT_TYPES:
        r.fail(f"{where}.type", f"expected one of {C.AGENT_TYPES}, got {kind!r}")
    poses = r.array(r.get(spec, "poses", where), f"{where}.poses", 3, allow_null_rows=True, min_rows=1)
    if len(poses) > NUM_FUTURE_FRAMES:
        r.fail(f"{where}.poses", f"at most {NUM_FUTURE_FRAMES} frames (t = 0 ... 5 s), got {len(poses)}")
    vel_spec = r.get(spec, "velocities", where, None)
    velocities = np.full((len(poses), 2), np.nan)
    if vel_spec is not None:
        given = r.array(vel_spec, f"{where}.velocities", 2, allow_null_rows=True, names=("vx", "vy"))
        if len(given) > len(poses):
            r.fail(f"{where}.velocities", f"{len(given)} entries for {len(poses)} poses")
        velocities[: len(given)] = given
    filled = _finite_difference_velocities(poses, velocities)
    if np.any(np.isfinite(filled[:, 0]) & ~np.isfinite(velocities[:, 0])):
        notes.append(f"agents[{token}]: missing velocities from finite differences of the poses")
    velocities = np.where(np.isfinite(poses[:, :1]), filled, np.nan)
    if len(poses) < NUM_FUTURE_FRAMES and np.isfinite(poses[-1, 0]):
        last_time = 0.5 * (len(poses) - 1)
        notes.append(f"agents[{token}]: poses after t = {last_time:g} s extrapolated at constant velocity")
        extra = np.arange(1, NUM_FUTURE_FRAMES - len(poses) + 1)[:, None] * C.LOG_INTERVAL_S
        last, v = poses[-1], velocities[-1]
        poses = np.concatenate([poses, np.column_stack([last[:2] + v * extra, np.full(len(extra), last[2])])])
        velocities = np.concatenate([velocities, np.tile(v, (len(extra), 1))])
    all_poses = np.full((len(C.AGENT_TIMES_S), 3), np.nan)
    all_vel = np.full((len(C.AGENT_TIMES_S), 2), np.nan)
    all_poses[_NOW : _NOW + len(poses)] = poses
    all_vel[_NOW : _NOW + len(poses)] = velocities
    if sim_history and token in sim_history:
        with r.block(f"sim.agent_history.{token}"):
            past = sim_history[token]
            all_poses[:_NOW] = r.array(past["poses"], f"sim.agent_history.{token}.poses", 3, allow_null_rows=True)
            all_vel[:_NOW] = r.array(past["velocities"], f"sim.agent_history.{token}.velocities", 2,
                                     allow_null_rows=True, names=("vx", "vy"))
    height = r.number(spec, "height", where, 1.5)
    return Agent(token, kind, r.number(spec, "length", where), r.number(spec, "width", where), height, all_poses, all_vel)


def _read_map(r: _Reader, spec: dict, sim: dict) -> MapData:
    areas = []
    for i, a in enumerate(r.get(spec, "drivable_areas", "map", [], kind=list)):
        where = f"map.drivable_areas[{i}]"
        kind = r.get(a, "type", where, kind=str)
        if kind not in C.AREA_LAYERS:
            r.fail(f"{where}.type", f"expected one of {C.AREA_LAYERS}, got {kind!r}")
        polygon = r.array(r.get(a, "polygon", where), f"{where}.polygon", 2, min_rows=3)
        areas.append(MapArea(str(r.get(a, "id", where)), kind, polygon))
    roadblocks = sim.get("lane_roadblock_ids", {})
    lanes = []
    for i, lane in enumerate(r.get(spec, "lanes", "map", [], kind=list)):
        where = f"map.lanes[{i}]"
        kind = r.get(lane, "type", where, kind=str)
        if kind not in C.LANE_LAYERS:
            r.fail(f"{where}.type", f"expected one of {C.LANE_LAYERS}, got {kind!r}")
        lane_id = str(r.get(lane, "id", where))
        baseline = r.get(lane, "baseline", where, None)
        lanes.append(Lane(
            lane_id, kind, r.array(r.get(lane, "polygon", where), f"{where}.polygon", 2, min_rows=3),
            r.array(baseline, f"{where}.baseline", (2, 3), min_rows=2) if baseline is not None else None,
            bool(r.get(lane, "on_route", where, False)), r.number(lane, "speed_limit_mps", where, None),
            roadblocks.get(lane_id)))
    # A scene read without its map (`sim.navsim_logs --no-map`) has no lanes, areas or route: its centre line
    # may then be empty. Scoring such a scene fails at `PDMScorer.prepare`, which needs the map.
    mapless = not lanes and not areas
    centerline = r.array(r.get(spec, "centerline", "map"), "map.centerline", (2, 3), min_rows=0 if mapless else 2)
    with r.block("sim.stop_lines"):
        stop_lines = [StopLine(s["id"], s["type"], np.array(s["polygon"], dtype=np.float64))
                      for s in sim.get("stop_lines", [])]
    return MapData(areas, lanes, centerline, r.number(spec, "speed_limit_mps", "map", None), stop_lines)


def load_scene_json(
    source: Union[str, Path, dict], name: Optional[str] = None
) -> tuple[Scene, Optional[np.ndarray], list[str]]:
    """Parse a scene JSON (path or dict) -> (Scene, plan (N, 3) in the ego frame or None, notes)."""
    if isinstance(source, dict):
        data, label = source, name or "scene"
    else:
        label = name or Path(source).name
        try:
            text = Path(source).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SceneJsonError(f"{label}: not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset "
                                 f"{exc.start}): expected scene JSON") from exc
        except OSError as exc:
            raise SceneJsonError(f"{label}: cannot read: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SceneJsonError(f"{label}: not valid JSON: {exc}") from exc
    r = _Reader(label)
    if not isinstance(data, dict):
        r.fail("(top level)", "expected an object")
    notes: list[str] = []
    sim = r.get(data, "sim", "", {}, kind=dict)
    ego = r.ego(r.get(data, "ego", ""), "ego")

    history_spec = r.get(data, "ego_history", "", None, kind=list)
    if history_spec is None:
        history = constant_velocity_history(ego)
        notes.append("no ego_history given: assumed constant-velocity straight driving for the past 1.5 s, each state"
                     " with the t = 0 velocity and acceleration (HC)")
    else:
        if len(history_spec) != C.NUM_HISTORY_FRAMES - 1:
            r.fail("ego_history", f"expected {C.NUM_HISTORY_FRAMES - 1} ego states (t = -1.5, -1.0, -0.5 s),"
                                  f" got {len(history_spec)}")
        history = [r.ego(h, f"ego_history[{i}]") for i, h in enumerate(history_spec)] + [ego]

    map_data = _read_map(r, r.get(data, "map", ""), sim)
    agents = [_read_agent(r, a, f"agents[{i}]", sim.get("agent_history"), notes)
              for i, a in enumerate(r.get(data, "agents", "", [], kind=list))]
    statics = []
    for i, s in enumerate(r.get(data, "static_objects", "", [], kind=list)):
        where = f"static_objects[{i}]"
        kind = r.get(s, "type", where, kind=str)
        if kind not in C.STATIC_OBJECT_TYPES + C.AGENT_TYPES:
            r.fail(f"{where}.type", f"expected one of {C.STATIC_OBJECT_TYPES + C.AGENT_TYPES}, got {kind!r}")
        values = (r.number(s, k, where) for k in ("x", "y", "heading", "length", "width"))
        statics.append(StaticObject(str(r.get(s, "token", where)), kind, *values, r.number(s, "height", where, 1.0)))
    tokens = [a.token for a in agents] + [s.token for s in statics]
    if len(set(tokens)) != len(tokens):
        duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
        r.fail("agents/static_objects", f"tokens must be unique, got duplicates {duplicates}")

    lights = []
    lane_ids = {lane.id for lane in map_data.lanes}
    light_sim = sim.get("traffic_lights", {})
    for i, light in enumerate(r.get(data, "traffic_lights", "", [], kind=list)):
        where = f"traffic_lights[{i}]"
        lane_id = str(r.get(light, "lane_id", where))
        states = r.get(light, "states", where, None, kind=list) or [r.get(light, "state", where)]
        for j, st in enumerate(states):
            if st not in C.TRAFFIC_LIGHT_STATES:
                r.fail(f"{where}.states[{j}]", f"expected one of {C.TRAFFIC_LIGHT_STATES}, got {st!r}")
        if lane_id not in lane_ids:
            notes.append(f"traffic_lights[{i}]: lane {lane_id!r} is not in map.lanes: ignored")
            continue
        with r.block(f"sim.traffic_lights.{lane_id}"):
            extra = light_sim.get(lane_id, {})
            past = extra.get("past_states", [states[0]] * _NOW)
            future = list(states) + [states[-1]] * (len(C.AGENT_TIMES_S) - _NOW - len(states))
            head = extra.get("head")
            states_all = list(past) + future[: len(C.AGENT_TIMES_S) - _NOW]
            lights.append(TrafficLight(lane_id, states_all, tuple(head) if head else None))

    human = r.get(data, "human_trajectory", "", None)
    human = r.plan(human, "human_trajectory") if human is not None else None
    previous = r.get(data, "previous_frame", "", None, kind=dict)
    if previous is not None:
        previous_plan = r.plan(r.get(previous, "trajectory", "previous_frame"), "previous_frame.trajectory")
        previous = PreviousFrame(r.ego(r.get(previous, "ego", "previous_frame"), "previous_frame.ego"), previous_plan)
    with r.block("sim.pdm_closed"):
        pdm_closed = {v: np.array(p, dtype=np.float64) for v, p in sim.get("pdm_closed", {}).items()} or None
    if "pdm_closed" in data:
        block = r.get(data, "pdm_closed", "", kind=dict)
        given = r.plan(r.get(block, "trajectory", "pdm_closed"), "pdm_closed.trajectory")
        pdm_closed = {v: pdm_closed_cache_from_plan(ego, given) for v in C.VERSIONS}
        notes.append("pdm_closed given: used as the progress reference instead of running PDM-Closed")

    plan = None
    if "trajectory" in data and data["trajectory"] is not None:
        plan = r.plan(data["trajectory"], "trajectory")
        frame = r.get(data, "trajectory_frame", "", "ego", kind=str)
        if frame == "scene":
            plan = absolute_to_relative(ego.pose, plan)
        elif frame != "ego":
            r.fail("trajectory_frame", f"expected 'ego' or 'scene', got {frame!r}")

    def opt(key):
        with r.block(f"sim.{key}"):
            return np.array(sim[key], dtype=np.float64) if sim.get(key) is not None else None

    reasoning = sim.get("reasoning")
    if reasoning is not None:
        with r.block("sim.reasoning"):
            reasoning = Reasoning(reasoning["mode"], [CriticalObject(**c) for c in reasoning["critical_objects"]],
                                  reasoning["longitudinal"], reasoning["lateral"], reasoning["text"])
    with r.block("sim.cameras"):
        cameras = [Camera(c["name"], np.array(c["intrinsics"]), np.array(c["sensor2ego_rotation"]),
                          np.array(c["sensor2ego_translation"])) for c in sim.get("cameras", [])]
    if "driving_command" not in sim:
        notes.append("no driving command given: 'unknown'")
    with r.block("sim"):
        scene = Scene(
            token=str(sim.get("token", data.get("name") or Path(label).stem)),
            ego_history=history,
            driving_command=int(sim.get("driving_command", C.DRIVING_COMMANDS.index("unknown"))),
            map=map_data, agents=agents, static_objects=statics, traffic_lights=lights,
            future=opt("future"), family=sim.get("family", "unknown"), sample_type=sim.get("sample_type", "pos"),
            negative_trajectory=opt("negative_trajectory"), recovery_trajectory=opt("recovery_trajectory"),
            negative_kind=sim.get("negative_kind"), recovery_kind=sim.get("recovery_kind"),
            human_trajectory=human,
            pdm_closed_trajectory=pdm_closed, previous_frame=previous,
            cameras=cameras,
            reasoning=reasoning, log_name=sim.get("log_name", "json"), seed=sim.get("seed"),
        )
    try:
        scene.validate()
    except SceneError as exc:
        raise SceneJsonError(f"{label}: {exc}") from exc
    return scene, plan, notes


def pdm_closed_cache_from_plan(ego: EgoState, poses: np.ndarray) -> np.ndarray:
    """A given reference plan (N, 3) at 0.5 s (ego frame) as the cached PDM-Closed form: (51, 3) poses at
    t = 0 ... 5 s (ego frame), the plan's 10 Hz reference, the last pose held after 4 s. NAVSIM's
    Trajectory precision (float32) is applied."""
    rounded = np.asarray(poses, dtype=np.float32).astype(np.float64)
    reference = reference_poses(ego, rounded)[0]
    reference = np.concatenate([reference, np.repeat(reference[-1:], 51 - len(reference), axis=0)])
    return absolute_to_relative(ego.pose, reference)


def _rows(array: Optional[np.ndarray]) -> Optional[list]:
    if array is None:
        return None
    return [None if not np.all(np.isfinite(row)) else [float(v) for v in row] for row in np.asarray(array)]


def _ego_dict(e: EgoState) -> dict:
    return {"x": e.x, "y": e.y, "heading": e.heading, "vx": e.vx, "vy": e.vy, "ax": e.ax, "ay": e.ay, "steering_angle": e.steering_angle}


def scene_to_json(scene: Scene, plan: Optional[np.ndarray] = None) -> dict:
    """The scene (and optionally a plan (N, 3) in the ego frame) as a scene-JSON dict with a "sim" block."""
    now, end = _NOW, _NOW + NUM_FUTURE_FRAMES
    m = scene.map
    data: dict[str, Any] = {"name": scene.token, "ego": _ego_dict(scene.ego)}
    if plan is not None:
        data["trajectory"] = _rows(plan)
        data["trajectory_frame"] = "ego"
    data["ego_history"] = [_ego_dict(e) for e in scene.ego_history[:-1]]
    data["map"] = {
        "speed_limit_mps": m.speed_limit_mps,
        "drivable_areas": [{"id": a.id, "type": a.type, "polygon": _rows(a.polygon)} for a in m.areas],
        "lanes": [{"id": lane.id, "type": lane.type, "polygon": _rows(lane.polygon), "on_route": lane.on_route,
                   "speed_limit_mps": lane.speed_limit_mps, "baseline": _rows(lane.baseline)} for lane in m.lanes],
        "centerline": _rows(m.centerline),
    }
    data["agents"] = [{"token": a.token, "type": a.type, "length": a.length, "width": a.width, "height": a.height,
                       "poses": _rows(a.poses[now:end]), "velocities": _rows(a.velocities[now:end])} for a in scene.agents]
    data["static_objects"] = [{"token": s.token, "type": s.type, "x": s.x, "y": s.y, "heading": s.heading,
                               "length": s.length, "width": s.width, "height": s.height} for s in scene.static_objects]
    data["traffic_lights"] = [{"lane_id": t.lane_connector_id, "states": list(t.states[now:])} for t in scene.traffic_lights]
    if scene.human_trajectory is not None:
        data["human_trajectory"] = _rows(scene.human_trajectory)
    if scene.previous_frame is not None:
        data["previous_frame"] = {"ego": _ego_dict(scene.previous_frame.ego), "trajectory": _rows(scene.previous_frame.trajectory)}
    r = scene.reasoning
    data["sim"] = {
        "token": scene.token, "family": scene.family, "sample_type": scene.sample_type,
        "driving_command": scene.driving_command, "log_name": scene.log_name, "seed": scene.seed,
        "future": _rows(scene.future), "negative_trajectory": _rows(scene.negative_trajectory),
        "recovery_trajectory": _rows(scene.recovery_trajectory),
        "negative_kind": scene.negative_kind, "recovery_kind": scene.recovery_kind,
        "reasoning": None if r is None else {
            "mode": r.mode, "longitudinal": r.longitudinal, "lateral": r.lateral, "text": r.text,
            "critical_objects": [{"type": c.type, "location": c.location, "behaviour": c.behaviour} for c in r.critical_objects]},
        "agent_history": {a.token: {"poses": _rows(a.poses[:now]), "velocities": _rows(a.velocities[:now])} for a in scene.agents},
        "traffic_lights": {t.lane_connector_id: {"past_states": list(t.states[:now]), "head": list(t.head) if t.head else None}
                           for t in scene.traffic_lights},
        "stop_lines": [{"id": s.id, "type": s.type, "polygon": _rows(s.polygon)} for s in m.stop_lines],
        "lane_roadblock_ids": {lane.id: lane.roadblock_id for lane in m.lanes if lane.roadblock_id is not None},
        "cameras": [{"name": c.name, "intrinsics": np.asarray(c.intrinsics).tolist(),
                     "sensor2ego_rotation": np.asarray(c.sensor2ego_rotation).tolist(),
                     "sensor2ego_translation": np.asarray(c.sensor2ego_translation).tolist()} for c in scene.cameras],
        "pdm_closed": {v: _rows(p) for v, p in (scene.pdm_closed_trajectory or {}).items()},
    }
    return data


def write_scene_json(path: Union[str, Path], scene: Scene, plan: Optional[np.ndarray] = None) -> None:
    Path(path).write_text(json.dumps(scene_to_json(scene, plan), indent=1))
