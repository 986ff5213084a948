"""Group-relative advantages (GRPO), with unscorable samples left out of the baseline."""
from __future__ import annotations

import numpy as np


def group_advantages(rewards: np.ndarray, normalize_std: bool = True, eps: float = 1e-6, std_floor: float = 0.0) -> np.ndarray:
    """Advantages of one group of G samples of the same scene.

    rewards: (G,) float; NaN marks an unscorable sample. The baseline (mean) and the spread (population std)
    are computed over the scorable samples only; unscorable samples get advantage 0, so they neither push the
    policy nor shift the others' baseline. With `normalize_std`, A = (r - mean) / (max(std, std_floor) + eps),
    else r - mean. A floor keeps a group whose rewards differ by crumbs (e.g. centimetres of progress) from
    being blown up to unit-scale advantages. Returns (G,) float64.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    valid = np.isfinite(rewards)
    advantages = np.zeros_like(rewards)
    if valid.sum() < 2:
        return advantages  # one scorable sample has no one to be compared with
    mean = rewards[valid].mean()
    centred = rewards[valid] - mean
    if normalize_std:
        centred = centred / (max(rewards[valid].std(), std_floor) + eps)
    advantages[valid] = centred
    return advantages


def group_has_spread(rewards: np.ndarray, min_std: float = 1e-6) -> bool:
    """True when the scorable rewards of a group differ (std > min_std): a group whose samples all score the
    same carries no learning signal, and GRPO filters it out."""
    rewards = np.asarray(rewards, dtype=np.float64)
    valid = rewards[np.isfinite(rewards)]
    return valid.size >= 2 and float(valid.std()) > min_std


def batch_advantages(
    group_rewards: list[np.ndarray],
    main_rewards: list[np.ndarray] | None = None,
    normalize_std: bool = True,
    filter_no_spread: bool = True,
    min_std: float = 1e-6,
    std_floor: float = 0.0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Advantages for a batch of groups and the mask of groups kept.

    group_rewards: one (G_i,) array of total rewards per group (NaN = unscorable).
    main_rewards: the main reward (e.g. PDMS) per group; the spread filter looks at it (defaults to the total).
    Returns (advantages per group, kept (num_groups,) bool). Filtered groups get all-zero advantages.
    """
    main_rewards = group_rewards if main_rewards is None else main_rewards
    kept = np.array(
        [(not filter_no_spread) or group_has_spread(m, min_std) for m in main_rewards], dtype=bool
    )
    advantages = [
        group_advantages(r, normalize_std, std_floor=std_floor) if keep else np.zeros(len(r))
        for r, keep in zip(group_rewards, kept)
    ]
    return advantages, kept
