"""From a planned scenario (world frame) to a `Scene` in the ego frame at t = 0, and the driving command.

The scene frame of every synthetic scene is the ego frame at t = 0 (rear axle at (0, 0), heading 0).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sim import conventions as C
from sim.geometry import absolute_to_relative, points_to_relative, rotate_vectors
from sim.scene import EgoState, Lane, MapArea, MapData, Reasoning, Scene, StaticObject, StopLine, TrafficLight
from sim.scenarios.expert import Plan
from sim.scenarios.longitudinal import CURRENT
from sim.paths import Path
from sim.scenarios.scenario import Scenario

COMMAND_LOOKAHEAD_M = 20.0  # OpenScene: the route centre line 20 m ahead ...
COMMAND_THRESHOLD_M = 2.0  # ... more than 2 m to the side -> left / right
HISTORY_INDICES = (0, 5, 10, 15)
CENTERLINE_BEHIND_M = 35.0  # the scene's route centre line starts this far behind the ego ...
CENTERLINE_AHEAD_M = 220.0  # ... and ends this far ahead (PDM-Closed treats its end as an obstacle)
CENTERLINE_SPACING_M = 1.0  # fine-grid indices of t = -1.5, -1.0, -0.5, 0 s


def command_from_centerline(centerline: np.ndarray, pose: np.ndarray, lookahead: float = COMMAND_LOOKAHEAD_M) -> int:
    """OpenScene's rule: index into DRIVING_COMMANDS (left, straight, right) of the route centre line point
    `lookahead` m beyond the projection of `pose`, seen from the centre line's pose at that projection."""
    path = Path(centerline)
    s0, _ = path.project(np.asarray(pose, dtype=np.float64)[:2])
    here = path.pose_at(float(s0))
    target = path.pose_at(float(s0) + lookahead)
    lateral = absolute_to_relative(here, target)[1]
    if lateral >= COMMAND_THRESHOLD_M:
        return C.DRIVING_COMMANDS.index("left")
    if lateral <= -COMMAND_THRESHOLD_M:
        return C.DRIVING_COMMANDS.index("right")
    return C.DRIVING_COMMANDS.index("straight")


def command_lookahead(scenario: Scenario, ego_s: float) -> float:
    """20 m, extended to the end of the junction for junction families whose turn lies in reach."""
    if scenario.turn_end_s is not None and scenario.turn_end_s - ego_s < 70.0:
        return max(COMMAND_LOOKAHEAD_M, scenario.turn_end_s - ego_s)
    return COMMAND_LOOKAHEAD_M


def _ego_states(plan: Plan, route: Path) -> list[EgoState]:
    states = []
    for k in HISTORY_INDICES:
        pose = plan.poses[k]
        v = float(plan.speeds[k])
        kappa = float(route.curvature_at(plan.profile.s[k]))
        states.append(EgoState(float(pose[0]), float(pose[1]), float(pose[2]), v, 0.0, float(plan.profile.a[k]), v * v * kappa))
    return states


def _map_to_ego(map_data: MapData, origin: np.ndarray) -> MapData:
    def rel(points):
        return points_to_relative(origin, points)

    return MapData(
        areas=[MapArea(a.id, a.type, rel(a.polygon)) for a in map_data.areas],
        lanes=[
            Lane(l.id, l.type, rel(l.polygon), None if l.baseline is None else rel(l.baseline), l.on_route, l.speed_limit_mps, l.roadblock_id)
            for l in map_data.lanes
        ],
        centerline=rel(map_data.centerline),
        speed_limit_mps=map_data.speed_limit_mps,
        stop_lines=[StopLine(s.id, s.type, rel(s.polygon)) for s in map_data.stop_lines],
    )


def build_scene(
    scenario: Scenario,
    plan: Plan,
    token: str,
    seed: int,
    sample_type: str,
    reasoning: Reasoning,
    negative: Optional[np.ndarray] = None,
    negative_kind: Optional[str] = None,
    recovery_kind: Optional[str] = None,
) -> Scene:
    """The scene in the ego frame at t = 0 of `plan` (world-frame negative poses (10, 3) if given)."""
    tokens = [t.token for t in scenario.tracks] + [o.token for o in scenario.statics]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"scenario {token}: object tokens are not unique: {sorted(tokens)}")
    origin = plan.poses[CURRENT].copy()
    history_world = _ego_states(plan, scenario.route)
    history = []
    for e in history_world:
        pose = absolute_to_relative(origin, e.pose)
        history.append(EgoState(float(pose[0]), float(pose[1]), float(pose[2]), e.vx, e.vy, e.ax, e.ay))
    future = absolute_to_relative(origin, plan.future_poses())
    ego_s = float(plan.profile.s[CURRENT])
    stations = np.arange(max(0.0, ego_s - CENTERLINE_BEHIND_M), min(scenario.route.length, ego_s + CENTERLINE_AHEAD_M), CENTERLINE_SPACING_M)
    centerline_world = scenario.route.point_at(stations)
    map_world = scenario.builder.build(scenario.route_roadblocks, centerline_world, scenario.speed_limit)
    map_ego = _map_to_ego(map_world, origin)
    agents = []
    for track in scenario.tracks:
        agent = track.to_agent()
        agent.poses = absolute_to_relative(origin, agent.poses)
        agent.velocities = rotate_vectors(agent.velocities, -origin[2])
        agents.append(agent)
    statics = []
    for obj in scenario.statics:
        pose = absolute_to_relative(origin, np.array([obj.x, obj.y, obj.heading]))
        statics.append(StaticObject(obj.token, obj.type, float(pose[0]), float(pose[1]), float(pose[2]), obj.length, obj.width, obj.height))
    lights = []
    for light in scenario.lights:
        head = None
        if light.head is not None:
            xy = points_to_relative(origin, np.array(light.head[:2]))
            head = (float(xy[0]), float(xy[1]), float(light.head[2]))
        lights.append(TrafficLight(light.lane_connector_id, list(light.states), head))
    command = command_from_centerline(map_ego.centerline, np.zeros(3), command_lookahead(scenario, ego_s))
    scene = Scene(
        token=token,
        ego_history=history,
        driving_command=command,
        map=map_ego,
        agents=agents,
        static_objects=statics,
        traffic_lights=lights,
        future=future,
        family=scenario.family,
        sample_type=sample_type,
        negative_trajectory=None if negative is None else absolute_to_relative(origin, negative),
        recovery_trajectory=future.copy() if sample_type == "rec" else None,
        negative_kind=negative_kind,
        recovery_kind=recovery_kind,
        human_trajectory=future[: C.NAVSIM_PLAN_POSES].copy(),
        reasoning=reasoning,
        seed=seed,
    )
    return scene.validate()
