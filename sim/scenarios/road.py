"""Road network builder: roads with 1-3 lanes per direction, lane tapers, and the typed polygons of `MapData`.

Everything here is in the *world frame* of a scenario (the frame it is laid out in); `sim.scenarios.assemble`
moves it into the ego frame at t = 0 at the end. Ids are stable strings built from the road id:
`<road>:F` / `<road>:B` forward / backward roadblocks, `<road>:f<i>` / `<road>:b<j>` lanes (i = 0 is the
lane next to the road's centre divider).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from sim.scene import Lane, MapArea, MapData, StopLine
from sim.paths import Path

BOUNDARY_STEP_M = 2.0  # station spacing of polygon boundaries along curved references


@dataclass
class MapBuilder:
    """Collects polygons, lanes (with their centre-line `Path`s) and stop lines of one scenario."""

    areas: list[MapArea] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    lane_paths: dict[str, Path] = field(default_factory=dict)
    stop_lines: list[StopLine] = field(default_factory=list)

    def add_area(self, area_id: str, area_type: str, polygon: np.ndarray) -> None:
        self.areas.append(MapArea(area_id, area_type, np.asarray(polygon, dtype=np.float64)))

    def add_lane(
        self,
        lane_id: str,
        lane_type: str,
        polygon: np.ndarray,
        path: Path,
        roadblock_id: str,
        speed_limit: float,
    ) -> None:
        self.lanes.append(
            Lane(
                id=lane_id,
                type=lane_type,
                polygon=np.asarray(polygon, dtype=np.float64),
                baseline=path.xy.copy(),
                on_route=False,
                speed_limit_mps=float(speed_limit),
                roadblock_id=roadblock_id,
            )
        )
        self.lane_paths[lane_id] = path

    def add_stop_line(self, line_id: str, line_type: str, polygon: np.ndarray) -> None:
        self.stop_lines.append(StopLine(line_id, line_type, np.asarray(polygon, dtype=np.float64)))

    def build(self, route_roadblock_ids: set[str], centerline: np.ndarray, speed_limit: float) -> MapData:
        """The map with lanes of the route's roadblocks marked on route (NAVSIM's `route_lane_ids`)."""
        for lane in self.lanes:
            lane.on_route = lane.roadblock_id in route_roadblock_ids
        return MapData(
            areas=list(self.areas),
            lanes=list(self.lanes),
            centerline=np.asarray(centerline, dtype=np.float64),
            speed_limit_mps=float(speed_limit),
            stop_lines=list(self.stop_lines),
        )


def strip_polygon(reference: Path, s0: float, s1: float, d_left, d_right, step: float = BOUNDARY_STEP_M) -> np.ndarray:
    """Polygon (N, 2) of the strip between lateral offsets d_left(s) > d_right(s) along `reference`,
    stations `step` m apart where it bends (two where it is straight).

    d_left / d_right: floats or callables of s (arrays)."""
    s = stations(reference, s0, s1, variable=callable(d_left) or callable(d_right), step=step)
    n = len(s)
    left = d_left(s) if callable(d_left) else np.full(n, float(d_left))
    right = d_right(s) if callable(d_right) else np.full(n, float(d_right))
    left_pts = reference.frenet_to_pose(s, left)[:, :2]
    right_pts = reference.frenet_to_pose(s, right)[:, :2]
    return np.concatenate([left_pts, right_pts[::-1]], axis=0)


@dataclass(frozen=True)
class Taper:
    """The outermost forward lane ends: its outer edge moves in between s_start and s_end."""

    s_start: float
    s_end: float


@dataclass
class Road:
    """A road along `reference` (its centre divider, forward direction = increasing s) between s0 and s1.

    Forward lanes lie right of the divider (d < 0), backward lanes left of it (d > 0)."""

    road_id: str
    reference: Path
    s0: float
    s1: float
    lane_width: float
    n_forward: int
    n_backward: int
    speed_limit: float
    taper: Optional[Taper] = None
    _paths: dict = field(default_factory=dict, repr=False, compare=False)

    def forward_offset(self, i: int) -> float:
        return -(i + 0.5) * self.lane_width

    def backward_offset(self, j: int) -> float:
        return (j + 0.5) * self.lane_width

    @property
    def forward_roadblock(self) -> str:
        return f"{self.road_id}:F"

    @property
    def backward_roadblock(self) -> str:
        return f"{self.road_id}:B"

    def forward_lane(self, i: int) -> str:
        return f"{self.road_id}:f{i}"

    def backward_lane(self, j: int) -> str:
        return f"{self.road_id}:b{j}"

    def forward_path(self, i: int) -> Path:
        """Centre line of forward lane i (driving direction = increasing s); built once."""
        if ("f", i) not in self._paths:
            self._paths[("f", i)] = _offset_path(self.reference, self.s0, self.s1, self.forward_offset(i))
        return self._paths[("f", i)]

    def backward_path(self, j: int) -> Path:
        """Centre line of backward lane j (driving against s); built once."""
        if ("b", j) not in self._paths:
            self._paths[("b", j)] = _offset_path(self.reference, self.s0, self.s1, self.backward_offset(j)).reversed()
        return self._paths[("b", j)]

    def outer_forward_edge(self, s: np.ndarray) -> np.ndarray:
        """Lateral offset of the right edge of the forward carriageway (narrowed by a taper)."""
        s = np.asarray(s, dtype=np.float64)
        full = -self.n_forward * self.lane_width
        if self.taper is None:
            return np.full_like(s, full)
        u = np.clip((s - self.taper.s_start) / (self.taper.s_end - self.taper.s_start), 0.0, 1.0)
        return full + u * self.lane_width


def stations(reference: Path, s0: float, s1: float, variable: bool = False, step: float = BOUNDARY_STEP_M) -> np.ndarray:
    """Arc lengths that describe a strip along `reference` between s0 and s1: both ends and the
    reference's own vertices (kept at least `step` apart), so straight stretches need no stations in
    between; `variable` offsets (a taper) add one every `step` m."""
    inner = reference.s[(reference.s > s0 + 1e-6) & (reference.s < s1 - 1e-6)]
    if variable:
        inner = np.union1d(inner, np.arange(s0 + step, s1 - 1e-6, step))
    kept, last = [s0], s0
    for value in inner:
        if value - last >= step and s1 - value >= 0.5 * step:
            kept.append(float(value))
            last = value
    kept.append(s1)
    return np.array(kept)


def _offset_path(reference: Path, s0: float, s1: float, d: float) -> Path:
    s = stations(reference, s0, s1)
    return Path(reference.frenet_to_pose(s, np.full_like(s, d))[:, :2])


def add_road(builder: MapBuilder, road: Road) -> None:
    """Add the road's two roadblocks and its lanes. A tapered outer lane ends at `taper.s_end`; the forward
    roadblock follows the taper, and beyond it the lane no longer exists."""
    W = road.lane_width
    ref = road.reference
    if road.n_forward > 0:
        builder.add_area(road.forward_roadblock, "roadblock", strip_polygon(ref, road.s0, road.s1, 0.0, road.outer_forward_edge))
        for i in range(road.n_forward):
            is_tapered = road.taper is not None and i == road.n_forward - 1
            s_end = road.taper.s_end if is_tapered else road.s1
            right = road.outer_forward_edge if is_tapered else -(i + 1) * W
            polygon = strip_polygon(ref, road.s0, s_end, -i * W, right)
            path = _offset_path(ref, road.s0, s_end, road.forward_offset(i)) if is_tapered else road.forward_path(i)
            builder.add_lane(road.forward_lane(i), "lane", polygon, path, road.forward_roadblock, road.speed_limit)
    if road.n_backward > 0:
        builder.add_area(road.backward_roadblock, "roadblock", strip_polygon(ref, road.s0, road.s1, road.n_backward * W, 0.0))
        for j in range(road.n_backward):
            polygon = strip_polygon(ref, road.s0, road.s1, (j + 1) * W, j * W)
            builder.add_lane(road.backward_lane(j), "lane", polygon, road.backward_path(j), road.backward_roadblock, road.speed_limit)


def stop_line_polygon(path: Path, s: float, width: float, depth: float = 0.4) -> np.ndarray:
    """A thin rectangle across a lane whose centre line is `path`, its far edge at arc length s."""
    return strip_polygon(path, s - depth, s, width / 2.0, -width / 2.0)
