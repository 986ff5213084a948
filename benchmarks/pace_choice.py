"""Does a policy's pace head (`rl.policy.pace`, `rollout.pace_std`) choose its speed by scene? For a paced policy
and a split, per positive scene, from the flow's plan before the pace ("the plan") and the pace the head chose:

  chosen         the fraction of the plan's speed the head drives it at (its mean pace, as evaluation drives it)
  plan           v1 PDMS of the plan as the flow gives it (speed 1)
  paced          v1 PDMS of the plan at the chosen pace: what evaluation scores
  same pace      v1 PDMS when every scene drives at the split's mean chosen fraction: the scene-blind control with
                 the same average speed. paced - same pace is what choosing by scene is worth
  best single    the best of `rl.evaluate.SPEED_SCALES` for every scene alike (chosen on this split: an upper bound
                 for a scene-blind speed)
  oracle         each scene at its own best scale of `SPEED_SCALES` (an upper bound for choosing by scene)
  rank corr.     Spearman correlation between the chosen fraction and each scene's best scale (ties at the larger
                 scale): above 0, the head slows where slowing pays

per scenario family and over all scenes. Prints a table and writes its numbers as JSON with `--out`.

    python benchmarks/pace_choice.py --checkpoint runs/demo/grpo/policy --scenes runs/demo/data/test [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from typing import Optional

import numpy as np
from scipy.stats import spearmanr

from rewards.pdm import PDMScorer
from rl.evaluate import SPEED_SCALES, PreparedScenes, best_scales, readable_scenes, slowed_scores
from rl.policy.pace import drive_at_pace, pace_scales
from rl.tracking import strict_json


def summarise(rows: list[dict], same_pace: np.ndarray, scores: np.ndarray, scales: tuple[float, ...]) -> dict:
    """Per family and "all": the means of each row's fields, the oracle, the best single scale (over the group's
    scenes) and the rank correlation of chosen against best scale."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["family"]].append(i)
        groups["all"].append(i)
    table = {}
    for name, idx in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        sub = scores[idx]
        single = int(np.argmax(sub.mean(0)))
        chosen = np.array([rows[i]["chosen"] for i in idx])
        best = np.array([rows[i]["best_scale"] for i in idx])
        corr = spearmanr(chosen, best).statistic if np.ptp(chosen) > 0 and np.ptp(best) > 0 else None
        table[name] = {
            "scenes": len(idx),
            "chosen": float(chosen.mean()),
            "plan": float(np.mean([rows[i]["plan"] for i in idx])),
            "paced": float(np.mean([rows[i]["paced"] for i in idx])),
            "same_pace": float(same_pace[idx].mean()),
            "best_single": float(sub.mean(0)[single]),
            "best_single_scale": float(scales[single]),
            "oracle": float(sub.max(1).mean()),
            "rank_corr": None if corr is None or not np.isfinite(corr) else float(corr),
        }
    return table


def format_table(table: dict) -> str:
    head = (f"{'family':<20} {'scenes':>6} {'chosen':>7} {'plan':>6} {'paced':>6} {'same pace':>9} "
            f"{'best single':>14} {'oracle':>6} {'rank corr.':>10}")
    lines = [head, "-" * len(head)]
    for name, t in table.items():
        corr = "-" if t["rank_corr"] is None else f"{t['rank_corr']:+.2f}"
        lines.append(f"{name:<20} {t['scenes']:>6} {t['chosen']:>7.2f} {t['plan']:>6.3f} {t['paced']:>6.3f} "
                     f"{t['same_pace']:>9.3f} {t['best_single']:>7.3f} at {t['best_single_scale']:<3g} "
                     f"{t['oracle']:>6.3f} {corr:>10}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    from rl.policy import SpanVLAPolicy
    from rl.policy.policy_dir import CheckpointError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved policy with a pace head")
    parser.add_argument("--scenes", required=True, help="a split folder (its positive scenes are used)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(1)
    try:
        policy = SpanVLAPolicy.load(args.checkpoint).eval()
    except CheckpointError as err:
        print(f"--checkpoint {args.checkpoint}: {err}", file=sys.stderr)
        return 2
    if policy.expert.pace_head is None:
        print(f"--checkpoint {args.checkpoint}: the policy has no pace head (policy.expert.pace is false)",
              file=sys.stderr)
        return 2
    scenes = readable_scenes(args.scenes)
    if not scenes:
        print(f"--scenes {args.scenes}: no readable positive scene", file=sys.stderr)
        return 2
    e = policy.config.expert
    plans, chosen = [], []
    for i in range(0, len(scenes), args.batch_size):
        result = policy.plan(scenes[i:i + args.batch_size], action_source="expert", drive_pace=False)
        plans.append(result.trajectories)
        chosen.append(pace_scales(result.paces, e.pace_min_scale))
    plans, chosen = np.concatenate(plans), np.concatenate(chosen)
    scorer, prepared = PDMScorer("v1"), PreparedScenes()
    scales = tuple(SPEED_SCALES)
    scores = slowed_scores(plans, scenes, scales, scorer, prepared, e.interval_s)  # (S, scales)
    paced_plans = drive_at_pace(plans, chosen, e.interval_s)
    paced_scores = np.array([scorer.score(prepared.get(scorer, s), p[None], interval_s=e.interval_s)[0]["PDMS"]
                             for s, p in zip(scenes, paced_plans)])
    same = float(chosen.mean())
    same_pace = slowed_scores(plans, scenes, [same], scorer, prepared, e.interval_s)[:, 0]
    best = best_scales(scores, scales)
    rows = [{"token": s.token, "family": s.family, "chosen": float(c), "best_scale": float(b), "plan": float(r[0]),
             "paced": float(p)} for s, c, b, r, p in zip(scenes, chosen, best, scores, paced_scores)]
    table = summarise(rows, same_pace, scores, scales)
    print(format_table(table))
    if args.out:
        record = {"checkpoint": args.checkpoint, "scenes": args.scenes, "speed_scales": list(scales),
                  "same_pace_scale": same, "seconds": time.perf_counter() - began, "table": table, "rows": rows}
        with open(args.out, "w") as f:
            f.write(strict_json(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
