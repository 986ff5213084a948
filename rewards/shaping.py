"""Shaping terms of SpanVLA's reward (spanvla.md 2.3), as pure functions.

r = r_drive - w_N * r_neg + w_R * r_rec - lambda_C * r_CoT
- r_neg = max(0, 1 - ADE(plan, negative) / d): the closer to the negative trajectory, the larger (0 beyond d);
- r_rec = max(0, 1 - ADE(plan, recovery) / d): the mirror, rewarding staying near the correction;
- r_CoT = 0.3 * sigmoid(0.002 * (chars - 400)) for slow-mode reasoning (AutoVLA's length penalty), replaced by
  a large fixed penalty when the reasoning's stated decision disagrees with the trajectory.

The region d of the two L2 terms is either `fixed` (the paper's 1.7 m) or `separation`: the distance between
the reference and what a plan should be compared with - for r_neg the expert's plan, for r_rec the naive
continuation of the perturbed start (keeping its velocity: not correcting). With d = ADE(expert, negative), a
plan is penalised only while it is closer to the mistake than the expert is: 1 on the mistake, 0 at the
expert and beyond, so the term acts on any policy near the expert and never pushes a plan past the expert.
"""
from __future__ import annotations

import math

import numpy as np

REGIONS = ("fixed", "separation")
# Which trajectory the shaping terms measure: the one driven (at its pace) or the flow's plan before its pace.
MEASURES = ("driven", "plan")


def average_displacement(plan: np.ndarray, reference: np.ndarray) -> float:
    """Mean Euclidean distance (m) between the (x, y) of two trajectories over their common poses.

    Both are (N, 3) or (N, 2) rear-axle poses in the ego frame on the same time grid.
    """
    n = min(len(plan), len(reference))
    if n == 0:
        raise ValueError("cannot compare empty trajectories")
    diff = np.asarray(plan, dtype=np.float64)[:n, :2] - np.asarray(reference, dtype=np.float64)[:n, :2]
    return float(np.linalg.norm(diff, axis=-1).mean())


def bounded_l2_shaping(plan: np.ndarray, reference: np.ndarray, threshold_m: float = 1.7) -> float:
    """max(0, 1 - ADE(plan, reference) / threshold_m): 1 on the reference, 0 at and beyond the threshold."""
    if threshold_m <= 0:
        raise ValueError(f"threshold_m must be positive, got {threshold_m}")
    return max(0.0, 1.0 - average_displacement(plan, reference) / threshold_m)


def shaping_region(reference: np.ndarray, region: str = "fixed", threshold_m: float = 1.7,
                   anchor: np.ndarray | None = None, min_separation_m: float = 0.05) -> float:
    """The radius d (m) of a bounded L2 term around `reference`.

    region "fixed": `threshold_m`. region "separation": ADE(anchor, reference), the separation of the reference
    from the plan it is contrasted with (`anchor`, on the same time grid); 0 (no region: the term is 0 for
    every plan) when that separation is below `min_separation_m`, i.e. the reference cannot be told apart
    from the anchor.
    """
    if region == "fixed":
        if threshold_m <= 0:
            raise ValueError(f"threshold_m must be positive, got {threshold_m}")
        return float(threshold_m)
    if region == "separation":
        if anchor is None:
            raise ValueError("region 'separation' needs the anchor trajectory the reference is contrasted with")
        separation = average_displacement(anchor, reference)
        return separation if separation >= min_separation_m else 0.0
    raise ValueError(f"region must be one of {REGIONS}, got {region!r}")


def region_l2_shaping(plan: np.ndarray, reference: np.ndarray, region_m: float) -> float:
    """max(0, 1 - ADE(plan, reference) / region_m); 0 for every plan when region_m is 0 (no region)."""
    if region_m < 0:
        raise ValueError(f"region_m must be >= 0, got {region_m}")
    if region_m == 0:
        return 0.0
    return max(0.0, 1.0 - average_displacement(plan, reference) / region_m)


def constant_velocity_plan(vx: float, vy: float, times_s: np.ndarray) -> np.ndarray:
    """(T, 3) poses of an ego that keeps its current body-frame velocity (vx, vy) (m/s) and heading, in the ego
    frame at `times_s` (s after t = 0): the naive continuation of a start, with no correction."""
    times_s = np.asarray(times_s, dtype=np.float64)
    return np.stack([vx * times_s, vy * times_s, np.zeros_like(times_s)], -1)


def reasoning_length_penalty(num_chars: int, scale: float = 0.3, slope: float = 0.002, offset: float = 400.0) -> float:
    """AutoVLA's length penalty: scale * sigmoid(slope * (chars - offset))."""
    return scale / (1.0 + math.exp(-slope * (num_chars - offset)))
