"""Map data for scenes read from NAVSIM / OpenScene logs, through nuPlan's map API.

`NuplanMapSource` turns the nuPlan map around a scene into `MapData` in the scene frame: roadblocks with
their lanes, roadblock connectors with their lane connectors, intersections, car parks (the polygons
NAVSIM's drivable-area map collects within 100 m), stop lines, the route's lanes (from the frame's
`roadblock_ids`) and the route centre line. The route search itself works on a plain lane graph
(`LaneNode`, `route_centerline`) so it does not depend on nuPlan.
"""
from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np
import shapely

from sim.geometry import points_to_relative, wrap_angle
from sim.scene import Lane, MapArea, MapData, StopLine

NUPLAN_MAP_VERSION = "nuplan-maps-v1.0"
MAP_RADIUS_M = 100.0
ROUTE_SEARCH_DEPTH = 30  # roadblocks ahead considered by the centre-line search
INSTALL_HINT = (
    "Reading maps of NAVSIM logs needs nuPlan's devkit: `pip install git+https://github.com/motional/nuplan-devkit.git`"
    " (with its map dependencies), and the nuPlan maps (nuplan-maps-v1.0, from https://www.nuscenes.org/nuplan) unpacked"
    " under a directory given as {map_root} or in the environment variable NUPLAN_MAPS_ROOT. Without a map, {without_map}"
    " (scenes usable for imitation, not for scoring)."
)


class MapUnavailableError(RuntimeError):
    """The map of a log cannot be loaded; the message says what to install or configure."""


class MapSource(Protocol):
    """Where the map of a log scene comes from."""

    def map_data(self, map_name: str, origin: np.ndarray, route_roadblock_ids: Sequence[str]) -> MapData:
        """The map around `origin` (global pose (x, y, heading) of the scene frame), expressed in the scene
        frame, with the lanes of `route_roadblock_ids` on route and the route centre line."""
        ...


def map_name_of(map_location: str) -> str:
    """OpenScene's `map_location` -> nuPlan map name (NAVSIM renames 'las_vegas')."""
    return "us-nv-las-vegas-strip" if map_location == "las_vegas" else map_location


# --- the route centre line on a plain lane graph -----------------------------------------------------------


@dataclass
class LaneNode:
    """A lane or lane connector of the route graph: roadblock, centre line (M, 3) (x, y, heading) and the ids
    of the lanes it leads to."""

    id: str
    roadblock_id: str
    baseline: np.ndarray
    successors: list[str] = field(default_factory=list)


def starting_lane(nodes: dict[str, LaneNode], route_lane_ids: Sequence[str], ego_pose: np.ndarray,
                  containing: Sequence[str] = ()) -> Optional[str]:
    """The route lane the ego starts on: among the route lanes in `containing` (those whose polygon holds
    the ego's rear axle) the one whose closest baseline pose has the smallest heading error; otherwise the
    route lane whose baseline passes closest to the ego."""
    candidates = [i for i in containing if i in route_lane_ids]
    pool = candidates or list(route_lane_ids)
    best, best_key = None, (math.inf, math.inf)
    for lane_id in pool:
        baseline = nodes[lane_id].baseline
        d = np.hypot(baseline[:, 0] - ego_pose[0], baseline[:, 1] - ego_pose[1])
        k = int(np.argmin(d))
        heading_error = abs(float(wrap_angle(baseline[k, 2] - ego_pose[2])))
        key = (heading_error, d[k]) if candidates else (d[k], heading_error)
        if key < best_key:
            best, best_key = lane_id, key
    return best


def route_centerline(nodes: dict[str, LaneNode], route_roadblock_ids: Sequence[str], start: str,
                     depth: int = ROUTE_SEARCH_DEPTH) -> np.ndarray:
    """Centre line (K, 3) of the route from lane `start`: a breadth-first search over route lanes
    (successor links) for the lane that reaches furthest along the route's roadblock order (within `depth`
    roadblocks of the start), then the baselines of the lanes on that path, concatenated."""
    order = {rb: i for i, rb in enumerate(dict.fromkeys(route_roadblock_ids))}
    route_lanes = {i for i, n in nodes.items() if n.roadblock_id in order}
    start_rank = order.get(nodes[start].roadblock_id, 0)
    parent: dict[str, Optional[str]] = {start: None}
    queue = deque([start])
    best = start
    while queue:
        lane_id = queue.popleft()
        rank = order.get(nodes[lane_id].roadblock_id, -1)
        if rank > order.get(nodes[best].roadblock_id, -1):
            best = lane_id
        for nxt in nodes[lane_id].successors:
            if nxt in route_lanes and nxt not in parent and order[nodes[nxt].roadblock_id] <= start_rank + depth:
                parent[nxt] = lane_id
                queue.append(nxt)
    path = []
    lane_id: Optional[str] = best
    while lane_id is not None:
        path.append(lane_id)
        lane_id = parent[lane_id]
    return np.concatenate([nodes[i].baseline for i in reversed(path)], axis=0)


# --- nuPlan ------------------------------------------------------------------------------------------------


