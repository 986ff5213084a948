"""Intersections: up to four orthogonal arms around a junction square with rounded kerbs, lane connectors
(left / straight / right) grouped in roadblock connectors, the intersection polygon, stop lines and lights.

Arms are named by the direction they leave the centre: "E" (0 rad), "N", "W", "S". Each arm is a `Road`
whose reference runs outward from the junction boundary, so its forward lanes (`<arm>:f<i>`) leave the
junction and its backward lanes (`<arm>:b<j>`) approach it; approaching lane j = 0 is next to the divider
(the left-turn lane). Lane connectors are `<A><j>-<B><i>`, roadblock connectors `<A>-<B>`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.geometry import wrap_angle
from sim.scene import TrafficLight
from sim.paths import Path, concatenate, straight
from sim.scenarios.road import MapBuilder, Road, add_road, stop_line_polygon, strip_polygon

ARM_ANGLES = {"E": 0.0, "N": np.pi / 2.0, "W": np.pi, "S": -np.pi / 2.0}
# Bezier handles of a turn as fractions of the distance to the corner where the tangents meet: 0.5523 for
# both gives (nearly) a quarter circle.
TURN_HANDLES = (0.5523, 0.5523)
STOP_LINE_SETBACK_M = 1.0
CONNECTOR_STEP_M = 1.0  # boundary stations of the tight lane connectors  # the stop line's far edge lies this far before the junction boundary
LIGHT_HEAD_HEIGHT_M = 5.2


@dataclass
class Connector:
    lane_id: str
    from_arm: str
    to_arm: str
    turn: str  # "left" | "straight" | "right"
    path: Path
    roadblock_id: str
    from_lane: int  # approaching lane index j of `from_arm`
    to_lane: int  # leaving lane index i of `to_arm`


@dataclass
class Junction:
    centre: np.ndarray
    arms: dict[str, Road]
    connectors: list[Connector]
    half_x: float  # boundary distance of the E/W arms from the centre
    half_y: float  # boundary distance of the N/S arms
    lane_width: float
    polygon_id: str = "junction"
    stop_line_ids: dict[str, str] = field(default_factory=dict)

    def incoming_path(self, arm: str, j: int) -> Path:
        return self.arms[arm].backward_path(j)

    def outgoing_path(self, arm: str, i: int) -> Path:
        return self.arms[arm].forward_path(i)

    def connector(self, from_arm: str, to_arm: str, from_lane: int | None = None) -> Connector:
        for c in self.connectors:
            if c.from_arm == from_arm and c.to_arm == to_arm and (from_lane is None or c.from_lane == from_lane):
                return c
        raise KeyError(f"junction has no connector {from_arm}->{to_arm} from lane {from_lane}")

    def movement_path(self, connector: Connector) -> Path:
        """Approaching lane + connector + leaving lane, as one path."""
        return concatenate([self.incoming_path(connector.from_arm, connector.from_lane), connector.path, self.outgoing_path(connector.to_arm, connector.to_lane)])

    def connectors_from(self, arm: str) -> list[Connector]:
        return [c for c in self.connectors if c.from_arm == arm]

    def stop_s(self, arm: str, j: int) -> float:
        """Arc length, along approaching lane j of `arm`, of the stop line's near edge."""
        return self.incoming_path(arm, j).length - STOP_LINE_SETBACK_M - 0.4

    def boundary(self, arm: str) -> float:
        return self.half_x if arm in ("E", "W") else self.half_y


def turn_of(from_arm: str, to_arm: str) -> str:
    delta = wrap_angle(ARM_ANGLES[to_arm] - (ARM_ANGLES[from_arm] + np.pi))
    if abs(delta) < 0.1:
        return "straight"
    if abs(delta - np.pi / 2.0) < 0.1:
        return "left"
    if abs(delta + np.pi / 2.0) < 0.1:
        return "right"
    return "uturn"


def turn_curve(start_pose: np.ndarray, end_pose: np.ndarray, handles: tuple[float, float] = TURN_HANDLES) -> Path:
    """A Bezier between two poses whose handles reach towards the corner where their tangents meet
    (a near-circular turn); parallel tangents give a straight or S-shaped connection."""
    p0, p3 = np.asarray(start_pose[:2], float), np.asarray(end_pose[:2], float)
    u0 = np.array([np.cos(start_pose[2]), np.sin(start_pose[2])])
    u3 = np.array([np.cos(end_pose[2]), np.sin(end_pose[2])])
    matrix = np.stack([u0, u3], axis=1)
    if abs(np.linalg.det(matrix)) > 1e-6:
        t0, t3 = np.linalg.solve(matrix, p3 - p0)
        h0, h3 = handles[0] * t0, handles[1] * t3
    else:
        h0 = h3 = np.linalg.norm(p3 - p0) / 3.0
    p1, p2 = p0 + h0 * u0, p3 - h3 * u3
    length = np.linalg.norm(p3 - p0) * 1.6
    t = np.linspace(0.0, 1.0, max(16, int(np.ceil(length / 1.0))))[:, None]
    points = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return Path(points)


