"""Does a reasoning trace's stated decision agree with what the trajectory does?

The decision is read from the trace's last sentence with the decision vocabulary of `sim.decisions` (e.g.
"so I will slow down and keep my lane"), and the trajectory is classified with the same rules that label the
synthetic world's ground truth (stop / decelerate / accelerate / keep speed; turn / lane change /
nudge / keep lane relative to the route centre line). A trace that states no decision cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import shapely

from sim.decisions import COMPATIBLE, classify_lateral, classify_longitudinal, parse_decisions
from sim.geometry import points_to_relative, polyline_headings, wrap_angle
from sim.scene import Scene



@dataclass
class ReasoningCheck:
    consistent: bool
    stated: tuple[Optional[str], Optional[str]]  # (longitudinal, lateral) parsed from the text
    observed: tuple[str, str]  # what the trajectory does


def _on_half_second_grid(trajectory: np.ndarray, interval_s: float) -> np.ndarray:
    trajectory = np.asarray(trajectory, dtype=np.float64)
    if abs(interval_s - 0.5) < 1e-9:
        return trajectory
    times = (np.arange(len(trajectory)) + 1) * interval_s
    grid = np.arange(0.5, times[-1] + 1e-9, 0.5)
    return np.stack([np.interp(grid, times, trajectory[:, i]) for i in range(3)], axis=-1)


def ego_lane_centre(scene: Scene, max_length_m: float = 150.0, join_tolerance_m: float = 0.5,
                    max_turn_rad: float = np.radians(30.0)) -> np.ndarray:
    """The centre line (M, 2, scene frame) of the lane the ego starts in, continued through the lanes and lane
    connectors whose centre line starts where it ends (the straightest one at a fork), and straight ahead where
    every continuation turns by more than `max_turn_rad` (a junction: turning there is a decision, not the lane).
    Falls back to the route centre line when the ego is in no lane with a centre line."""
    point = shapely.Point(scene.ego.x, scene.ego.y)
    lanes = [lane for lane in scene.map.lanes if lane.baseline is not None and len(lane.baseline) > 1]
    start = next((lane for lane in lanes if shapely.Polygon(lane.polygon).covers(point)), None)
    if start is None:
        return np.asarray(scene.map.centerline, dtype=np.float64)[:, :2]
    line = [np.asarray(start.baseline, dtype=np.float64)[:, :2]]
    used, length = {start.id}, shapely.LineString(line[0]).length
    while length < max_length_m:
        end, heading = line[-1][-1], polyline_headings(line[-1])[-1]
        options = [lane for lane in lanes if lane.id not in used
                   and np.linalg.norm(np.asarray(lane.baseline[0][:2]) - end) < join_tolerance_m]
        if not options:
            break
        turn = [abs(wrap_angle(polyline_headings(np.asarray(o.baseline)[:, :2])[-1] - heading)) for o in options]
        if min(turn) > max_turn_rad:
            break
        chosen = options[int(np.argmin(turn))]
        used.add(chosen.id)
        line.append(np.asarray(chosen.baseline, dtype=np.float64)[1:, :2])
        length += shapely.LineString(chosen.baseline).length
    line = np.concatenate(line, axis=0)
    if length < max_length_m:  # continue straight ahead from the end
        heading = polyline_headings(line)[-1]
        extra = np.arange(1.0, max_length_m - length + 1.0)
        line = np.concatenate([line, line[-1] + extra[:, None] * np.array([np.cos(heading), np.sin(heading)])])
    return line


def check_reasoning(text: str, trajectory: np.ndarray, scene: Scene, interval_s: float = 0.5) -> ReasoningCheck:
    """Compare the decision stated in `text` with the plan (N, 3) (ego frame, `interval_s` apart)."""
    plan = _on_half_second_grid(trajectory, interval_s)
    centre = points_to_relative(scene.ego.pose, ego_lane_centre(scene))
    observed = (classify_longitudinal(scene.ego.speed, plan), classify_lateral(plan, centre))
    longitudinal, lateral = parse_decisions(text)
    consistent = True
    if longitudinal is not None and observed[0] not in COMPATIBLE[longitudinal]:
        consistent = False
    if lateral is not None and observed[1] != lateral:
        consistent = False
    return ReasoningCheck(consistent, (longitudinal, lateral), observed)
