"""What the cameras see: a scene turned into coloured 3D geometry on a flat ground (z = 0), scene frame.

Built once per scene (`build_world`) and shared by every camera and frame: ground polygons in paint order,
lane-marking segments, and the boxes of static objects and traffic lights; agent boxes and lamp colours
change with the frame (`World.boxes_at`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import shapely
from scipy.spatial import cKDTree

from sim import conventions as C
from sim.geometry import box_corners, polyline_headings
from sim.scene import Lane, MapData, Scene, TrafficLight

Colour = tuple[int, int, int]

GROUND: Colour = (104, 116, 84)
ASPHALT: Colour = (74, 74, 78)
CARPARK: Colour = (96, 96, 100)
MARKING_WHITE: Colour = (236, 236, 236)
MARKING_YELLOW: Colour = (226, 190, 40)
STOP_LINE: Colour = (245, 245, 245)
OBJECT_COLOURS: dict[str, Colour] = {
    "vehicle": (50, 95, 190),
    "pedestrian": (200, 70, 200),
    "bicycle": (40, 185, 185),
    "traffic_cone": (255, 140, 20),
    "barrier": (215, 215, 205),
    "czone_sign": (250, 190, 40),
    "generic_object": (140, 110, 80),
}
LIGHT_HOUSING: Colour = (28, 28, 30)
LIGHT_POLE: Colour = (95, 95, 100)
LAMP_COLOURS: dict[str, Colour] = {"red": (255, 25, 25), "yellow": (255, 200, 0), "green": (40, 230, 70)}
# Lamp height relative to the head: red on top, green at the bottom, as on a vertical signal.
LAMP_OFFSET_Z = {"red": 0.35, "yellow": 0.0, "green": -0.35}
LAMP_RADIUS_M = 0.18
HOUSING_SIZE = (0.4, 0.4, 1.2)  # length (along facing), width, height (m)
POLE_WIDTH_M = 0.15

# Brightness of the box faces (top, front, left, rear, right) so that neighbouring faces read apart.
FACE_SHADES = np.array([1.0, 0.82, 0.68, 0.76, 0.6])
GROUND_HALF_SIZE_M = 600.0
MARKING_Z_M = 0.02
DASH_M, DASH_PERIOD_M = 3.0, 12.0  # dashed lane lines: 3 m marks every 12 m
SIMPLIFY_TOLERANCE_M = 0.05


def box_vertices(centres: np.ndarray, length: np.ndarray, width: np.ndarray, z_low: np.ndarray, z_high: np.ndarray) -> np.ndarray:
    """Corners (B, 8, 3) of upright boxes with centre poses (B, 3): bottom 0-3 then top 4-7, each in
    `geometry.box_corners` order (front-left, rear-left, rear-right, front-right)."""
    corners = box_corners(centres, length, width)  # (B, 4, 2)
    z_low = np.broadcast_to(np.asarray(z_low, dtype=np.float64), (len(corners),))[:, None, None]
    z_high = np.broadcast_to(np.asarray(z_high, dtype=np.float64), (len(corners),))[:, None, None]
    bottom = np.concatenate([corners, np.broadcast_to(z_low, corners.shape[:2] + (1,))], axis=-1)
    top = np.concatenate([corners, np.broadcast_to(z_high, corners.shape[:2] + (1,))], axis=-1)
    return np.concatenate([bottom, top], axis=1)


def shaded_faces(colour: Colour) -> list[Colour]:
    """Colours of the five visible faces of a box of base `colour`."""
    return [tuple(int(round(c * s)) for c in colour) for s in FACE_SHADES]


_TYPE_FACES = {kind: shaded_faces(colour) for kind, colour in OBJECT_COLOURS.items()}


def object_boxes(objects: Sequence, centres: np.ndarray) -> tuple[np.ndarray, list[list[Colour]]]:
    """Boxes (B, 8, 3) standing on the ground for agents or static objects (they have type, length, width,
    height) at centre poses (B, 3), and their face colours by type."""
    vertices = box_vertices(centres, np.array([o.length for o in objects]), np.array([o.width for o in objects]),
                            0.0, np.array([o.height for o in objects]))
    return vertices, [_TYPE_FACES.get(o.type, _TYPE_FACES["generic_object"]) for o in objects]


@dataclass
class Boxes:
    """The boxes of one frame: vertices (B, 8, 3), face colours per box, and lit lamps keyed by box index:
    (centre (3,), facing unit vector (2,) or None, radius (m), colour)."""

    vertices: np.ndarray
    colours: list[list[Colour]]
    lamps: dict[int, tuple] = field(default_factory=dict)


@dataclass
class _Light:
    head: np.ndarray  # (3,)
    facing: Optional[np.ndarray]  # (2,) unit vector towards the traffic it controls, None when unknown
    signal: TrafficLight  # asked for its state at each frame


@dataclass
class World:
    """Scene geometry for the renderer; see the module docstring."""

    ground_vertices: np.ndarray  # (N, 3), all ground polygons concatenated
    ground_ranges: list[tuple[int, int]]  # slice of `ground_vertices` per polygon, in paint order
    ground_colours: list[Colour]
    segments: np.ndarray  # (S, 2, 3) lane-marking segments
    segment_colours: list[Colour]
    static_boxes: np.ndarray  # (B, 8, 3): static objects, then light poles and housings
    static_colours: list[list[Colour]]
    lights: list[_Light]
    first_housing: int  # index in `static_boxes` of the first light housing
    agents: list

    def boxes_at(self, t: float) -> Boxes:
        """All boxes at time `t` (s, on the 2 Hz agent grid): static ones, then the agents present then."""
        vertices = [self.static_boxes]
        colours = list(self.static_colours)
        row = int(round((t - C.AGENT_TIMES_S[0]) / C.LOG_INTERVAL_S))
        present = [a for a in self.agents if not np.isnan(a.poses[row, 0])]
        if present:
            agent_vertices, agent_colours = object_boxes(present, np.stack([a.poses[row] for a in present]))
            vertices.append(agent_vertices)
            colours += agent_colours
        lamps = {}
        for i, light in enumerate(self.lights):
            state = light.signal.state_at(t)
            if state not in LAMP_COLOURS:
                continue  # "unknown": the signal stays dark
            centre = light.head + np.array([0.0, 0.0, LAMP_OFFSET_Z[state]])
            if light.facing is not None:
                centre[:2] += light.facing * (HOUSING_SIZE[0] / 2.0 + 0.02)
            lamps[self.first_housing + i] = (centre, light.facing, LAMP_RADIUS_M, LAMP_COLOURS[state])
        return Boxes(np.concatenate(vertices, axis=0), colours, lamps)


def build_world(scene: Scene) -> World:
    """Turn `scene` into the renderer's geometry (scene frame)."""
    ground, colours = _ground_polygons(scene)
    ranges, start = [], 0
    for poly in ground:
        ranges.append((start, start + len(poly)))
        start += len(poly)
    segments, segment_colours = lane_markings(scene.map)

    statics = scene.static_objects
    box_list, box_colours = [], []
    if statics:
        static_vertices, box_colours = object_boxes(statics, np.array([[o.x, o.y, o.heading] for o in statics]))
        box_list.append(static_vertices)
    lights = [_Light(np.asarray(tl.head, dtype=np.float64), _light_facing(scene.map, tl.lane_connector_id), tl)
              for tl in scene.traffic_lights if tl.head is not None]
    if lights:
        heads = np.stack([lt.head for lt in lights])
        headings = np.array([math.atan2(lt.facing[1], lt.facing[0]) if lt.facing is not None else 0.0 for lt in lights])
        centres = np.column_stack([heads[:, :2], headings])
        housing_low = heads[:, 2] - HOUSING_SIZE[2] / 2.0
        box_list.append(box_vertices(centres, POLE_WIDTH_M, POLE_WIDTH_M, 0.0, housing_low))
        box_colours += [shaded_faces(LIGHT_POLE)] * len(lights)
        box_list.append(box_vertices(centres, HOUSING_SIZE[0], HOUSING_SIZE[1], housing_low, housing_low + HOUSING_SIZE[2]))
        box_colours += [shaded_faces(LIGHT_HOUSING)] * len(lights)
    static_boxes = np.concatenate(box_list, axis=0) if box_list else np.zeros((0, 8, 3))
    return World(
        ground_vertices=np.concatenate(ground, axis=0),
        ground_ranges=ranges,
        ground_colours=colours,
        segments=segments,
        segment_colours=segment_colours,
        static_boxes=static_boxes,
        static_colours=box_colours,
        lights=lights,
        first_housing=len(static_boxes) - len(lights),
        agents=list(scene.agents),
    )


