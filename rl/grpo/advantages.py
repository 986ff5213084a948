"""Group-relative advantages (GRPO), with unscorable samples left out of the baseline, and the group filter."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Why a group is dropped (the keys of the `train/groups_dropped/<reason>` counts).
UNSCORABLE = "unscorable"  # fewer than 2 scorable samples: no one to compare with
NEAR_TIE = "near_tie"  # the scorable totals span less than the tie tolerance: no signal, only noise
DROP_REASONS = (UNSCORABLE, NEAR_TIE)
STD_SCOPES = ("group", "batch")  # what the advantages are divided by: each group's own std, or one for the batch


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


def drop_reason(rewards: np.ndarray, tie_tolerance: float = 1e-3, filter_ties: bool = True) -> str | None:
    """Why a group of total rewards (G,) (NaN = unscorable) carries no learning signal, or None to keep it.

    UNSCORABLE when fewer than 2 samples are scorable (always: there is no baseline to compare with);
    NEAR_TIE, with `filter_ties`, when the scorable totals span (max - min) no more than `tie_tolerance`.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    valid = rewards[np.isfinite(rewards)]
    if valid.size < 2:
        return UNSCORABLE
    if filter_ties and float(valid.max() - valid.min()) <= tie_tolerance:
        return NEAR_TIE
    return None


@dataclass
class GroupSelection:
    """The outcome of the group filter for a batch of groups.

    advantages: one (G_i,) array per group (all zeros for a dropped group and for unscorable samples);
    kept: (num_groups,) bool; reasons: per group, None (kept) or one of DROP_REASONS.
    """

    advantages: list[np.ndarray]
    kept: np.ndarray
    reasons: list[str | None]

    def dropped(self) -> dict[str, int]:
        """Dropped groups per reason, every reason present (0 when none)."""
        return {reason: sum(r == reason for r in self.reasons) for reason in DROP_REASONS}


def batch_advantages(
    group_rewards: list[np.ndarray],
    normalize_std: bool = True,
    filter_ties: bool = True,
    tie_tolerance: float = 1e-3,
    std_floor: float = 0.0,
    std_scope: str = "group",
    eps: float = 1e-6,
) -> GroupSelection:
    """Advantages for a batch of groups, judged on the total reward each sample gets.

    group_rewards: one (G_i,) array of total rewards per group (NaN = unscorable). A group is dropped when it
    has fewer than 2 scorable samples, or (with `filter_ties`) when its scorable totals span no more than
    `tie_tolerance` (see `drop_reason`). Kept groups get `group_advantages`, each centred on its own mean.
    With `normalize_std`, `std_scope` "group" divides each group by its own std; "batch" divides every kept group
    by one spread, the root mean square of the batch's centred rewards (at least `std_floor`), so a group weighs
    by how much its samples differ: one where some samples collide outweighs one that differs by centimetres.
    """
    if std_scope not in STD_SCOPES:
        raise ValueError(f"grpo.std_scope must be one of {STD_SCOPES}, got {std_scope!r}")
    reasons = [drop_reason(r, tie_tolerance, filter_ties) for r in group_rewards]
    per_group = normalize_std and std_scope == "group"
    advantages = [
        group_advantages(r, per_group, std_floor=std_floor) if reason is None else np.zeros(len(r))
        for r, reason in zip(group_rewards, reasons)
    ]
    if normalize_std and std_scope == "batch":
        centred = [a[np.isfinite(r)] for a, r, reason in zip(advantages, group_rewards, reasons) if reason is None]
        if centred:
            spread = float(np.sqrt(np.mean(np.concatenate(centred) ** 2)))
            advantages = [a / (max(spread, std_floor) + eps) for a in advantages]
    return GroupSelection(advantages, np.array([r is None for r in reasons], dtype=bool), reasons)
