"""Safety and drivability checks on the fine grid: box overlaps (with NAVSIM's time-to-collision look-ahead)
and drivable-area containment. Used by the expert to find what it must yield to, and to accept its plans.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import shapely

from sim.conventions import DRIVABLE_LAYERS, PACIFICA
from sim.geometry import box_corners, ego_corners
from sim.scenarios.longitudinal import CURRENT, FINE_TIMES

TTC_LOOKAHEAD_STEPS = (0, 3, 6, 9)  # NAVSIM's time-to-collision look-ahead: 0, 0.3, 0.6, 0.9 s at 10 Hz


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test for convex quadrilaterals: corners a (..., 4, 2), b (..., 4, 2) -> bool (...)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    separated = np.zeros(a.shape[:-2], dtype=bool)
    for poly in (a, b):
        for i in range(2):  # rectangles: two edge directions per box suffice
            edge = poly[..., i + 1, :] - poly[..., i, :]
            axis = np.stack([-edge[..., 1], edge[..., 0]], axis=-1)
            pa = np.einsum("...kj,...j->...k", a, axis)
            pb = np.einsum("...kj,...j->...k", b, axis)
            separated |= (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))
    return ~separated


@dataclass
class Obstacles:
    """Every other road user and static object as boxes on the fine grid."""

    tokens: list[str]
    corners: np.ndarray  # (M, 66, 4, 2)
    centres: np.ndarray  # (M, 66, 2)
    radii: np.ndarray  # (M,) half diagonals: no overlap is possible beyond the sum of two radii

    @staticmethod
    def build(tracks: list, statics: list) -> "Obstacles":
        tokens, corners, centres, radii = [], [], [], []
        for track in tracks:
            tokens.append(track.token)
            corners.append(track.corners())
            centres.append(np.where(track.present[:, None], track.poses[:, :2], 1e6))
            radii.append(np.hypot(track.dims.length, track.dims.width) / 2.0)
        n = len(FINE_TIMES)
        for obj in statics:
            tokens.append(obj.token)
            box = box_corners(np.array([obj.x, obj.y, obj.heading]), obj.length, obj.width)
            corners.append(np.broadcast_to(box, (n, 4, 2)))
            centres.append(np.broadcast_to(np.array([obj.x, obj.y]), (n, 2)))
            radii.append(np.hypot(obj.length, obj.width) / 2.0)
        if not tokens:
            return Obstacles([], np.zeros((0, n, 4, 2)), np.zeros((0, n, 2)), np.zeros(0))
        return Obstacles(tokens, np.stack(corners), np.stack(centres), np.array(radii))


@dataclass(frozen=True)
class Violation:
    token: str
    index: int  # fine-grid index of the ego state
    lookahead: int  # steps of the TTC look-ahead (0 = an actual overlap)


def inflated_ego_corners(poses: np.ndarray, margin_lat: float = 0.0, margin_lon: float = 0.0) -> np.ndarray:
    """Ego corners (..., 4, 2) for rear-axle poses, grown by margins on each side / front and back."""
    centre = poses.copy()
    d = PACIFICA.rear_axle_to_center
    centre[..., 0] += d * np.cos(poses[..., 2])
    centre[..., 1] += d * np.sin(poses[..., 2])
    return box_corners(centre, PACIFICA.length + 2 * margin_lon, PACIFICA.width + 2 * margin_lat)


def first_violation(
    poses: np.ndarray,
    speeds: np.ndarray,
    obstacles: Obstacles,
    start: int = CURRENT,
    margin_lat: float = 0.25,
    margin_lon: float = 0.5,
    ignore: frozenset = frozenset(),
    stop: Optional[int] = None,
) -> Optional[Violation]:
    """The earliest (fine index, look-ahead) at which the ego box, projected ahead at its speed as NAVSIM's
    TTC does, overlaps another road user (ahead of or beside it: objects behind are not the ego's fault).

    poses / speeds: (66,) fine grid; ego states from `start` to `stop` (exclusive, default: all) are
    checked, each against the objects up to 0.9 s later."""
    if not obstacles.tokens:
        return None
    n = len(poses)
    last = n if stop is None else min(stop, n)
    keep = [i for i, t in enumerate(obstacles.tokens) if t not in ignore]
    if not keep:
        return None
    corners = obstacles.corners[keep]
    centres = obstacles.centres[keep]
    radii = obstacles.radii[keep]
    ego_radius = np.hypot(PACIFICA.length + 2 * margin_lon, PACIFICA.width + 2 * margin_lat) / 2.0
    best: Optional[Violation] = None
    for look in TTC_LOOKAHEAD_STEPS:
        ks = np.arange(start, min(last, n - look))
        if ks.size == 0:
            continue
        shifted = poses[ks].copy()
        dist = speeds[ks] * look * 0.1
        shifted[:, 0] += dist * np.cos(poses[ks, 2])
        shifted[:, 1] += dist * np.sin(poses[ks, 2])
        ego = inflated_ego_corners(shifted, margin_lat, margin_lon)  # (K, 4, 2)
        # only pairs whose bounding circles meet can overlap: test those exactly
        ego_centre = ego.mean(axis=1)
        near = np.linalg.norm(centres[:, ks + look] - ego_centre[None], axis=-1) < radii[:, None] + ego_radius
        if look > 0:
            near &= speeds[ks][None] > 0.05
        m_idx, k_idx = np.nonzero(near)
        if m_idx.size == 0:
            continue
        hit = boxes_overlap(ego[k_idx], corners[m_idx, ks[k_idx] + look])
        if look > 0:
            # objects behind the ego (> 150 deg from its heading) do not count for the look-ahead
            rel = centres[m_idx, ks[k_idx] + look] - poses[ks[k_idx], :2]
            heading = poses[ks[k_idx], 2]
            along = rel[:, 0] * np.cos(heading) + rel[:, 1] * np.sin(heading)
            hit &= along > np.cos(np.deg2rad(150.0)) * np.maximum(np.linalg.norm(rel, axis=-1), 1e-6)
        if np.any(hit):
            first = int(np.argmin(np.where(hit, k_idx, np.iinfo(np.int64).max)))
            candidate = Violation(obstacles.tokens[keep[m_idx[first]]], int(ks[k_idx[first]]), look)
            if best is None or candidate.index < best.index:
                best = candidate
    return best


class DrivableArea:
    """The union of the map's drivable polygons (NAVSIM's DAC layers), for strict point-in-area tests."""

    def __init__(self, areas: list):
        polygons = [shapely.Polygon(a.polygon) for a in areas if a.type in DRIVABLE_LAYERS]
        if not polygons:
            raise ValueError("the map has no drivable polygon (roadblock, intersection, drivable_area, carpark_area)")
        self.polygons = [shapely.make_valid(p) for p in polygons]
        for polygon in self.polygons:
            shapely.prepare(polygon)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(...,) bool: strictly inside some drivable polygon (as NAVSIM's corner test)."""
        points = np.asarray(points, dtype=np.float64)
        flat = points.reshape(-1, 2)
        inside = np.zeros(len(flat), dtype=bool)
        for polygon in self.polygons:
            inside |= shapely.contains_xy(polygon, flat[:, 0], flat[:, 1])
        return inside.reshape(points.shape[:-1])

    def ego_inside(self, poses: np.ndarray) -> np.ndarray:
        """(...,) bool: all four corners of the ego box (rear-axle poses (..., 3)) in the drivable area."""
        return self.contains(ego_corners(poses)).all(axis=-1)