def simplify_polygon(points: np.ndarray, tolerance: float = SIMPLIFY_TOLERANCE_M) -> np.ndarray:
    """A polygon (N, 2) with vertices that deviate less than `tolerance` from its outline dropped (maps are
    sampled every metre even where they are straight; the renderer's cost grows with vertices)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    if len(points) <= 4:
        return points
    simplified = shapely.Polygon(points).simplify(tolerance, preserve_topology=False)
    if simplified.is_empty or simplified.geom_type != "Polygon":
        return points
    return np.asarray(simplified.exterior.coords)[:-1]


def _ground_polygons(scene: Scene) -> tuple[list[np.ndarray], list[Colour]]:
    """Ground polygons (n, 3) at z = 0 in paint order: the ground plane, road surface, stop lines."""
    x, y = scene.ego.x, scene.ego.y
    h = GROUND_HALF_SIZE_M
    polys = [np.array([[x - h, y - h], [x + h, y - h], [x + h, y + h], [x - h, y + h]])]
    colours = [GROUND]
    areas = scene.map.areas
    if areas:
        for area in sorted(areas, key=lambda a: a.type != "carpark_area"):
            polys.append(simplify_polygon(area.polygon))
            colours.append(CARPARK if area.type == "carpark_area" else ASPHALT)
    else:  # a map of lanes alone (e.g. a small JSON scene): their polygons are the road surface
        for lane in scene.map.lanes:
            polys.append(simplify_polygon(lane.polygon))
            colours.append(ASPHALT)
    for stop in scene.map.stop_lines:
        polys.append(np.asarray(stop.polygon, dtype=np.float64)[:, :2])
        colours.append(STOP_LINE)
    keep = [i for i, p in enumerate(polys) if len(p) >= 3]
    return [np.column_stack([polys[i], np.zeros(len(polys[i]))]) for i in keep], [colours[i] for i in keep]


def _light_facing(map_data: MapData, lane_connector_id: str) -> Optional[np.ndarray]:
    """Unit vector from a signal towards the traffic it controls: against the lane connector's direction."""
    try:
        lane = map_data.lane(lane_connector_id)
    except KeyError:
        return None
    if lane.baseline is None or len(lane.baseline) < 2:
        return None
    heading = polyline_headings(np.asarray(lane.baseline))[0]
    return -np.array([math.cos(heading), math.sin(heading)])


