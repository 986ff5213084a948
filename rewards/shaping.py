"""Shaping terms of SpanVLA's reward (spanvla.md 2.3), as pure functions.

r = r_drive - w_N * r_neg + w_R * r_rec - lambda_C * r_CoT
- r_neg = max(0, 1 - ADE(plan, negative) / d): the closer to the negative trajectory, the larger (0 beyond d);
- r_rec = max(0, 1 - ADE(plan, recovery) / d): the mirror, rewarding staying near the correction;
- r_CoT = 0.3 * sigmoid(0.002 * (chars - 400)) for slow-mode reasoning (AutoVLA's length penalty), replaced by
  a large fixed penalty when the reasoning's stated decision disagrees with the trajectory.
"""
from __future__ import annotations

import math

import numpy as np


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


def reasoning_length_penalty(num_chars: int, scale: float = 0.3, slope: float = 0.002, offset: float = 400.0) -> float:
    """AutoVLA's length penalty: scale * sigmoid(slope * (chars - offset))."""
    return scale / (1.0 + math.exp(-slope * (num_chars - offset)))
