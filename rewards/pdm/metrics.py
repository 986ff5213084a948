"""NAVSIM's per-proposal sub-metrics on simulated 10 Hz ego states (PDMScorer's `_calculate_*`).

All functions take P proposals at once: states (P, T, 11) from `sim.kinematics`, their box coords
(P, T, 5, 2) and polygons (P, T), the ego-area flags (P, T, 3) of `DrivableMap.ego_areas`, and an
`Occupancy`. Intersections are first pre-tested with enclosing circles (exact: a pair that is not a
candidate cannot touch) and then decided by shapely, as in NAVSIM. The sequential rules (tracks
ignored after a not-at-fault event, first infraction time) are applied per proposal, in time order.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import shapely

from sim.conventions import PACIFICA
from sim.kinematics import StateIndex

from rewards.pdm.boxes import CENTER, FRONT_LEFT, FRONT_RIGHT, bounding_radius
from rewards.pdm.drivable import MULTIPLE_LANES, NON_DRIVABLE_AREA, ONCOMING_TRAFFIC, DrivableMap
from rewards.pdm.observation import Occupancy

EGO_RADIUS = float(bounding_radius(PACIFICA.length, PACIFICA.width))
STOPPED_EGO_SPEED = 5e-2  # NC: collisions below this ego speed are never at fault
STOPPED_TRACK_SPEED = 5e-2
TTC_STOPPED_SPEED = 5e-3  # TTC ignores ego states slower than this
TTC_STEPS = (0, 3, 6, 9)  # look-ahead in 0.1 s steps
AHEAD_RAD = np.deg2rad(30)
BEHIND_RAD = np.deg2rad(150)
_MARGIN = 1e-6


def ego_speeds(states: np.ndarray) -> np.ndarray:
    return np.hypot(states[..., StateIndex.VELOCITY_X], states[..., StateIndex.VELOCITY_Y])


def touching(occ: Occupancy, ego_polys, centers: np.ndarray, steps: np.ndarray, objects: Optional[np.ndarray] = None):
    """Ego boxes touching objects, for many (ego box, stored step) rows at once.

    ego_polys: (N,) polygons, or a function giving the polygons of selected rows; centers (N, 2) of the
    ego boxes; steps (N,) stored-step index per row; objects: optional (num tokens,) mask of the objects
    to consider. Returns (rows, slots) of the intersecting pairs, `slots` indexing `occ.pad_*[steps[row]]`.
    A pair is tested by shapely only if the boxes' enclosing circles overlap.
    """
    d = centers[:, None, :] - occ.pad_center[steps]
    reach = EGO_RADIUS + occ.pad_radius[steps] + _MARGIN
    with np.errstate(invalid="ignore"):
        near = d[..., 0] ** 2 + d[..., 1] ** 2 <= reach**2
    if objects is not None:
        near &= np.append(objects, False)[occ.pad_obj[steps]]  # padding (-1) picks the appended False
    rows, slots = np.nonzero(near)
    if len(rows) == 0:
        return rows, slots
    if callable(ego_polys):
        unique, inverse = np.unique(rows, return_inverse=True)
        polys = ego_polys(unique)[inverse]
    else:
        polys = ego_polys[rows]
    hit = shapely.intersects(polys, occ.pad_poly[steps[rows], slots])
    return rows[hit], slots[hit]


def _by_proposal(proposal, step, lookahead, rows, slots):
    """Hits grouped per proposal, each group in (step, look-ahead) order: yields (p, [(row, slot), ...])."""
    order = np.lexsort((lookahead, step, proposal))
    proposal, rows, slots = proposal[order], rows[order], slots[order]
    starts = np.flatnonzero(np.r_[True, proposal[1:] != proposal[:-1]]) if len(order) else []
    ends = list(starts[1:]) + [len(order)]
    for start, end in zip(starts, ends):
        yield int(proposal[start]), zip(rows[start:end].tolist(), slots[start:end].tolist())


def _counted(occ: Occupancy) -> np.ndarray:
    """Objects NC and TTC look at: not red lights, not ignored from the start."""
    counted = ~occ.red_light.copy()
    counted[list(occ.ignored)] = False
    return counted


def relative_angle(ego_pose: np.ndarray, point: np.ndarray) -> float:
    """Angle (rad) between the ego heading and the direction from the ego rear axle to `point` (nuPlan)."""
    agent_vector = np.array([point[0] - ego_pose[0], point[1] - ego_pose[1]])
    ego_vector = np.array([np.cos(ego_pose[2]), np.sin(ego_pose[2])])
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.arccos(np.dot(ego_vector, agent_vector / np.linalg.norm(agent_vector))))


def no_at_fault_collisions(states, coords, ego_polys, areas, occ: Occupancy):
    """NC per proposal ({0, 0.5, 1}) and the index of the first at-fault collision (inf if none)."""
    num, horizon = states.shape[:2]
    scores = np.ones(num)
    first = np.full(num, np.inf)
    ignored = [set(occ.ignored) for _ in range(num)]
    speeds = ego_speeds(states)
    steps = np.tile(occ.step_of[:horizon], num)
    rows, slots = touching(occ, ego_polys.reshape(-1), coords[..., CENTER, :].reshape(-1, 2), steps, _counted(occ))
    # NAVSIM loops over time; the proposals do not interact, so each one's events are taken in time order
    for p, events in _by_proposal(rows // horizon, rows % horizon, np.zeros_like(rows), rows, slots):
        for row, slot in events:
            k = int(row % horizon)
            token = occ.pad_obj[steps[row], slot]
            if token in ignored[p]:
                continue
            if speeds[p, k] <= STOPPED_EGO_SPEED:
                at_fault = False  # stopped ego
            elif not occ.is_agent[token] or occ.speed[token] <= STOPPED_TRACK_SPEED:
                at_fault = True  # stopped track
            elif relative_angle(states[p, k, :3], occ.pad_centroid[steps[row], slot]) > BEHIND_RAD:
                at_fault = False  # hit from behind
            elif shapely.intersects(
                shapely.LineString([coords[p, k, FRONT_LEFT], coords[p, k, FRONT_RIGHT]]), occ.pad_poly[steps[row], slot]
            ):
                at_fault = True  # front bumper
            else:  # lateral: at fault only when straddling lanes or off the road
                at_fault = bool(areas[p, k, MULTIPLE_LANES] or areas[p, k, NON_DRIVABLE_AREA])
            if at_fault:
                scores[p] = min(scores[p], 0.0 if occ.is_agent[token] else 0.5)
                first[p] = min(first[p], k)
                if scores[p] == 0.0:
                    break  # nothing later can change the score or the first collision time
            else:
                ignored[p].add(token)
    return scores, first


def drivable_area_compliance(areas: np.ndarray) -> np.ndarray:
    return np.where(areas[..., NON_DRIVABLE_AREA].any(axis=-1), 0.0, 1.0)


def driving_direction_compliance(coords, areas, drivable: DrivableMap, skip_intersections: bool) -> np.ndarray:
    """DDC ({0, 0.5, 1}): metres driven in oncoming traffic over any 1 s window (v2 ignores intersections)."""
    centers = coords[..., CENTER, :]
    num, horizon = centers.shape[:2]
    progress = np.zeros((num, horizon), dtype=np.float64)
    progress[:, 1:] = np.linalg.norm(centers[:, 1:] - centers[:, :-1], axis=-1)
    counted = areas[..., ONCOMING_TRAFFIC].copy()
    if skip_intersections:
        counted &= ~drivable.in_intersection(centers)
    progress[~counted] = 0.0
    window = 10  # int(1.0 s / 0.1 s)
    sums = np.stack([progress[:, max(0, k - window) : k + 1].sum(axis=-1) for k in range(horizon)], axis=-1)
    worst = sums.max(axis=-1)
    return np.where(worst < 2.0, 1.0, np.where(worst < 6.0, 0.5, 0.0))


def traffic_light_compliance(coords, ego_polys, occ: Occupancy) -> np.ndarray:
    """TLC ({0, 1}): 0 once the ego box touches a red on-route lane connector."""
    num, horizon = ego_polys.shape
    scores = np.ones(num)
    if not occ.light.any():
        return scores
    steps = np.tile(occ.step_of[:horizon], num)
    rows, _ = touching(occ, ego_polys.reshape(-1), coords[..., CENTER, :].reshape(-1, 2), steps, objects=occ.light)
    scores[np.unique(rows // horizon)] = 0.0
    return scores


def raw_progress(coords, centerline: shapely.LineString) -> np.ndarray:
    """Metres gained along the route centre line between the first and the last box centre (>= 0)."""
    start = shapely.points(coords[:, 0, CENTER])
    end = shapely.points(coords[:, -1, CENTER])
    gained = shapely.line_locate_point(centerline, end) - shapely.line_locate_point(centerline, start)
    return np.clip(gained, 0.0, None)


def time_to_collision(states, coords, areas, drivable: DrivableMap, occ: Occupancy, last_step: int):
    """TTC ({0, 1}) and the first violation index (inf if none), for ego steps 0 ... last_step.

    At each step the ego box, pushed ahead at its current speed by 0, 0.3, 0.6, 0.9 s, is intersected with
    the objects of that future step. A hit counts if the object is ahead (< 30 deg), or if the ego straddles
    lanes, is off the road or has its rear axle in an intersection and the object is not behind (> 150 deg);
    otherwise the object is ignored from then on for that proposal. Ego steps slower than 5 mm/s are skipped.
    """
    num = states.shape[0]
    scores = np.ones(num)
    first = np.full(num, np.inf)
    speeds = ego_speeds(states)
    headings = states[..., StateIndex.HEADING]
    dxy = np.stack([np.cos(headings) * speeds, np.sin(headings) * speeds], axis=-1)  # (P, T, 2)
    ring = coords.copy()
    ring[..., CENTER, :] = ring[..., FRONT_LEFT, :]
    ks = np.arange(last_step + 1)
    # rows: (proposal, step, look-ahead) with the ego moving
    p_idx, k_idx, f_idx = np.meshgrid(np.arange(num), ks, np.arange(len(TTC_STEPS)), indexing="ij")
    p_idx, k_idx, f_idx = p_idx.reshape(-1), k_idx.reshape(-1), f_idx.reshape(-1)
    moving = speeds[p_idx, k_idx] >= TTC_STOPPED_SPEED
    p_idx, k_idx, f_idx = p_idx[moving], k_idx[moving], f_idx[moving]
    if len(p_idx) == 0:
        return scores, first
    future = np.array(TTC_STEPS)[f_idx]
    shift = dxy[p_idx, k_idx] * (future.astype(np.float64) * 0.1)[:, None]
    steps = occ.step_of[k_idx + future]

    def moved_boxes(rows):
        return shapely.polygons(ring[p_idx[rows], k_idx[rows]] + shift[rows][:, None, :])

    rows, slots = touching(occ, moved_boxes, coords[p_idx, k_idx, CENTER] + shift, steps, _counted(occ))
    ignored = [set(occ.ignored) for _ in range(num)]
    # NAVSIM loops over steps, then look-aheads; the proposals do not interact, so each one's hits are taken
    # in that order until its first violation
    for p, hits in _by_proposal(p_idx[rows], k_idx[rows], f_idx[rows], rows, slots):
        for row, slot in hits:
            k = int(k_idx[row])
            token = occ.pad_obj[steps[row], slot]
            if token in ignored[p]:
                continue
            angle = relative_angle(states[p, k, :3], occ.pad_centroid[steps[row], slot])
            if angle < AHEAD_RAD:
                violation = True
            elif angle > BEHIND_RAD:
                violation = False
            else:
                violation = bool(areas[p, k, MULTIPLE_LANES] or areas[p, k, NON_DRIVABLE_AREA]) or bool(
                    drivable.in_intersection(states[p, k, :2]))
            if violation:
                scores[p] = 0.0
                first[p] = k
                break
            ignored[p].add(token)
    return scores, first


def lane_keeping(coords, drivable: DrivableMap, centerline: shapely.LineString) -> np.ndarray:
    """LK ({0, 1}): 0 if the box centre stays > 0.5 m off the centre line for 20 counted steps (2 s) in
    a row; steps with the centre inside an intersection are skipped (neither counted nor resetting)."""
    centers = coords[..., CENTER, :]
    deviation = shapely.distance(shapely.points(centers), centerline)
    skip = drivable.in_intersection(centers)
    num, horizon = deviation.shape
    run = np.zeros(num, dtype=np.int64)
    failed = np.zeros(num, dtype=bool)
    for k in range(horizon):
        counted = ~skip[:, k] & ~failed
        run = np.where(counted, np.where(deviation[:, k] > 0.5, run + 1, 0), run)
        failed |= counted & (run >= 20)
    return np.where(failed, 0.0, 1.0)