class NuplanMapSource:
    """Maps from nuPlan's map API (`nuplan.common.maps.nuplan_map.map_factory.get_maps_api`).

    map_root: directory holding `nuplan-maps-v1.0/`; defaults to the environment variable NUPLAN_MAPS_ROOT.
    map_root_name, without_map: how the error message names the map root and the way to go on without a map
    (the library's `map_root` and `with_map=False` by default; a CLI names its flags).
    Raises `MapUnavailableError` naming what to install when nuplan is not importable or no root is set.
    """

    def __init__(self, map_root: Optional[str] = None, map_version: str = NUPLAN_MAP_VERSION, radius_m: float = MAP_RADIUS_M,
                 map_root_name: str = "`map_root`", without_map: str = "read the logs with `with_map=False`"):
        hint = INSTALL_HINT.format(map_root=map_root_name, without_map=without_map)
        try:
            from nuplan.common.actor_state.state_representation import Point2D
            from nuplan.common.maps.maps_datatypes import SemanticMapLayer
            from nuplan.common.maps.nuplan_map.map_factory import get_maps_api
        except ImportError as e:
            raise MapUnavailableError(f"nuplan is not importable ({e}). {hint}") from e
        self.map_root = map_root or os.environ.get("NUPLAN_MAPS_ROOT")
        if not self.map_root:
            raise MapUnavailableError(f"no nuPlan map root: pass {map_root_name} or set NUPLAN_MAPS_ROOT. {hint}")
        if not os.path.isdir(self.map_root):
            raise MapUnavailableError(f"nuPlan map root {self.map_root!r} is not a directory. {hint}")
        self.map_version = map_version
        self.radius_m = radius_m
        self._point, self._layer, self._get_maps_api = Point2D, SemanticMapLayer, get_maps_api
        self._apis: dict = {}

    def _api(self, map_name: str):
        if map_name not in self._apis:
            self._apis[map_name] = self._get_maps_api(self.map_root, self.map_version, map_name)
        return self._apis[map_name]

    def map_data(self, map_name: str, origin: np.ndarray, route_roadblock_ids: Sequence[str]) -> MapData:
        api, layer = self._api(map_name), self._layer
        layers = [layer.ROADBLOCK, layer.ROADBLOCK_CONNECTOR, layer.INTERSECTION, layer.CARPARK_AREA, layer.STOP_LINE]
        found = api.get_proximal_map_objects(self._point(float(origin[0]), float(origin[1])), self.radius_m, layers)

        def local(polygon) -> list[np.ndarray]:
            parts = getattr(polygon, "geoms", [polygon])
            return [points_to_relative(origin, np.asarray(p.exterior.coords)[:-1, :2]) for p in parts]

        def local_baseline(edge) -> np.ndarray:
            poses = np.array([[s.x, s.y, s.heading] for s in edge.baseline_path.discrete_path])
            xy = points_to_relative(origin, poses[:, :2])
            return np.column_stack([xy, wrap_angle(poses[:, 2] - origin[2])])

        areas, lanes, nodes = [], [], {}
        route_ids = list(dict.fromkeys(route_roadblock_ids))
        blocks = {b.id: (b, "roadblock") for b in found[layer.ROADBLOCK]}
        blocks.update({b.id: (b, "roadblock_connector") for b in found[layer.ROADBLOCK_CONNECTOR]})
        for rb_id in route_ids:  # route roadblocks beyond the radius still carry the centre line
            if rb_id not in blocks:
                block = api.get_map_object(rb_id, layer.ROADBLOCK)
                kind = "roadblock"
                if block is None:
                    block, kind = api.get_map_object(rb_id, layer.ROADBLOCK_CONNECTOR), "roadblock_connector"
                if block is None:
                    continue
                blocks[rb_id] = (block, kind)
        for block_id, (block, kind) in blocks.items():
            for k, poly in enumerate(local(block.polygon)):
                areas.append(MapArea(block_id if k == 0 else f"{block_id}#{k}", kind, poly))
            for edge in block.interior_edges:
                baseline = local_baseline(edge)
                nodes[edge.id] = LaneNode(edge.id, block_id, baseline, [e.id for e in edge.outgoing_edges])
                lanes.append(Lane(
                    id=edge.id,
                    type="lane" if kind == "roadblock" else "lane_connector",
                    polygon=local(edge.polygon)[0],
                    baseline=baseline[:, :2],
                    on_route=block_id in route_ids,
                    speed_limit_mps=edge.speed_limit_mps,
                    roadblock_id=block_id,
                ))
        for obj in found[layer.INTERSECTION]:
            areas += [MapArea(obj.id, "intersection", p) for p in local(obj.polygon)]
        for obj in found[layer.CARPARK_AREA]:
            areas += [MapArea(obj.id, "carpark_area", p) for p in local(obj.polygon)]
        stop_lines = []
        for obj in found[layer.STOP_LINE]:
            kind = str(getattr(obj.stop_line_type, "name", obj.stop_line_type)).lower()
            if kind in ("stop_sign", "traffic_light"):
                stop_lines += [StopLine(obj.id, kind, p) for p in local(obj.polygon)]

        route_lanes = [lane.id for lane in lanes if lane.on_route]
        containing = [lane.id for lane in lanes if lane.on_route and _contains(lane.polygon, (0.0, 0.0))]
        centerline = np.zeros((0, 2))
        start = starting_lane(nodes, route_lanes, np.zeros(3), containing) if route_lanes else None
        if start is not None:
            centerline = route_centerline(nodes, route_ids, start)[:, :2]
        limits = [lane.speed_limit_mps for lane in lanes if lane.id == start and lane.speed_limit_mps]
        return MapData(areas=areas, lanes=lanes, centerline=centerline,
                       speed_limit_mps=limits[0] if limits else None, stop_lines=stop_lines)


def _contains(polygon: np.ndarray, point: tuple[float, float]) -> bool:
    return bool(shapely.contains_xy(shapely.Polygon(polygon), *point))
