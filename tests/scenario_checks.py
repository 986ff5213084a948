"""Independent checks of synthetic scenes (shapely and the scene alone, not the generator's helpers),
shared by the scenario tests."""
from __future__ import annotations

import numpy as np
import shapely

from sim import conventions as C
from sim.geometry import absolute_to_relative, box_corners, ego_corners


def drivable_union(scene) -> shapely.Geometry:
    polygons = [shapely.Polygon(a.polygon) for a in scene.map.areas if a.type in C.DRIVABLE_LAYERS]
    return shapely.union_all(polygons)


def corners_inside(area: shapely.Geometry, poses: np.ndarray) -> np.ndarray:
    """(N,) all four ego corners strictly inside the drivable area (NAVSIM's DAC test)."""
    corners = ego_corners(poses)
    inside = shapely.contains_xy(area, corners[..., 0], corners[..., 1])
    return inside.all(axis=-1)


def interpolate_10hz(poses_2hz: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Linear 10 Hz resampling of poses at 0.5 s steps (prepended with the start pose at t = 0)."""
    knots = np.concatenate([start[None], poses_2hz], axis=0)
    t_knots = np.arange(len(knots)) * 0.5
    t = np.arange(0.0, t_knots[-1] + 1e-9, 0.1)
    heading = np.unwrap(knots[:, 2])
    return np.stack([np.interp(t, t_knots, knots[:, 0]), np.interp(t, t_knots, knots[:, 1]), np.interp(t, t_knots, heading)], -1)


def agent_boxes_10hz(scene) -> list[tuple[str, np.ndarray]]:
    """Agent and static-object corners at t = 0, 0.1, ..., 5.0 s (agents linearly interpolated)."""
    t = np.arange(0.0, 5.0 + 1e-9, 0.1)
    frames = C.AGENT_TIMES_S
    out = []
    for agent in scene.agents:
        present = agent.present()
        p = agent.poses
        poses = np.stack([np.interp(t, frames[present], p[present, i]) for i in range(2)] + [np.interp(t, frames[present], np.unwrap(p[present, 2]))], -1)
        out.append((agent.token, box_corners(poses, agent.length, agent.width)))
    for obj in scene.static_objects:
        box = box_corners(np.array([obj.x, obj.y, obj.heading]), obj.length, obj.width)
        out.append((obj.token, np.broadcast_to(box, (len(t), 4, 2))))
    return out


def first_hit(scene, trajectory: np.ndarray) -> str | None:
    ego = ego_corners(interpolate_10hz(trajectory, np.zeros(3)))
    ego_polys = shapely.polygons(ego)
    for token, corners in agent_boxes_10hz(scene):
        if np.any(shapely.intersects(ego_polys, shapely.polygons(corners[: len(ego)]))):
            return token
    return None


def route_lateral(scene, lookahead: float) -> float:
    """OpenScene's command rule, written with shapely: the lateral offset of the centre line `lookahead` m
    past the ego's projection, seen from the centre line's own pose there (+-2 m: left / right)."""
    line = shapely.LineString(scene.map.centerline)
    s0 = line.project(shapely.Point(0.0, 0.0))
    here = np.array(line.interpolate(s0).coords[0])
    ahead = np.array(line.interpolate(s0 + 0.5).coords[0])
    target = np.array(line.interpolate(s0 + lookahead).coords[0])
    heading = np.arctan2(*(ahead - here)[::-1])
    return float(absolute_to_relative(np.array([*here, heading]), np.array([*target, 0.0]))[1])


def turn_lookahead(scene) -> float:
    """Distance along the centre line to where it has turned by 85 degrees (the end of a turn at a
    junction; 20 m when it does not turn)."""
    line = np.asarray(scene.map.centerline)
    seg = np.diff(line, axis=0)
    heading = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    s0 = shapely.LineString(line).project(shapely.Point(0.0, 0.0))
    i0 = int(np.searchsorted(arc, s0))
    turned = np.flatnonzero(np.abs(heading[i0:] - heading[min(i0, len(heading) - 1)]) > np.deg2rad(85.0))
    return float(arc[i0 + turned[0]] - s0) if turned.size else 20.0
