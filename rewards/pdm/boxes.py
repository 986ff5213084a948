"""Box corners and polygons with NAVSIM's exact arithmetic.

Point-in-polygon and intersection tests are decided on floating-point corners; computing the corners with
the same expression order as nuPlan/NAVSIM keeps a box that touches a polygon edge touching it here too.
Corner order everywhere: front-left, rear-left, rear-right, front-right (then the centre, `CENTER`).
"""
from __future__ import annotations

import numpy as np
import shapely

from sim.conventions import PACIFICA, VehicleParameters

FRONT_LEFT, REAR_LEFT, REAR_RIGHT, FRONT_RIGHT, CENTER = range(5)
_HALF_PI = np.pi / 2.0


def translate_lon_lat(centers: np.ndarray, headings: np.ndarray, lon: float, lat: float) -> np.ndarray:
    """Points (..., 2) moved by `lon` along and `lat` across `headings` (nuPlan's expression order)."""
    return centers + np.stack(
        [
            (lat * np.cos(headings + _HALF_PI)) + (lon * np.cos(headings)),
            (lat * np.sin(headings + _HALF_PI)) + (lon * np.sin(headings)),
        ],
        axis=-1,
    )


def box_coords(centers: np.ndarray, headings: np.ndarray, length, width) -> np.ndarray:
    """(..., 5, 2): the 4 corners and the centre of boxes with centre points (..., 2) and headings (...)."""
    half_l = np.asarray(length, dtype=np.float64) / 2.0
    half_w = np.asarray(width, dtype=np.float64) / 2.0
    cos_h, sin_h = np.cos(headings), np.sin(headings)
    cos_left, sin_left = np.cos(headings + _HALF_PI), np.sin(headings + _HALF_PI)
    coords = np.empty(np.shape(headings) + (5, 2), dtype=np.float64)
    for index, lon, lat in ((FRONT_LEFT, half_l, half_w), (REAR_LEFT, -half_l, half_w),
                            (REAR_RIGHT, -half_l, -half_w), (FRONT_RIGHT, half_l, -half_w)):
        coords[..., index, 0] = centers[..., 0] + ((lat * cos_left) + (lon * cos_h))
        coords[..., index, 1] = centers[..., 1] + ((lat * sin_left) + (lon * sin_h))
    coords[..., CENTER, :] = centers
    return coords


def ego_coords(rear_axle_poses: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """(..., 5, 2) ego corners + centre from rear-axle poses (..., 3)."""
    headings = rear_axle_poses[..., 2]
    d = vehicle.rear_axle_to_center
    centers = rear_axle_poses[..., :2] + np.stack([d * np.cos(headings), d * np.sin(headings)], axis=-1)
    return box_coords(centers, headings, vehicle.length, vehicle.width)


def ego_box_polygon(rear_axle_pose: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> shapely.Polygon:
    """The ego footprint polygon (nuPlan `CarFootprint.geometry`) of one rear-axle pose (3,)."""
    x, y, h = (float(v) for v in rear_axle_pose)
    d = vehicle.rear_axle_to_center
    center = np.array([x + d * np.cos(h), y + d * np.sin(h)])
    return polygons(box_coords(center, np.float64(h), vehicle.length, vehicle.width))


def polygons(coords: np.ndarray) -> np.ndarray:
    """Shapely polygons from (..., 5, 2) coords: the ring closes on the front-left corner (centre dropped)."""
    ring = np.array(coords, dtype=np.float64, copy=True)
    ring[..., CENTER, :] = ring[..., FRONT_LEFT, :]
    return shapely.polygons(ring)


def bounding_radius(length, width) -> np.ndarray:
    """Half diagonal of boxes: no point of the box is farther from its centre."""
    return 0.5 * np.hypot(np.asarray(length, dtype=np.float64), np.asarray(width, dtype=np.float64))
