"""The map as NAVSIM's scorer sees it: typed polygons, point tests, ego-area flags.

NAVSIM's `PDMDrivableMap` holds roadblock, lane, lane-connector, intersection and carpark polygons (plus
drivable-area polygons in our scene format); roadblock-connector polygons are not part of it. Every
point test is a strict interior test (`shapely.contains_xy`): a point on an edge is outside.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.scene import MapData

from rewards.pdm.boxes import CENTER

DRIVABLE_TYPES = ("roadblock", "intersection", "drivable_area", "carpark_area")  # count for DAC
LANE_TYPES = ("lane", "lane_connector")

# ego-area flags, last axis of `ego_areas`
MULTIPLE_LANES, NON_DRIVABLE_AREA, ONCOMING_TRAFFIC = range(3)


@dataclass
class DrivableMap:
    """Map polygons with their type and route membership.

    ids, types: per polygon; polygons: shapely array; on_route: bool per polygon (lanes only).
    """

    ids: list[str]
    types: list[str]
    polygons: np.ndarray
    on_route: np.ndarray
    speed_limits: list = field(default_factory=list)
    baselines: list = field(default_factory=list)

    def __post_init__(self):
        for polygon in self.polygons:
            shapely.prepare(polygon)
        types = np.array(self.types, dtype=object)
        self.drivable_idx = np.flatnonzero(np.isin(types, DRIVABLE_TYPES))
        self.lane_idx = np.flatnonzero(np.isin(types, LANE_TYPES))
        self.route_lane_idx = np.array([i for i in self.lane_idx if self.on_route[i]], dtype=np.int64)
        self.intersection_idx = np.flatnonzero(types == "intersection")
        self._bounds = shapely.bounds(self.polygons) if len(self.polygons) else np.zeros((0, 4))

    @classmethod
    def from_map(cls, map_data: MapData) -> "DrivableMap":
        ids, types, polys, on_route, limits, baselines = [], [], [], [], [], []
        for area in map_data.areas:
            if area.type == "roadblock_connector":  # not part of NAVSIM's drivable map
                continue
            ids.append(area.id)
            types.append(area.type)
            polys.append(shapely.Polygon(area.polygon))
            on_route.append(False)
            limits.append(None)
            baselines.append(None)
        for lane in map_data.lanes:
            ids.append(lane.id)
            types.append(lane.type)
            polys.append(shapely.Polygon(lane.polygon))
            on_route.append(bool(lane.on_route))
            limits.append(lane.speed_limit_mps if lane.speed_limit_mps is not None else map_data.speed_limit_mps)
            baselines.append(lane.baseline)
        return cls(ids, types, np.array(polys, dtype=object), np.array(on_route, dtype=bool), limits, baselines)

    def contains(self, indices: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(len(indices), ...) strict point-in-polygon for points (..., 2), one row per polygon index."""
        flat = points.reshape(-1, 2)
        out = np.zeros((len(indices), len(flat)), dtype=bool)
        for row, i in enumerate(indices):
            x0, y0, x1, y1 = self._bounds[i]
            near = (flat[:, 0] >= x0) & (flat[:, 0] <= x1) & (flat[:, 1] >= y0) & (flat[:, 1] <= y1)
            if np.any(near):
                out[row, near] = shapely.contains_xy(self.polygons[i], flat[near, 0], flat[near, 1])
        return out.reshape((len(indices),) + points.shape[:-1])

    def in_intersection(self, points: np.ndarray) -> np.ndarray:
        """(...) bool: the points (..., 2) lie strictly inside some intersection polygon."""
        if len(self.intersection_idx) == 0:
            return np.zeros(points.shape[:-1], dtype=bool)
        return self.contains(self.intersection_idx, points).any(axis=0)

    def ego_areas(self, coords: np.ndarray) -> np.ndarray:
        """(P, T, 3) flags MULTIPLE_LANES, NON_DRIVABLE_AREA, ONCOMING_TRAFFIC from ego coords (P, T, 5, 2)."""
        corners, centers = coords[..., :CENTER, :], coords[..., CENTER, :]
        areas = np.zeros(coords.shape[:2] + (3,), dtype=bool)
        # corners per lane polygon: (n_lanes, P, T, 4)
        if len(self.lane_idx):
            in_lanes = self.contains(self.lane_idx, corners).sum(axis=-1)
            touched = (in_lanes > 0).sum(axis=0) > 1
            none_whole = np.all(in_lanes != 4, axis=0)
            areas[..., MULTIPLE_LANES] = touched & none_whole
        if len(self.drivable_idx):
            covered = self.contains(self.drivable_idx, corners).sum(axis=0) > 0
            areas[..., NON_DRIVABLE_AREA] = covered.sum(axis=-1) < 4
        else:
            areas[..., NON_DRIVABLE_AREA] = True
        if len(self.route_lane_idx):
            areas[..., ONCOMING_TRAFFIC] = self.contains(self.route_lane_idx, centers).sum(axis=0) == 0
        else:
            areas[..., ONCOMING_TRAFFIC] = True
        return areas
