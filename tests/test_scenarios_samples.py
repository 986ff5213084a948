"""Negative samples differ from the expert ground truth the way their label says; recovery samples start
perturbed (still on the road) and the expert's correction converges back to the unperturbed path."""
from __future__ import annotations

import os

import numpy as np
import pytest
import shapely

from scenario_checks import agent_boxes_10hz, corners_inside, drivable_union, first_hit, interpolate_10hz
from sim import conventions as C
from sim.geometry import ego_corners, relative_to_absolute
from sim.scenarios import FAMILIES, generate
from sim.scenarios.generator import family as family_of


NOMINAL_OFFSET_FAMILIES = {"parked_obstacle", "lane_change", "construction_zone"}
NEG_CASES = [(f, k) for f in FAMILIES for k in family_of(f).negative_kinds]
REC_CASES = [(f, k) for f in FAMILIES for k in family_of(f).recovery_kinds]
SEEDS = tuple(range(int(os.environ.get("SCEN_SEEDS", "2"))))  # SCEN_SEEDS=20 for a deeper local check


def speeds(trajectory: np.ndarray) -> np.ndarray:
    points = np.concatenate([np.zeros((1, 2)), trajectory[:, :2]])
    return np.linalg.norm(np.diff(points, axis=0), axis=1) / 0.5


def progress(trajectory: np.ndarray) -> np.ndarray:
    points = np.concatenate([np.zeros((1, 2)), trajectory[:, :2]])
    return np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))


def clearance(scene, trajectory: np.ndarray, tokens=None) -> float:
    """Smallest distance (m) between the ego box along the trajectory (10 Hz) and other objects."""
    ego = shapely.polygons(ego_corners(interpolate_10hz(trajectory, np.zeros(3))))
    best = np.inf
    for token, corners in agent_boxes_10hz(scene):
        if tokens is None or token in tokens:
            best = min(best, float(np.min(shapely.distance(ego, shapely.polygons(corners[: len(ego)])))))
    return best


def merge_clearance(scene, trajectory: np.ndarray, tokens: set[str]) -> float:
    """Distance to the target lane's traffic when the ego's centre crosses into that lane (1.7 m to the
    side; straight roads): the gap it merges into."""
    poses = interpolate_10hz(trajectory, np.zeros(3))
    centre_y = poses[:, 1] + C.PACIFICA.rear_axle_to_center * np.sin(poses[:, 2])
    k = int(np.argmax(np.abs(centre_y) > 1.7))
    ego = shapely.Polygon(ego_corners(poses[k]))
    gaps = [float(shapely.distance(ego, shapely.Polygon(c[k]))) for token, c in agent_boxes_10hz(scene) if token in tokens]
    return min(gaps, default=np.inf)


def in_lane_ahead(scene) -> set[str]:
    """Agents that are ahead in the ego lane at some time from t = 0 (straight roads: |y| < 2 m)."""
    now = C.AGENT_CURRENT_INDEX
    return {a.token for a in scene.agents if np.any((a.poses[now:, 0] > 2.0) & (np.abs(a.poses[now:, 1]) < 2.0))}


def lateral_offsets(scene, trajectory: np.ndarray) -> np.ndarray:
    """Signed offsets (left +) of the trajectory's rear axle from the route centre line."""
    line = np.asarray(scene.map.centerline)
    offsets = []
    for x, y, _ in trajectory:
        d = np.linalg.norm(line - [x, y], axis=1)
        i = min(int(np.argmin(d)), len(line) - 2)
        a, b = line[i], line[i + 1]
        offsets.append(np.cross(b - a, [x, y] - a) / np.linalg.norm(b - a))
    return np.array(offsets)


def front_arc_lengths(scene, trajectory: np.ndarray) -> np.ndarray:
    """Arc length along the centre line of the front bumper at each pose (ego at the origin first)."""
    poses = np.concatenate([np.zeros((1, 3)), trajectory])
    front = poses[:, :2] + C.PACIFICA.front_length * np.stack([np.cos(poses[:, 2]), np.sin(poses[:, 2])], -1)
    line = shapely.LineString(scene.map.centerline)
    return np.array([line.project(shapely.Point(p)) for p in front])


def red_connector_hits(scene, trajectory: np.ndarray) -> bool:
    """Does the ego box touch an on-route lane connector while its light is red (NAVSIM v2's TLC)?"""
    poses = interpolate_10hz(trajectory, np.zeros(3))
    boxes = shapely.polygons(ego_corners(poses))
    times = np.arange(len(poses)) * 0.1
    for light in scene.traffic_lights:
        lane = scene.map.lane(light.lane_connector_id)
        if not lane.on_route:
            continue
        # NAVSIM holds each 2 Hz state for the five 10 Hz steps that follow it
        frames = np.minimum(((times - C.AGENT_TIMES_S[0]) / 0.5 + 1e-9).astype(int), len(light.states) - 1)
        red = np.array([light.states[f] == "red" for f in frames])
        if np.any(shapely.intersects(boxes, shapely.Polygon(lane.polygon)) & red):
            return True
    return False


