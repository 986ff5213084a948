"""Planar rigid-body geometry on (x, y, heading) poses. Pure numpy, vectorised over leading axes."""
from __future__ import annotations

import numpy as np

from sim.conventions import PACIFICA, VehicleParameters


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def relative_to_absolute(origin: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Poses (..., 3) expressed in the frame of `origin` (3,) -> the frame `origin` is expressed in."""
    poses = np.asarray(poses, dtype=np.float64)
    x0, y0, h0 = float(origin[0]), float(origin[1]), float(origin[2])
    c, s = np.cos(h0), np.sin(h0)
    out = np.empty_like(poses)
    out[..., 0] = x0 + c * poses[..., 0] - s * poses[..., 1]
    out[..., 1] = y0 + s * poses[..., 0] + c * poses[..., 1]
    out[..., 2] = wrap_angle(h0 + poses[..., 2])
    return out


def absolute_to_relative(origin: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Poses (..., 3) in some frame -> the same poses in the frame of `origin` (3,), given in that frame."""
    poses = np.asarray(poses, dtype=np.float64)
    x0, y0, h0 = float(origin[0]), float(origin[1]), float(origin[2])
    c, s = np.cos(h0), np.sin(h0)
    dx, dy = poses[..., 0] - x0, poses[..., 1] - y0
    out = np.empty_like(poses)
    out[..., 0] = c * dx + s * dy
    out[..., 1] = -s * dx + c * dy
    out[..., 2] = wrap_angle(poses[..., 2] - h0)
    return out


def points_to_relative(origin: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) -> the frame of `origin` (3,)."""
    return absolute_to_relative(origin, _as_poses(points))[..., :2]


def points_to_absolute(origin: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) in the frame of `origin` (3,) -> the frame `origin` is expressed in."""
    return relative_to_absolute(origin, _as_poses(points))[..., :2]


def rotate_vectors(vectors: np.ndarray, angle: float) -> np.ndarray:
    """Rotate free vectors (..., 2) (velocities, accelerations) by `angle`."""
    vectors = np.asarray(vectors, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * vectors[..., 0] - s * vectors[..., 1], s * vectors[..., 0] + c * vectors[..., 1]], -1)


def _as_poses(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return np.concatenate([points[..., :2], np.zeros(points.shape[:-1] + (1,))], axis=-1)


def box_corners(centers: np.ndarray, length: float | np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Corners (..., 4, 2) of oriented boxes given their centre poses (..., 3).

    Order: front-left, rear-left, rear-right, front-right (nuPlan's order; edge 3 -> 0 is the front).
    """
    centers = np.asarray(centers, dtype=np.float64)
    half_l = np.asarray(length, dtype=np.float64)[..., None] / 2.0
    half_w = np.asarray(width, dtype=np.float64)[..., None] / 2.0
    local_x = np.concatenate([half_l, -half_l, -half_l, half_l], axis=-1) * np.ones(centers.shape[:-1] + (4,))
    local_y = np.concatenate([half_w, half_w, -half_w, -half_w], axis=-1) * np.ones(centers.shape[:-1] + (4,))
    c, s = np.cos(centers[..., 2:3]), np.sin(centers[..., 2:3])
    xs = centers[..., 0:1] + c * local_x - s * local_y
    ys = centers[..., 1:2] + s * local_x + c * local_y
    return np.stack([xs, ys], axis=-1)


def rear_axle_to_center(rear_axle_poses: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """Rear-axle poses (..., 3) -> box-centre poses (..., 3) of `vehicle`."""
    poses = np.array(rear_axle_poses, dtype=np.float64, copy=True)
    d = vehicle.rear_axle_to_center
    poses[..., 0] += d * np.cos(poses[..., 2])
    poses[..., 1] += d * np.sin(poses[..., 2])
    return poses


def center_to_rear_axle(center_poses: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """Box-centre poses (..., 3) -> rear-axle poses (..., 3) of `vehicle`."""
    poses = np.array(center_poses, dtype=np.float64, copy=True)
    d = vehicle.rear_axle_to_center
    poses[..., 0] -= d * np.cos(poses[..., 2])
    poses[..., 1] -= d * np.sin(poses[..., 2])
    return poses


def ego_corners(rear_axle_poses: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """Corners (..., 4, 2) of the ego box for rear-axle poses (..., 3), in nuPlan's corner order."""
    return box_corners(rear_axle_to_center(rear_axle_poses, vehicle), vehicle.length, vehicle.width)


def polyline_arc_length(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length (N,) along a polyline (N, 2), starting at 0."""
    points = np.asarray(points, dtype=np.float64)
    seg = np.linalg.norm(np.diff(points[:, :2], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def polyline_headings(points: np.ndarray) -> np.ndarray:
    """Heading (N,) of a polyline (N, 2) at each vertex (forward difference; the last repeats)."""
    points = np.asarray(points, dtype=np.float64)
    d = np.diff(points[:, :2], axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    return np.concatenate([h, h[-1:]])


def resample_polyline(points: np.ndarray, spacing: float) -> np.ndarray:
    """Resample a polyline (N, 2) at a constant arc-length `spacing` (the last point kept)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    s = polyline_arc_length(points)
    stations = np.arange(0.0, s[-1], spacing)
    if stations.size == 0 or stations[-1] < s[-1]:
        stations = np.append(stations, s[-1])
    return np.stack([np.interp(stations, s, points[:, 0]), np.interp(stations, s, points[:, 1])], axis=-1)