def build_junction(
    builder: MapBuilder,
    centre: np.ndarray,
    lanes_per_arm: dict[str, int],
    lane_width: float,
    corner_radius: float,
    arm_lengths: dict[str, float],
    speed_limit: float,
) -> Junction:
    """Add the arms, the junction polygon and all lane connectors to `builder`."""
    centre = np.asarray(centre, dtype=np.float64)
    width_ew = max(lanes_per_arm.get(a, 0) for a in ("E", "W")) * lane_width
    width_ns = max(lanes_per_arm.get(a, 0) for a in ("N", "S")) * lane_width
    half_x = width_ns + corner_radius
    half_y = width_ew + corner_radius
    arms: dict[str, Road] = {}
    for name in ("E", "N", "W", "S"):
        if name not in lanes_per_arm:
            continue
        phi = ARM_ANGLES[name]
        a = half_x if name in ("E", "W") else half_y
        start = centre + a * np.array([np.cos(phi), np.sin(phi)])
        n = lanes_per_arm[name]
        road = Road(name, straight(start, phi, arm_lengths[name]), 0.0, arm_lengths[name], lane_width, n, n, speed_limit)
        add_road(builder, road)
        arms[name] = road
    builder.add_area("junction", "intersection", _junction_polygon(centre, half_x, half_y, width_ew, width_ns, corner_radius, arms))
    junction = Junction(centre, arms, [], half_x, half_y, lane_width)
    groups: dict[str, list[np.ndarray]] = {}
    for a_name, a_road in arms.items():
        for b_name, b_road in arms.items():
            turn = turn_of(a_name, b_name) if a_name != b_name else "uturn"
            if turn == "uturn":
                continue
            if turn == "straight":
                pairs = [(j, j) for j in range(min(a_road.n_backward, b_road.n_forward))]
            elif turn == "left":
                pairs = [(0, 0)]
            else:
                pairs = [(a_road.n_backward - 1, b_road.n_forward - 1)]
            for j, i in pairs:
                start = a_road.backward_path(j).pose_at(a_road.backward_path(j).length)
                end = b_road.forward_path(i).pose_at(0.0)
                path = turn_curve(start, end)
                lane_id = f"{a_name}{j}-{b_name}{i}"
                roadblock_id = f"{a_name}-{b_name}"
                polygon = strip_polygon(path, 0.0, path.length, lane_width / 2.0, -lane_width / 2.0, step=CONNECTOR_STEP_M)
                builder.add_lane(lane_id, "lane_connector", polygon, path, roadblock_id, speed_limit)
                junction.connectors.append(Connector(lane_id, a_name, b_name, turn, path, roadblock_id, j, i))
                groups.setdefault(roadblock_id, []).append(polygon)
    for roadblock_id, polygons in groups.items():
        union = shapely.union_all([shapely.Polygon(p) for p in polygons])
        if isinstance(union, shapely.MultiPolygon):
            union = max(union.geoms, key=lambda g: g.area)
        builder.add_area(roadblock_id, "roadblock_connector", np.asarray(union.exterior.coords)[:-1])
    return junction


def _junction_polygon(centre, half_x, half_y, width_ew, width_ns, radius, arms) -> np.ndarray:
    """The junction square (kerb-to-kerb where an arm is missing) with rounded kerb corners."""
    x_hi = half_x if "E" in arms else width_ns
    x_lo = -half_x if "W" in arms else -width_ns
    y_hi = half_y if "N" in arms else width_ew
    y_lo = -half_y if "S" in arms else -width_ew
    square = shapely.box(x_lo, y_lo, x_hi, y_hi)
    cut = []
    for ew, ns, cx, cy in (("E", "N", half_x, half_y), ("W", "N", -half_x, half_y), ("W", "S", -half_x, -half_y), ("E", "S", half_x, -half_y)):
        if ew in arms and ns in arms:
            cut.append(shapely.Point(cx, cy).buffer(radius, quad_segs=8))
    polygon = square.difference(shapely.union_all(cut)) if cut else square
    return np.asarray(polygon.exterior.coords)[:-1] + centre


def add_stop_lines(builder: MapBuilder, junction: Junction, arm: str, line_type: str) -> list[str]:
    """Stop lines across every approaching lane of `arm`; returns their ids."""
    ids = []
    road = junction.arms[arm]
    for j in range(road.n_backward):
        path = road.backward_path(j)
        line_id = f"stop:{arm}{j}"
        builder.add_stop_line(line_id, line_type, stop_line_polygon(path, path.length - STOP_LINE_SETBACK_M, junction.lane_width))
        ids.append(line_id)
    return ids


def lights_for_arm(junction: Junction, arm: str, states: list[str], left_states: list[str] | None = None) -> list[TrafficLight]:
    """One light per lane connector leaving `arm`, its head above the approach lane on the far side of the
    junction (left-turn connectors may show their own arrow states)."""
    lights = []
    h_in = ARM_ANGLES[arm] + np.pi
    forward = np.array([np.cos(h_in), np.sin(h_in)])
    right = np.array([np.sin(h_in), -np.cos(h_in)])
    far = (junction.half_x if arm in ("E", "W") else junction.half_y) + 2.0
    for c in junction.connectors_from(arm):
        lateral = (c.from_lane + 0.5) * junction.lane_width - (0.7 if c.turn == "left" else 0.0)
        head = junction.centre + far * forward + lateral * right
        lane_states = left_states if (c.turn == "left" and left_states is not None) else states
        lights.append(TrafficLight(c.lane_id, list(lane_states), (float(head[0]), float(head[1]), LIGHT_HEAD_HEIGHT_M)))
    return lights
