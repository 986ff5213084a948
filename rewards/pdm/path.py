"""A route centre line as NAVSIM's `PDMPath`: arc-length interpolation of (x, y, heading) poses."""
from __future__ import annotations

import numpy as np
import shapely
import shapely.ops

from rewards.pdm.observation import interp_linear


def polyline_poses(points: np.ndarray) -> np.ndarray:
    """(N, 3) poses of a polyline (N, 2) or (N, 3): missing headings point to the next vertex, the last
    one repeats (nuPlan's baseline-path headings)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[1] >= 3:
        return points[:, :3].copy()
    d = np.diff(points, axis=0)
    headings = np.arctan2(d[:, 1], d[:, 0])
    return np.column_stack([points, np.append(headings, headings[-1])])


class Path:
    """Discrete path poses (N, 3) with NAVSIM's progress, projection, interpolation and substring rules."""

    def __init__(self, poses: np.ndarray):
        self.discrete = np.asarray(poses, dtype=np.float64)
        self.poses = self.discrete.copy()
        self.poses[:, 2] = np.unwrap(self.poses[:, 2], axis=0)
        diff = np.concatenate(([np.diff(self.discrete[:, 0])], [np.diff(self.discrete[:, 1])]), axis=0)
        self.progress = np.cumsum(np.append(0.0, np.linalg.norm(diff, axis=0)), dtype=np.float64)
        self.line = shapely.linestrings(self.poses[:, :2])
        shapely.prepare(self.line)

    @property
    def length(self) -> float:
        return float(self.progress[-1])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Arc length (...) of the closest point of the path to points (..., 2)."""
        return shapely.line_locate_point(self.line, shapely.points(points))

    def interpolate(self, distances: np.ndarray) -> np.ndarray:
        """(n, 3) poses at arc lengths (n,), clipped to [1e-5, length]; heading wrapped to [-pi, pi]."""
        clipped = np.clip(np.asarray(distances, dtype=np.float64), 1e-5, self.length)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = interp_linear(self.progress, self.poses, np.atleast_1d(clipped))
        out[..., 2] = np.arctan2(np.sin(out[..., 2]), np.cos(out[..., 2]))
        out[np.isnan(out)] = 0.0
        return out

    def substring(self, start: float, end: float) -> shapely.LineString:
        """The path between two arc lengths: the discrete vertices inside when there are two or more
        (NAVSIM's shortcut, the exact end points are not added), else shapely's exact substring."""
        start = np.clip(start, 0.0, self.length)
        end = np.clip(end, 0.0, self.length)
        inside = (start <= self.progress) & (self.progress <= end)
        if inside.sum() > 1:
            return shapely.LineString(self.poses[inside, :2])
        return shapely.ops.substring(self.line, start, end)

    def offset(self, lateral: float) -> "Path":
        """A parallel path `lateral` metres to the left of each discrete pose (headings kept)."""
        theta = self.discrete[:, 2] + np.pi / 2
        moved = self.discrete.copy()
        moved[:, 0] = self.discrete[:, 0] + np.cos(theta) * lateral
        moved[:, 1] = self.discrete[:, 1] + np.sin(theta) * lateral
        return Path(moved)