# --- lane markings -----------------------------------------------------------------------------------------


def lane_markings(map_data: MapData) -> tuple[np.ndarray, list[Colour]]:
    """Painted lines of the map's lanes as segments (S, 2, 3) at marking height, and their colours.

    The sides of each lane polygon (edges running along the lane, not its ends) are classified by what lies
    just outside them: nothing (road edge: solid white), a lane in the same direction (dashed white) or a
    lane in the opposite direction (solid yellow). A side shared by two lanes is painted once. Lane
    connectors (inside intersections) are not painted.
    """
    lanes = [lane for lane in map_data.lanes if lane.type == "lane" and len(lane.polygon) >= 3]
    if not lanes:
        return np.zeros((0, 2, 3)), []
    polygons = [simplify_polygon(lane.polygon) for lane in lanes]
    polygons = [p if _signed_area(p) > 0 else p[::-1] for p in polygons]  # counter-clockwise
    tree = shapely.STRtree([shapely.Polygon(p) for p in polygons])

    starts = np.concatenate(polygons)
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(polygons)])
    edge = ends - starts
    length = np.linalg.norm(edge, axis=1)
    mid = (starts + ends) / 2.0
    unit = edge / np.maximum(length, 1e-9)[:, None]
    lane_dir = np.zeros_like(unit)
    for i, lane in enumerate(lanes):
        mask = owner == i
        lane_dir[mask] = _lane_direction(lane, polygons[i], mid[mask])
    is_side = (np.abs(np.sum(unit * lane_dir, axis=1)) > math.cos(math.radians(45.0))) & (length > 1e-6)

    # What lies 0.5 m outside each edge (outward normal of a counter-clockwise polygon: (dy, -dx)).
    probes = mid + 0.5 * np.column_stack([unit[:, 1], -unit[:, 0]])
    point_idx, lane_idx = tree.query(shapely.points(probes), predicate="within")
    neighbour = np.full(len(mid), -1)
    other = lane_idx != owner[point_idx]
    neighbour[point_idx[other]] = lane_idx[other]

    kind = np.full(len(mid), "", dtype=object)
    kind[is_side & (neighbour < 0)] = "solid"
    for j in np.unique(neighbour[is_side & (neighbour >= 0)]):
        mask = is_side & (neighbour == j) & (owner < j)  # the lower-numbered lane paints a shared side
        if mask.any():
            same = np.sum(lane_dir[mask] * _lane_direction(lanes[j], polygons[j], probes[mask]), axis=1) > 0.0
            kind[np.flatnonzero(mask)] = np.where(same, "dashed", "yellow")

    segments, colours = [], []
    for i in range(len(lanes)):
        idx = np.flatnonzero(owner == i)
        for chain_kind, chain in _chains(kind[idx], starts[idx], ends[idx]):
            if chain_kind == "dashed":
                pieces = _dashes(chain)
                colour = MARKING_WHITE
            else:
                simplified = np.asarray(shapely.LineString(chain).simplify(0.05).coords)
                pieces = np.stack([simplified[:-1], simplified[1:]], axis=1)
                colour = MARKING_YELLOW if chain_kind == "yellow" else MARKING_WHITE
            segments.append(pieces)
            colours += [colour] * len(pieces)
    if not segments:
        return np.zeros((0, 2, 3)), []
    flat = np.concatenate(segments)
    return np.concatenate([flat, np.full(flat.shape[:2] + (1,), MARKING_Z_M)], axis=-1), colours


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _lane_direction(lane: Lane, polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unit driving direction (N, 2) of `lane` near `points` (N, 2): the heading of the closest baseline
    vertex, or the polygon's main axis when the lane has no baseline."""
    if lane.baseline is not None and len(lane.baseline) >= 2:
        baseline = np.asarray(lane.baseline, dtype=np.float64)[:, :2]
        headings = polyline_headings(baseline)
        _, nearest = cKDTree(baseline).query(points)
        return np.column_stack([np.cos(headings[nearest]), np.sin(headings[nearest])])
    centred = polygon - polygon.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    return np.broadcast_to(axis, points.shape).copy()


def _chains(kinds: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Runs of consecutive polygon edges with the same painted kind, as polylines (n, 2)."""
    chains = []
    run_start = None
    for e in range(len(kinds) + 1):
        if run_start is not None and (e == len(kinds) or kinds[e] != kinds[run_start]):
            chains.append((kinds[run_start], np.vstack([starts[run_start:e], ends[e - 1:e]])))
            run_start = None
        if e < len(kinds) and kinds[e] and run_start is None:
            run_start = e
    return chains


def _dashes(chain: np.ndarray) -> np.ndarray:
    """Dashes (D, 2, 2) along a polyline, each from the point at arc length k * period to k * period + dash."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(chain, axis=0), axis=1))])
    begin = np.arange(0.0, s[-1], DASH_PERIOD_M)
    end = np.minimum(begin + DASH_M, s[-1])
    a = np.column_stack([np.interp(begin, s, chain[:, 0]), np.interp(begin, s, chain[:, 1])])
    b = np.column_stack([np.interp(end, s, chain[:, 0]), np.interp(end, s, chain[:, 1])])
    return np.stack([a, b], axis=1)
