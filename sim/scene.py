"""The scene model: one driving scene at its current frame t = 0, in NAVSIM's conventions.

Frames and units (see `sim.conventions`):
- the *scene frame* is a Cartesian frame in which the map, the agents and the ego poses are given. The
  synthetic world uses the ego frame at t = 0 as scene frame (ego at (0, 0, 0)); logs read from NAVSIM and
  JSON files may use any frame;
- ego poses are rear-axle poses; ego velocities and accelerations are those of the rear axle in the ego's
  own body frame (x forward, y left), as OpenScene's `ego_dynamic_state`;
- trajectories (ground truth, negative, recovery, plans) are rear-axle poses in the EGO frame at t = 0;
- agent and static-object poses are box centres in the scene frame; agent velocities are in the scene frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from sim import conventions as C
from sim.geometry import absolute_to_relative, relative_to_absolute


class SceneError(ValueError):
    """A scene that breaks the model's contract; the message names the scene and the field."""


@dataclass
class EgoState:
    """Ego state at one instant: rear-axle pose in the scene frame, rear-axle dynamics in the body frame."""

    x: float
    y: float
    heading: float
    vx: float = 0.0
    vy: float = 0.0
    ax: float = 0.0
    ay: float = 0.0
    steering_angle: float = 0.0

    @property
    def pose(self) -> np.ndarray:
        return np.array([self.x, self.y, self.heading], dtype=np.float64)

    @property
    def speed(self) -> float:
        return float(np.hypot(self.vx, self.vy))


@dataclass
class Agent:
    """A moving object (vehicle, pedestrian, bicycle) on the 2 Hz grid `conventions.AGENT_TIMES_S`.

    poses: (T, 3) box-centre (x, y, heading) in the scene frame, NaN rows where the object is absent.
    velocities: (T, 2) (vx, vy) in the scene frame, NaN where absent.
    T = len(AGENT_TIMES_S) = 14 (t = -1.5 ... 5.0 s); row `AGENT_CURRENT_INDEX` is t = 0.
    """

    token: str
    type: str
    length: float
    width: float
    height: float
    poses: np.ndarray
    velocities: np.ndarray

    def present(self) -> np.ndarray:
        """(T,) bool: frames in which the object is observed."""
        return ~np.isnan(self.poses[:, 0])


@dataclass
class StaticObject:
    """An object that does not move (cone, barrier, construction sign, generic object): its box centre."""

    token: str
    type: str
    x: float
    y: float
    heading: float
    length: float
    width: float
    height: float


@dataclass
class MapArea:
    """A typed area polygon: roadblock, roadblock_connector, intersection, drivable_area or carpark_area."""

    id: str
    type: str
    polygon: np.ndarray  # (N, 2), scene frame, not closed


@dataclass
class Lane:
    """A lane or lane connector: its polygon, its centre line (baseline) and its route membership."""

    id: str
    type: str  # "lane" | "lane_connector"
    polygon: np.ndarray  # (N, 2)
    baseline: Optional[np.ndarray] = None  # (M, 2) centre line in driving direction
    on_route: bool = False
    speed_limit_mps: Optional[float] = None
    roadblock_id: Optional[str] = None


@dataclass
class StopLine:
    """Where the ego must stop for a stop sign or a light (for cameras and reasoning; NAVSIM scores none)."""

    id: str
    type: str  # "stop_sign" | "traffic_light"
    polygon: np.ndarray  # (N, 2)


@dataclass
class MapData:
    """The map around the scene; `centerline` is the route centre line (NAVSIM's PDMPath), scene frame."""

    areas: list[MapArea] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    centerline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    speed_limit_mps: Optional[float] = None
    stop_lines: list[StopLine] = field(default_factory=list)

    def lane(self, lane_id: str) -> Lane:
        for lane in self.lanes:
            if lane.id == lane_id:
                return lane
        raise KeyError(f"map has no lane or lane connector with id {lane_id!r}")

    def areas_of_type(self, *types: str) -> list[MapArea]:
        return [a for a in self.areas if a.type in types]


@dataclass
class TrafficLight:
    """The light controlling one lane connector.

    states: one state per 2 Hz frame of `AGENT_TIMES_S` (t = -1.5 ... 5.0 s), the last one held.
    head: (x, y, z) of the signal head in the scene frame, for cameras (None when unknown, e.g. NAVSIM logs).
    """

    lane_connector_id: str
    states: list[str]
    head: Optional[tuple[float, float, float]] = None

    def state_at(self, t: float) -> str:
        """The state at time t (s): each 2 Hz state holds until the next one (NAVSIM's rule)."""
        index = int(np.floor((t - C.AGENT_TIMES_S[0]) / C.LOG_INTERVAL_S + 1e-9))
        return self.states[min(max(index, 0), len(self.states) - 1)]


