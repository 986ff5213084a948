"""PDM-Closed, the rule-based planner whose rollout normalises ego progress (NAVSIM's metric cache).

Configuration as NAVSIM caches it: 3 paths (the route centre line and its +-1 m offsets) x 5 IDM target
speeds ({0.2 ... 1.0} x the starting lane's speed limit, 15 m/s without one; min gap 1 m, headway 1.5 s,
a_max 1.5, b_max 3.0 m/s^2) = 15 proposals unrolled for 4 s at 10 Hz. The IDM leader is the nearest
object ahead in the path's corridor in a constant-velocity forecast of the t = 0 objects (red on-route
lane connectors count as stopped objects), or the end of the path. The proposals are simulated with the
LQR/bicycle model and scored with the version's scorer against the forecast; the best one is extended
to 5 s. Reproduced quirks: the leader is re-searched every 2nd step only, and one leader record is
reused across the 5 proposals of a path, so fields a proposal does not set keep the previous one's values.

The nuPlan map is not available here: the scene's route centre line replaces the lane-graph search and
the scene's polygons the map queries (as in the scene JSON format).
"""
from __future__ import annotations

import numpy as np
import shapely

from sim import conventions as C
from sim.kinematics import initial_state, track
from sim.scene import Scene

from rewards.pdm.boxes import box_coords, ego_box_polygon, ego_coords, polygons
from rewards.pdm.drivable import DrivableMap
from rewards.pdm.observation import RED_LIGHT, Occupancy, make_step
from rewards.pdm.path import Path

SPEED_FRACTIONS = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
LATERAL_OFFSETS = (-1.0, 1.0)
MIN_GAP, HEADWAY, ACCEL_MAX, DECEL_MAX = 1.0, 1.5, 1.5, 3.0
PROPOSAL_STEPS, TRAJECTORY_STEPS = 40, 50
MAP_RADIUS = 100.0
MAX_DYNAMIC = (("vehicle", 50), ("pedestrian", 25), ("bicycle", 10))
MAX_STATIC = 50
DT = C.SIM_INTERVAL_S


def _normalize_angle(angle):
    return np.arctan2(np.sin(angle), np.cos(angle))


def forecast_occupancy(scene: Scene, route_lane_ids: set) -> Occupancy:
    """PDM-Closed's own observation: t = 0 objects within 100 m moved at constant velocity along their
    heading, one stored step every 0.2 s up to 5 s, plus red on-route lane connectors (held)."""
    ego = scene.ego
    ego_center = ego_coords(ego.pose)[4]
    objects = []  # (token, type, is_agent, x, y, heading, vx, vy, length, width)
    for agent in scene.agents:
        pose = agent.poses[C.AGENT_CURRENT_INDEX]
        if np.isfinite(pose[0]):
            v = np.nan_to_num(agent.velocities[C.AGENT_CURRENT_INDEX])
            objects.append((agent.token, agent.type, True, *pose, *v, agent.length, agent.width))
    for obj in scene.static_objects:
        is_agent = obj.type in C.AGENT_TYPES
        objects.append((obj.token, obj.type, is_agent, obj.x, obj.y, obj.heading, 0.0, 0.0, obj.length, obj.width))
    type_rank = {t: i for i, t in enumerate(C.AGENT_TYPES + C.STATIC_OBJECT_TYPES)}
    objects.sort(key=lambda o: type_rank[o[1]])  # nuPlan's TrackedObjects order (stable)
    objects = [o for o in objects if float(np.hypot(ego_center[0] - o[3], ego_center[1] - o[4])) <= MAP_RADIUS]

    def coords_of(o):
        return box_coords(np.array([o[3], o[4]]), np.float64(o[5]), o[8], o[9])

    def nearest(group, limit):
        if not group:
            return []
        centers = np.array([[o[3], o[4]] for o in group])
        dist = ((centers - ego_center[None]) ** 2.0).sum(axis=-1) ** 0.5
        return [group[i] for i in np.argsort(dist)][:limit]

    static = nearest([o for o in objects if not o[2]], MAX_STATIC)
    dynamic = []
    for kind, limit in MAX_DYNAMIC:
        dynamic += nearest([o for o in objects if o[2] and o[1] == kind], limit)
    dxy = []
    for o in dynamic:
        speed = float(np.hypot(o[6], o[7]))
        forward = np.abs(_normalize_angle(o[5] - np.arctan2(o[7], o[6]))) < np.pi / 2
        heading = o[5] if forward else _normalize_angle(o[5] + np.pi)
        dxy.append([np.cos(heading) * speed, np.sin(heading) * speed])
    dxy = np.array(dxy, dtype=np.float64).reshape(-1, 2)

    lanes = {lane.id: lane for lane in scene.map.lanes}
    light_tokens, light_polys = [], []
    for light in scene.traffic_lights:
        lane_id = light.lane_connector_id
        if light.state_at(0.0) == "red" and lane_id in route_lane_ids and lane_id in lanes:
            light_tokens.append(f"{RED_LIGHT}_{lane_id}")
            light_polys.append(shapely.Polygon(lanes[lane_id].polygon))

    tokens = [o[0] for o in static] + [o[0] for o in dynamic] + light_tokens
    static_polys = polygons(np.array([coords_of(o) for o in static]).reshape(-1, 5, 2))
    dynamic_coords = np.array([coords_of(o) for o in dynamic]).reshape(-1, 5, 2)
    steps = []
    for sample in range(0, TRAJECTORY_STEPS + 2, 2):
        moved = dynamic_coords + (float(sample) * DT) * dxy[:, None]
        polys = np.concatenate([static_polys, polygons(moved), np.array(light_polys, dtype=object)])
        steps.append(make_step(np.arange(len(tokens)), polys))
        steps[-1]["tree"] = shapely.STRtree(polys, node_capacity=10)

    # objects touching the ego at t = 0 are ignored by the scorer (red lights only if the ego is inside)
    ego_poly = ego_box_polygon(ego.pose)
    ignored = set()
    for i in steps[0]["tree"].query(ego_poly, predicate="intersects"):
        if RED_LIGHT in tokens[i] and not shapely.within(ego_poly, steps[0]["poly"][i]):
            continue
        ignored.add(int(i))
    kept = static + dynamic
    return Occupancy(
        tokens=tokens,
        is_agent=np.array([o[2] for o in kept] + [False] * len(light_tokens), dtype=bool),
        speed=np.array([float(np.hypot(o[6], o[7])) if o[2] else 0.0 for o in kept] + [0.0] * len(light_tokens)),
        heading=np.array([o[5] for o in kept] + [0.0] * len(light_tokens), dtype=np.float64),
        red_light=np.array([RED_LIGHT in t for t in tokens], dtype=bool),
        light=np.array([t.startswith(RED_LIGHT) for t in tokens], dtype=bool),
        steps=steps,
        step_of=np.arange(TRAJECTORY_STEPS + 2) // 2,
        ignored=frozenset(ignored),
    )


