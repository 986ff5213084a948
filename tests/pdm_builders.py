"""Tiny scenes for the PDM scorer tests: a straight road along +x in the ego frame.

Lanes: `ego` (y in [-1.75, 1.75], on route), `right` ([-5.25, -1.75], on route) in roadblock `rb0`;
`oncoming` ([1.75, 5.25], off route) in roadblock `rb1`. Centre line y = 0 from x = -60 to 250.
The ego drives at 10 m/s at the origin.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sim import conventions as C
from sim.geometry import relative_to_absolute
from sim.scene import Agent, EgoState, Lane, MapArea, MapData, Scene, StaticObject, TrafficLight, constant_velocity_history

SPEED = 10.0


def rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def road_map(connector: bool = False, intersection: bool = False, right_edge: float = -5.25) -> MapData:
    """The straight road; `connector`: the ego lane is split by a lane connector `lc0` at x in [30, 45];
    `intersection`: an intersection polygon `int0` covers x in [30, 45]; `right_edge`: y of the road's
    right edge (the right lane is then [right_edge, -1.75])."""
    lanes = [Lane("right", "lane", rect(-60, 250, right_edge, -1.75), None, True, 10.0)]
    if connector:
        lanes += [
            Lane("ego", "lane", rect(-60, 30, -1.75, 1.75), None, True, 10.0),
            Lane("lc0", "lane_connector", rect(30, 45, -1.75, 1.75), None, True, 10.0),
            Lane("ego_out", "lane", rect(45, 250, -1.75, 1.75), None, True, 10.0),
        ]
    else:
        lanes.append(Lane("ego", "lane", rect(-60, 250, -1.75, 1.75), None, True, 10.0))
    lanes.append(Lane("oncoming", "lane", rect(-60, 250, 1.75, 5.25), None, False, 10.0))
    areas = [MapArea("rb0", "roadblock", rect(-60, 250, right_edge, 1.75)), MapArea("rb1", "roadblock", rect(-60, 250, 1.75, 5.25))]
    if intersection:
        areas.append(MapArea("int0", "intersection", rect(30, 45, right_edge, 5.25)))
    centerline = np.column_stack([np.arange(-60.0, 251.0, 2.0), np.zeros(156)])
    return MapData(areas, lanes, centerline, 10.0)


def vehicle(token: str, poses: np.ndarray, velocities: Optional[np.ndarray] = None, kind: str = "vehicle",
            length: float = 4.5, width: float = 2.0) -> Agent:
    """An agent from box-centre poses (11, 3) at t = 0 ... 5 s (NaN rows = absent)."""
    all_poses = np.full((len(C.AGENT_TIMES_S), 3), np.nan)
    all_vel = np.full((len(C.AGENT_TIMES_S), 2), np.nan)
    n = len(poses)
    all_poses[C.AGENT_CURRENT_INDEX : C.AGENT_CURRENT_INDEX + n] = poses
    if velocities is None:
        velocities = np.zeros((n, 2))
    all_vel[C.AGENT_CURRENT_INDEX : C.AGENT_CURRENT_INDEX + n] = np.where(np.isfinite(poses[:, :1]), velocities, np.nan)
    return Agent(token, kind, length, width, 1.6, all_poses, all_vel)


def moving(token: str, x0: float, y0: float, vx: float, **kw) -> Agent:
    t = np.arange(11) * 0.5
    poses = np.column_stack([x0 + vx * t, np.full(11, y0), np.zeros(11)])
    return vehicle(token, poses, np.column_stack([np.full(11, vx), np.zeros(11)]), **kw)


def road_scene(
    ego_speed: float = SPEED,
    agents=(),
    statics=(),
    lights=(),
    connector: bool = False,
    intersection: bool = False,
    right_edge: float = -5.25,
    human: Optional[np.ndarray] = None,
    origin: Optional[np.ndarray] = None,
    token: str = "road",
    ego_y: float = 0.0,
) -> Scene:
    """The road scene; `lights`: (lane id, state) pairs held over all frames. `origin` (3,) places the
    whole scene in another frame (the ego frame stays the road frame); `ego_y` shifts the ego sideways."""
    ego = EgoState(0.0, ego_y, 0.0, vx=ego_speed)
    scene = Scene(
        token=token,
        ego_history=constant_velocity_history(ego),
        driving_command=1,
        map=road_map(connector, intersection, right_edge),
        agents=list(agents),
        static_objects=list(statics),
        traffic_lights=[TrafficLight(lane, [state] * len(C.AGENT_TIMES_S)) for lane, state in lights],
        human_trajectory=human,
    )
    return scene if origin is None else transformed(scene, origin)


def cone(token: str, x: float, y: float) -> StaticObject:
    return StaticObject(token, "traffic_cone", x, y, 0.0, 0.5, 0.5, 1.0)


def straight_plan(speed: float = SPEED, y: float = 0.0) -> np.ndarray:
    t = np.arange(1, 9) * 0.5
    return np.column_stack([speed * t, np.full(8, y), np.zeros(8)])


def transformed(scene: Scene, origin: np.ndarray) -> Scene:
    """The same scene with every scene-frame quantity moved by the rigid transform `origin` (x, y, heading)."""
    origin = np.asarray(origin, dtype=np.float64)

    def pose(p):
        return relative_to_absolute(origin, p)

    def points(p):
        return relative_to_absolute(origin, np.column_stack([p, np.zeros(len(p))]))[:, :2]

    def rotate(v):
        c, s = np.cos(origin[2]), np.sin(origin[2])
        return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)

    def ego(e):
        x, y, h = pose(e.pose)
        return EgoState(x, y, h, e.vx, e.vy, e.ax, e.ay, e.steering_angle)

    m = scene.map
    new_map = MapData(
        [MapArea(a.id, a.type, points(a.polygon)) for a in m.areas],
        [Lane(lane.id, lane.type, points(lane.polygon), None if lane.baseline is None else points(lane.baseline),
              lane.on_route, lane.speed_limit_mps) for lane in m.lanes],
        points(m.centerline), m.speed_limit_mps)
    agents = [Agent(a.token, a.type, a.length, a.width, a.height, pose(a.poses), rotate(a.velocities)) for a in scene.agents]
    statics = [StaticObject(s.token, s.type, *pose(np.array([s.x, s.y, s.heading])), s.length, s.width, s.height)
               for s in scene.static_objects]
    return scene.with_sample(ego_history=[ego(e) for e in scene.ego_history], map=new_map, agents=agents,
                             static_objects=statics, token=scene.token + "_moved", pdm_closed_trajectory=None)