@dataclass
class Camera:
    """One camera: pinhole intrinsics, pose on the ego (sensor -> ego rear-axle frame, z up from the ground)
    and, once rendered or loaded, its history images (4, H, W, 3) uint8 at t = -1.5 ... 0 s."""

    name: str
    intrinsics: np.ndarray  # (3, 3)
    sensor2ego_rotation: np.ndarray  # (3, 3), camera axes: x right, y down, z forward
    sensor2ego_translation: np.ndarray  # (3,)
    images: Optional[np.ndarray] = None


@dataclass
class CriticalObject:
    """A thing the reasoning is about: what it is, where it is relative to the ego, what it does."""

    type: str  # e.g. "vehicle", "pedestrian", "traffic_light", "construction_zone"
    location: str  # e.g. "ahead in the ego lane, 22 m"
    behaviour: str  # e.g. "braking", "crossing from the right", "red"


@dataclass
class Reasoning:
    """mReasoning-style annotation of a scene.

    mode "fast": plain driving, the trace is the fixed fast-mode sentence; "slow": 1-3 sentences.
    """

    mode: str
    critical_objects: list[CriticalObject]
    longitudinal: str  # e.g. "keep speed", "accelerate", "decelerate", "stop", "yield"
    lateral: str  # e.g. "keep lane", "nudge left", "change lane right", "turn left"
    text: str


@dataclass
class PreviousFrame:
    """The agent's plan 0.5 s earlier (for NAVSIM v2's two-frame extended comfort)."""

    ego: EgoState
    trajectory: np.ndarray  # (N, 3) rear-axle poses in the ego frame of `ego`