def starting_speed_limit(scene: Scene, drivable: DrivableMap, centerline: np.ndarray):
    """Speed limit of PDM-Closed's starting lane: the on-route lane under the rear axle with the smallest
    heading error to its baseline (the scene centre line stands in for a missing baseline), else the
    on-route lane containing the box centre, else the closest one."""
    ego = scene.ego
    point = shapely.Point(ego.x, ego.y)
    route = [int(i) for i in drivable.route_lane_idx]
    candidates, errors = [], []
    # NAVSIM visits the lanes in the order its STR-tree returns them: ties go to the first one
    tree = shapely.STRtree(drivable.polygons, node_capacity=10)
    for i in tree.query(point, predicate="intersects"):
        if int(i) in route:
            baseline = drivable.baselines[i]
            poses = _baseline_poses(baseline if baseline is not None else centerline)
            nearest = np.argmin(((ego.pose[None, :2] - poses[:, :2]) ** 2).sum(axis=-1) ** 0.5)
            candidates.append(i)
            errors.append(np.abs(_normalize_angle(poses[nearest, 2] - ego.heading)))
    if candidates:
        return drivable.speed_limits[candidates[int(np.argmin(errors))]]
    center = shapely.Point(*ego_coords(ego.pose)[4])
    footprint = ego_box_polygon(ego.pose)
    best, best_distance = None, np.inf
    for i in route:
        if drivable.polygons[i].contains(center):
            return drivable.speed_limits[i]
        distance = drivable.polygons[i].distance(footprint)
        if distance < best_distance:
            best, best_distance = i, distance
    return drivable.speed_limits[best] if best is not None else None