def check_negative(kind: str, scene) -> None:
    gt, neg = scene.future, scene.negative_trajectory
    v_gt, v_neg = speeds(gt), speeds(neg)
    if kind == "hesitate":
        assert progress(neg)[5] < progress(gt)[5] - 1.5 and v_neg.min() <= v_gt.min() + 0.1  # behind at 3 s
    elif kind == "late_brake":
        lead = in_lane_ahead(scene)
        assert (v_neg - v_gt).max() > 0.5  # keeps its speed while the expert already brakes ...
        if lead:
            assert clearance(scene, neg, lead) < clearance(scene, gt, lead) - 0.5  # ... and closer to the lead
        else:  # ... and stops (for a light or a sign) further on
            assert progress(neg)[-1] > progress(gt)[-1] + 0.5
    elif kind == "tailgate":
        lead = in_lane_ahead(scene)
        assert clearance(scene, neg, lead) < clearance(scene, gt, lead) - 0.5
    elif kind == "no_yield":
        moving = {a.token for a in scene.agents if np.nanmax(np.linalg.norm(a.velocities, axis=1)) > 1.0}
        assert clearance(scene, neg, moving) < clearance(scene, gt, moving)
        assert progress(neg)[-1] > progress(gt)[-1] + 1.0
    elif kind == "run_red":
        assert red_connector_hits(scene, neg) and not red_connector_hits(scene, gt)
    elif kind == "run_stop_sign":
        line = min((l for l in scene.map.stop_lines if l.type == "stop_sign"), key=lambda l: shapely.Polygon(l.polygon).distance(shapely.Point(0, 0)))
        s_line = shapely.LineString(scene.map.centerline).project(shapely.Polygon(line.polygon).centroid)
        passed = {}
        for name, trajectory in (("gt", gt), ("neg", neg)):
            s_front = front_arc_lengths(scene, trajectory)
            v = np.concatenate([[scene.ego.vx], speeds(trajectory)])
            before = s_front < s_line
            passed[name] = int(np.argmin(before)) if not before.all() else 99
            if name == "gt" and not before.all():
                assert v[before].min() < 0.5  # the expert comes to a full stop before the line
            if name == "neg" and scene.ego.vx > 0.5:
                assert passed["neg"] < 99 and v[before].min() > 1.5  # rolls through without stopping
        assert passed["neg"] < passed["gt"]  # and crosses the line before the expert (if it ever does)
    elif kind == "drift_out_of_lane":
        d_gt, d_neg = np.abs(lateral_offsets(scene, gt)), np.abs(lateral_offsets(scene, neg))
        assert d_neg.max() > 1.5 and d_neg.max() > d_gt.max() + 1.0
    elif kind == "cut_corner":
        side = 1.0 if C.DRIVING_COMMANDS[scene.driving_command] == "left" else -1.0
        assert (side * lateral_offsets(scene, neg)).max() > 1.0
        assert np.abs(lateral_offsets(scene, gt)).max() < 0.6
    elif kind == "squeeze_into_gap":
        assert v_neg.min() >= v_gt.min() - 0.1  # does not wait for a gap
        target_y = neg[-1, 1]  # the squeeze ends in the target lane: its traffic is what it endangers
        others = {a.token for a in scene.agents if abs(a.poses[C.AGENT_CURRENT_INDEX, 1] - target_y) < 1.5}
        assert merge_clearance(scene, neg, others) < merge_clearance(scene, gt, others)  # into a smaller gap
    elif kind == "ignore_obstacle":
        still = {o.token for o in scene.static_objects} | {a.token for a in scene.agents if np.nanmax(np.linalg.norm(a.velocities, axis=1)) < 0.2}
        assert clearance(scene, neg, still) < clearance(scene, gt, still) - 0.3
    else:
        raise AssertionError(f"no check for negative kind {kind}")


def scenes_of_kind(family: str, sample_type: str, kind: str, count: int, max_seed: int = 12):
    """The first `count` seeds' scenes of one kind (a seed's scene may offer none: it is skipped)."""
    scenes = []
    for seed in range(max_seed):
        try:
            scenes.append(generate(family, seed, sample_type, kind))
        except ValueError:
            continue
        if len(scenes) == count:
            return scenes
    raise AssertionError(f"{family}: fewer than {count} of {max_seed} seeds offer a {kind!r} {sample_type} sample")