@dataclass
class Scene:
    """One scene at t = 0. See the module docstring for frames.

    ego_history: 4 `EgoState`s at t = -1.5, -1.0, -0.5, 0.0 s (scene frame); the last one is the current state.
    future: (10, 3) ground truth at t = 0.5 ... 5.0 s (ego frame), or None when unknown (a JSON scene).
      For `rec` scenes it is the expert's correction (= `recovery_trajectory`).
    negative_trajectory: (10, 3) the sub-optimal trajectory of a `neg` scene (ego frame).
    recovery_trajectory: (10, 3) the corrective trajectory of a `rec` scene (ego frame).
    human_trajectory: (8, 3) the logged human plan for NAVSIM v2's human filter (ego frame), or None.
    pdm_closed_trajectory: PDM-Closed's cached reference per NAVSIM version, {"v1": (51, 3), "v2": (51, 3)}:
      rear-axle poses at t = 0, 0.1, ..., 5.0 s in the ego frame (the t = 0 pose is the ego's projection on
      the chosen path, not the ego pose). The versions differ because PDM-Closed picks its proposal with the
      version's own scorer. Filled by `rewards.pdm.PDMScorer.prepare`; None or a missing key = not computed.
    """

    token: str
    ego_history: list[EgoState]
    driving_command: int
    map: MapData
    agents: list[Agent] = field(default_factory=list)
    static_objects: list[StaticObject] = field(default_factory=list)
    traffic_lights: list[TrafficLight] = field(default_factory=list)
    future: Optional[np.ndarray] = None
    family: str = "unknown"
    sample_type: str = "pos"
    negative_trajectory: Optional[np.ndarray] = None
    recovery_trajectory: Optional[np.ndarray] = None
    negative_kind: Optional[str] = None  # what is wrong with the negative, e.g. "late_brake"
    recovery_kind: Optional[str] = None  # how the recovery start was perturbed, e.g. "off_centre"
    human_trajectory: Optional[np.ndarray] = None
    pdm_closed_trajectory: Optional[dict[str, np.ndarray]] = None
    previous_frame: Optional[PreviousFrame] = None
    cameras: list[Camera] = field(default_factory=list)
    reasoning: Optional[Reasoning] = None
    log_name: str = "synthetic"
    seed: Optional[int] = None

    @property
    def ego(self) -> EgoState:
        """The current ego state (t = 0)."""
        return self.ego_history[-1]

    @property
    def command_one_hot(self) -> np.ndarray:
        one_hot = np.zeros(len(C.DRIVING_COMMANDS), dtype=np.float32)
        one_hot[self.driving_command] = 1.0
        return one_hot

    def history_trajectory(self) -> np.ndarray:
        """(4, 3) ego history as rear-axle poses in the current ego frame (the last row is (0, 0, 0))."""
        poses = np.stack([e.pose for e in self.ego_history])
        return absolute_to_relative(self.ego.pose, poses)

    def to_scene_frame(self, ego_frame_poses: np.ndarray) -> np.ndarray:
        """Poses (..., 3) in the ego frame at t = 0 -> the scene frame."""
        return relative_to_absolute(self.ego.pose, ego_frame_poses)

    def to_ego_frame(self, scene_frame_poses: np.ndarray) -> np.ndarray:
        """Poses (..., 3) in the scene frame -> the ego frame at t = 0."""
        return absolute_to_relative(self.ego.pose, scene_frame_poses)

    def with_sample(self, **changes) -> "Scene":
        """A shallow copy with some fields replaced (e.g. a `neg` variant of a positive scene)."""
        return replace(self, **changes)

    def validate(self) -> "Scene":
        """Check the model's contract; raise `SceneError` naming the scene and the field. Returns self."""
        where = f"scene {self.token!r}"
        if len(self.ego_history) != C.NUM_HISTORY_FRAMES:
            raise SceneError(f"{where}: ego_history has {len(self.ego_history)} frames, expected {C.NUM_HISTORY_FRAMES}")
        for i, e in enumerate(self.ego_history):
            values = [e.x, e.y, e.heading, e.vx, e.vy, e.ax, e.ay]
            if not np.all(np.isfinite(values)):
                raise SceneError(f"{where}: ego_history[{i}] has a non-finite value: {values}")
        if not 0 <= self.driving_command < len(C.DRIVING_COMMANDS):
            raise SceneError(f"{where}: driving_command {self.driving_command} is not an index of {C.DRIVING_COMMANDS}")
        if self.sample_type not in C.SAMPLE_TYPES:
            raise SceneError(f"{where}: sample_type {self.sample_type!r} is not one of {C.SAMPLE_TYPES}")
        if self.sample_type == "neg" and self.negative_trajectory is None:
            raise SceneError(f"{where}: a 'neg' scene needs negative_trajectory")
        if self.sample_type == "rec" and self.recovery_trajectory is None:
            raise SceneError(f"{where}: a 'rec' scene needs recovery_trajectory")
        trajectories = [(name, getattr(self, name)) for name in ("future", "negative_trajectory", "recovery_trajectory", "human_trajectory")]
        if self.pdm_closed_trajectory is not None:
            if not isinstance(self.pdm_closed_trajectory, dict) or not set(self.pdm_closed_trajectory) <= set(C.VERSIONS):
                raise SceneError(f"{where}: pdm_closed_trajectory must be a dict with keys 'v1'/'v2'")
            trajectories += [(f"pdm_closed_trajectory[{v!r}]", t) for v, t in self.pdm_closed_trajectory.items()]
        for name, traj in trajectories:
            if traj is None:
                continue
            traj = np.asarray(traj)
            if traj.ndim != 2 or traj.shape[1] != 3:
                raise SceneError(f"{where}: {name} has shape {traj.shape}, expected (N, 3)")
            if not np.all(np.isfinite(traj)):
                raise SceneError(f"{where}: {name} has non-finite poses")
        n_frames = len(C.AGENT_TIMES_S)
        for agent in self.agents:
            if agent.type not in C.AGENT_TYPES:
                raise SceneError(f"{where}: agent {agent.token!r} has type {agent.type!r}, expected one of {C.AGENT_TYPES}")
            if agent.poses.shape != (n_frames, 3) or agent.velocities.shape != (n_frames, 2):
                raise SceneError(
                    f"{where}: agent {agent.token!r} poses {agent.poses.shape} / velocities {agent.velocities.shape},"
                    f" expected ({n_frames}, 3) / ({n_frames}, 2)"
                )
        for obj in self.static_objects:
            if obj.type not in C.STATIC_OBJECT_TYPES + C.AGENT_TYPES:
                raise SceneError(f"{where}: static object {obj.token!r} has type {obj.type!r}")
        for area in self.map.areas:
            if area.type not in C.AREA_LAYERS:
                raise SceneError(f"{where}: map area {area.id!r} has type {area.type!r}, expected one of {C.AREA_LAYERS}")
        lane_ids = {lane.id for lane in self.map.lanes}
        for lane in self.map.lanes:
            if lane.type not in C.LANE_LAYERS:
                raise SceneError(f"{where}: lane {lane.id!r} has type {lane.type!r}, expected one of {C.LANE_LAYERS}")
        for light in self.traffic_lights:
            if light.lane_connector_id not in lane_ids:
                raise SceneError(f"{where}: traffic light names lane connector {light.lane_connector_id!r}, not in the map")
            bad = [s for s in light.states if s not in C.TRAFFIC_LIGHT_STATES]
            if bad or not light.states:
                raise SceneError(f"{where}: traffic light {light.lane_connector_id!r} has states {light.states}")
        return self


def constant_velocity_history(ego: EgoState) -> list[EgoState]:
    """Ego history (t = -1.5 ... 0 s) of straight driving at the current speed: NAVSIM's default when
    a JSON scene carries none. Every assumed state copies the t = 0 ego's vx, vy, ax, ay (scene_json.md),
    so a large current acceleration reaches history comfort (HC)."""
    history = []
    for t in C.history_times()[:-1]:
        pose = relative_to_absolute(ego.pose, np.array([ego.vx * t, ego.vy * t, 0.0]))
        history.append(EgoState(float(pose[0]), float(pose[1]), float(pose[2]), ego.vx, ego.vy, ego.ax, ego.ay))
    return history + [ego]