def _baseline_poses(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape[1] >= 3:
        return points
    d = np.diff(points, axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    return np.column_stack([points, np.append(h, h[-1])])


class _ProposalUnroller:
    """IDM unrolling of the 15 proposals along their paths (NAVSIM's PDMGenerator)."""

    def __init__(self, scene: Scene, occ: Occupancy, paths: list[Path], target_speeds: np.ndarray):
        self.occ = occ
        self.paths = paths
        self.targets = target_speeds
        self.num_policies = len(target_speeds)
        num = len(paths) * self.num_policies
        self.poses = np.zeros((num, TRAJECTORY_STEPS + 1, 3))
        self.idm = np.zeros((num, TRAJECTORY_STEPS + 1, 2))  # progress, speed
        self.lead = np.zeros((num, TRAJECTORY_STEPS + 1, 3))  # progress, speed, rear length
        self.corridors: dict[int, shapely.Geometry] = {}
        ego = scene.ego
        for lateral, path in enumerate(paths):
            batch = self.batch(lateral)
            progress = float(path.project(np.array([ego.x, ego.y])))
            self.idm[batch, 0] = (progress, ego.vx)
            self.poses[batch, 0] = path.interpolate(np.array([progress]))[0]

    def batch(self, lateral: int) -> np.ndarray:
        return lateral * self.num_policies + np.arange(self.num_policies)

    def unroll(self, proposals: np.ndarray, lateral: int, steps: range) -> None:
        for t in steps:
            self._update_leader(proposals, lateral, t)
            self._propagate_idm(proposals, t)
            self.poses[proposals, t] = self.paths[lateral].interpolate(self.idm[proposals, t, 0])

    def _corridor(self, lateral: int) -> shapely.Geometry:
        if lateral not in self.corridors:
            start = self.idm[self.batch(lateral)[0], 0, 0]
            end = start + abs(np.max(self.targets)) * TRAJECTORY_STEPS * DT
            line = self.paths[lateral].substring(start, end)
            self.corridors[lateral] = line.buffer(C.PACIFICA.width / 2, cap_style="square")
        return self.corridors[lateral]

    def _update_leader(self, proposals: np.ndarray, lateral: int, t: int) -> None:
        if t % 2 != 0:  # leaders are searched every second step only
            self.lead[proposals, t] = self.lead[proposals, t - 1]
            return
        path = self.paths[lateral]
        step = self.occ.at(t)
        hits = [int(i) for i in step["tree"].query(self._corridor(lateral), predicate="intersects")]
        hits = [i for i in hits if i not in self.occ.ignored]
        located = shapely.line_locate_point(path.line, shapely.points(step["centroid"][hits])) if hits else []
        progress = dict(zip(hits, (float(s) for s in located)))
        record = np.zeros(3)  # shared by the proposals of this path, as in NAVSIM
        ego_polys = polygons(ego_coords(self.poses[proposals, t - 1])) if hits else None
        for j, p in enumerate(proposals):
            ego_progress = self.idm[p, t - 1, 0]
            ahead = [i for i, s in progress.items() if s > ego_progress]
            if ahead:
                distances = shapely.distance(ego_polys[j], step["poly"][ahead])
                nearest = ahead[int(np.argmin(distances))]
                record[0] = ego_progress + distances[int(np.argmin(distances))]
                if not self.occ.red_light[nearest]:
                    record[1] = self._projected_speed(nearest, self.poses[p, t - 1, 2])
            else:
                record[0] = path.line.length
                record[2] = C.PACIFICA.length / 2
            self.lead[p, t] = record

    def _projected_speed(self, token: int, ego_heading: float) -> float:
        if not self.occ.is_agent[token]:
            return 0.0
        relative = _normalize_angle(self.occ.heading[token] - ego_heading)
        return float(self.occ.speed[token] * np.cos(relative) + 0.0 * np.sin(relative))

    def _propagate_idm(self, proposals: np.ndarray, t: int) -> None:
        x, v = self.idm[proposals, t - 1, 0], self.idm[proposals, t - 1, 1]
        x_lead, v_lead, rear = self.lead[proposals, t, 0], self.lead[proposals, t, 1], self.lead[proposals, t, 2]
        target = self.targets[proposals % self.num_policies]
        s_star = MIN_GAP + v * HEADWAY + (v * (v - v_lead)) / (2 * np.sqrt(ACCEL_MAX * DECEL_MAX))
        s_alpha = np.maximum(x_lead - x - rear, MIN_GAP)
        with np.errstate(divide="ignore", invalid="ignore"):
            accel = ACCEL_MAX * (1 - (v / target) ** 10 - (s_star / s_alpha) ** 2)
        accel = np.clip(accel, -DECEL_MAX, ACCEL_MAX)
        self.idm[proposals, t, 0] = x + DT * v
        self.idm[proposals, t, 1] = v + DT * accel


def pdm_closed_trajectory(scene: Scene, version: str, drivable: DrivableMap, centerline_poses: np.ndarray) -> np.ndarray:
    """PDM-Closed's chosen trajectory: (51, 3) rear-axle poses at t = 0, 0.1, ..., 5.0 s, scene frame.

    The first pose is the ego's projection on the chosen path, not the ego pose itself (NAVSIM's too).
    """
    from rewards.pdm import proposals as scoring  # local import: proposals imports this package's modules

    route_ids = {drivable.ids[i] for i in drivable.route_lane_idx}
    occ = forecast_occupancy(scene, route_ids)
    limit = starting_speed_limit(scene, drivable, centerline_poses)
    targets = SPEED_FRACTIONS * (limit if limit is not None else C.DEFAULT_SPEED_LIMIT_MPS)
    centerline = Path(centerline_poses)
    paths = [centerline] + [centerline.offset(offset) for offset in LATERAL_OFFSETS]
    unroller = _ProposalUnroller(scene, occ, paths, targets)
    for lateral in range(len(paths)):
        unroller.unroll(unroller.batch(lateral), lateral, range(1, PROPOSAL_STEPS + 1))

    proposals = np.zeros((len(unroller.poses), PROPOSAL_STEPS + 1, 11))
    proposals[..., :3] = unroller.poses[:, : PROPOSAL_STEPS + 1]
    simulated = track(proposals[..., :3], initial_state(scene.ego))
    sub = scoring.submetrics(simulated, occ, drivable, centerline, version)
    _, _, scores = scoring.aggregate(sub, version)
    best = int(np.argmax(scores))
    lateral = best // unroller.num_policies
    unroller.unroll(np.array([best]), lateral, range(PROPOSAL_STEPS + 1, TRAJECTORY_STEPS + 1))
    return unroller.poses[best].copy()
