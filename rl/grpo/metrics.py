"""Metrics of a GRPO step and of an evaluation, as flat dicts with namespaced keys."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from sim.conventions import SAMPLE_TYPES

V1_COLUMNS = ("NC", "DAC", "TTC", "EP", "C", "PDMS")
V2_COLUMNS = ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC", "EPDMS")


def rollout_metrics(rollouts: list) -> dict[str, float]:
    """`rollout/`: samples, reasoning mode and length, sample types, stage timings (the policy versions and their
    staleness: `rl.driver.version_metrics`)."""
    samples = [s for r in rollouts for s in r.group.samples]
    if not samples:
        return {"rollout/num_groups": 0.0}
    types = [r.sample_type for r in rollouts]
    out = {
        "rollout/num_groups": float(len(rollouts)),
        "rollout/num_samples": float(len(samples)),
        "rollout/slow_mode_fraction": float(np.mean([s.mode == "slow" for s in samples])),
        "rollout/reasoning_chars": float(np.mean([len(s.reasoning) for s in samples])),
        "rollout/completion_tokens": float(np.mean([len(s.completion.token_ids) for s in samples])),
        "rollout/trajectory_spread_m": float(np.mean([_spread(r.group.trajectories) for r in rollouts])),
        "timing/rollout_group_s": float(np.mean([r.seconds for r in rollouts])),
        "timing/prefill_s": float(np.mean([r.group.timings.prefill_s for r in rollouts])),
        "timing/reasoning_s": float(np.mean([r.group.timings.reasoning_s for r in rollouts])),
        "timing/trajectory_s": float(np.mean([r.group.timings.trajectory_s for r in rollouts])),
    }
    for t in SAMPLE_TYPES:
        out[f"rollout/groups_{t}"] = float(types.count(t))
    out.update(pace_metrics(rollouts))
    return out


def pace_metrics(rollouts: list) -> dict[str, float]:
    """With drawn paces (rollout.pace_std > 0; `rl.policy.pace`): `rollout/pace_log_speed`, the samples' mean pace
    z (the log of the fraction of the plan's speed, before clipping at 0), and `rollout/pace_scene_std`, the std
    over groups of each group's mean z: how much the pace differs from scene to scene (a scene-blind head leaves
    about pace_std / sqrt(G))."""
    per_group = [[s.chain.pace for s in r.group.samples if s.chain is not None and s.chain.pace is not None]
                 for r in rollouts]
    per_group = [z for z in per_group if z]
    if not per_group:
        return {}
    means = [float(np.mean(z)) for z in per_group]
    return {"rollout/pace_log_speed": float(np.mean(np.concatenate(per_group))),
            "rollout/pace_scene_std": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0}


def _spread(trajectories: np.ndarray) -> float:
    """Mean distance (m) of the group's final positions from their mean: how different the G samples are."""
    end = trajectories[:, -1, :2]
    return float(np.linalg.norm(end - end.mean(0), axis=1).mean())


def score_metrics(scores: list) -> dict[str, float]:
    """`reward/`: the total and every component averaged over scorable samples (a component a reward function
    gives only some samples, e.g. `negative_l2/inside_share` on negative scenes, is averaged over those);
    the unscorable count and share, and unscorable samples per failing term (`reward/unscorable/<term>`);
    scorer time."""
    totals = np.concatenate([s.totals for s in scores]) if scores else np.zeros(0)
    components: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    for group in scores:
        for total, c in zip(group.totals, group.components):
            if not np.isfinite(total):
                continue  # a failed sample's earlier terms are no measure of the run's reward
            for key, value in c.items():
                components[key].append(value)
        for term, count in (group.failures_by_term or {}).items():
            failures[term] += int(count)
    out = {
        "reward/total": float(np.nanmean(totals)) if np.isfinite(totals).any() else float("nan"),
        "reward/unscorable": float(np.isnan(totals).sum()),
        "reward/unscorable_fraction": float(np.isnan(totals).mean()) if totals.size else 0.0,
        "timing/scorer_s": float(sum(s.seconds for s in scores)),
    }
    for key, values in components.items():
        out[f"reward/{key}"] = float(np.mean(values))
    for term, count in failures.items():
        out[f"reward/unscorable/{term}"] = float(count)
    return out


def selection_metrics(dropped: dict[str, int], num_groups: int) -> dict[str, float]:
    """`train/`: groups kept (fraction) and dropped per reason (`train/groups_dropped/<reason>`)."""
    out = {f"train/groups_dropped/{reason}": float(count) for reason, count in dropped.items()}
    kept = num_groups - sum(dropped.values())
    out["train/groups_kept_fraction"] = kept / num_groups if num_groups else 0.0
    return out


def evaluation_summary(rows: list, version: str) -> dict[str, float]:
    """`eval/`: the mean of each NAVSIM column over scenes scored without error, and the failure count.

    rows: per scene, the scorer's result list (one dict per plan) or an exception.
    """
    columns = V1_COLUMNS if version == "v1" else V2_COLUMNS
    values: dict[str, list[float]] = defaultdict(list)
    failed = 0
    for row in rows:
        if isinstance(row, Exception):
            failed += 1
            continue
        for key in columns:
            value = row[0].get(key)
            if value is not None:
                values[key].append(float(value))
    out = {f"eval/{k}": float(np.mean(v)) for k, v in values.items()}
    out["eval/failed_scenes"] = float(failed)
    out["eval/num_scenes"] = float(len(rows) - failed)
    return out