@pytest.mark.parametrize("family, kind", NEG_CASES)
def test_negative_differs_from_the_ground_truth_as_labelled(family, kind):
    for scene in scenes_of_kind(family, "neg", kind, len(SEEDS), max_seed=6 * len(SEEDS)):
        scene.validate()
        assert scene.sample_type == "neg" and scene.negative_kind == kind
        assert scene.negative_trajectory.shape == (C.NUM_FUTURE_FRAMES, 3)
        check_negative(kind, scene)


def frame_change(source, target) -> np.ndarray:
    """The pose (3,) of `source`'s scene frame in `target`'s, from two map points both scenes share."""
    a_src, b_src = source.map.areas[0].polygon[:2]
    a_tgt, b_tgt = target.map.areas[0].polygon[:2]
    angle = np.arctan2(*(b_tgt - a_tgt)[::-1]) - np.arctan2(*(b_src - a_src)[::-1])
    c, s = np.cos(angle), np.sin(angle)
    origin = a_tgt - np.array([c * a_src[0] - s * a_src[1], s * a_src[0] + c * a_src[1]])
    return np.array([origin[0], origin[1], angle])


def heading_error(points: np.ndarray, pose: np.ndarray) -> float:
    """Heading of `pose` minus the direction of the polyline `points` (M, 2) at its closest point."""
    line = shapely.LineString(points)
    s = line.project(shapely.Point(pose[:2]))
    a, b = (np.array(line.interpolate(x).coords[0]) for x in (max(s - 0.5, 0.0), min(s + 0.5, line.length)))
    return float(np.angle(np.exp(1j * (pose[2] - np.arctan2(b[1] - a[1], b[0] - a[0])))))


def offset_from(path_poses: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of points from a path of poses, extended 40 m straight beyond both ends."""
    first, last = path_poses[0], path_poses[-1]
    before = first[:2] - 40.0 * np.array([np.cos(first[2]), np.sin(first[2])])
    after = last[:2] + 40.0 * np.array([np.cos(last[2]), np.sin(last[2])])
    line = shapely.LineString(np.concatenate([before[None], path_poses[:, :2], after[None]]))
    return np.array([line.distance(shapely.Point(p)) for p in points[:, :2]])


@pytest.mark.parametrize("family, kind", REC_CASES)
def test_recovery_starts_perturbed_on_the_road_and_converges(family, kind):
    for seed in SEEDS:
        rec = generate(family, seed, "rec", kind)
        pos = generate(family, seed, "pos")
        rec.validate()
        assert rec.sample_type == "rec" and rec.recovery_kind == kind
        np.testing.assert_array_equal(rec.recovery_trajectory, rec.future)
        area = drivable_union(rec)
        assert corners_inside(area, rec.ego.pose[None])[0]
        assert corners_inside(area, interpolate_10hz(rec.future, np.zeros(3))).all()
        assert first_hit(rec, rec.future) is None
        # the perturbed start and the correction, seen in the positive scene's frame
        to_pos = frame_change(rec, pos)
        rec_path = relative_to_absolute(to_pos, np.concatenate([np.zeros((1, 3)), rec.future]))
        pos_path = np.concatenate([pos.history_trajectory(), pos.future])
        if family in NOMINAL_OFFSET_FAMILIES:
            # the expert's own path has offsets (nudges, lane changes): compare with the unperturbed drive
            start_offset, end_offset = offset_from(pos_path, rec_path[[0, -1]])
        else:
            # the expert keeps to the route centre line: measure from it
            start_offset, end_offset = np.abs(lateral_offsets(rec, np.concatenate([np.zeros((1, 3)), rec.future])[[0, -1]]))
        start_heading = abs(np.angle(np.exp(1j * (rec_path[0, 2] - pos.ego.heading))))
        if kind == "too_close":
            lead_gap_rec = min(a.poses[C.AGENT_CURRENT_INDEX, 0] for a in rec.agents if a.poses[3, 0] > 0 and abs(a.poses[3, 1]) < 1.5)
            lead_gap_pos = min(a.poses[C.AGENT_CURRENT_INDEX, 0] for a in pos.agents if a.poses[3, 0] > 0 and abs(a.poses[3, 1]) < 1.5)
            assert lead_gap_rec < lead_gap_pos - 1.0
            braking_rec = speeds(rec.future)[2] - rec.ego.vx
            braking_pos = speeds(pos.future)[2] - pos.ego.vx
            assert braking_rec < braking_pos  # slows down more to reopen the gap
            continue
        assert start_offset > 0.15 or start_heading > np.deg2rad(1.5)
        assert end_offset < 0.35 and end_offset < start_offset + 0.05, (start_offset, end_offset)
        if family in NOMINAL_OFFSET_FAMILIES:
            reference, end = pos_path[:, :2], rec_path[-1]
        else:
            reference, end = np.asarray(rec.map.centerline), rec.future[-1]
        assert abs(heading_error(reference, end)) < np.deg2rad(5.0)
