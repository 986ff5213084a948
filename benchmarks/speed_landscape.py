"""Can GRPO's rollouts see the gain of driving slower? For a policy and a split, per positive scene:

  PDMS by scale  v1 PDMS of the deterministic plan driven along its path at s times its speed, for each s of
                 `rl.evaluate.SPEED_SCALES` (`rl.evaluate.slowed`): the reward as a function of speed alone
  oracle         the mean PDMS when each scene drives at its own best scale (an upper bound on what speed alone
                 gives a scene-aware policy), beside the best single scale for every scene (the scene-blind one)
  helps at 0.9   the share of scenes where the plan at 0.9 x speed scores more than at 1 (by more than
                 `--margin`): a gain a local step can find
  only below 0.9 the share where 0.9 does not help but a lower scale does: a gain behind a step the rollouts
                 must jump over (PDMS is flat or falls first, then rises when a collision is avoided)
  hurts at 0.9   the share where 0.9 scores less than 1 (by more than `--margin`): there the reward's local slope
                 pushes towards faster
  sample reach   how much slower or faster a group of G sampled plans drives than the deterministic plan: each
                 sample's distance to its final pose over the deterministic plan's (about the speed scale it
                 explores; a path length would count the samples' lateral jitter as speed), the mean of the
                 groups' 5th and 95th percentiles
  slope          over groups whose PDMS spread > 0, the mean correlation between a sample's length ratio and its
                 PDMS: below 0, the group's slower samples score higher and GRPO's advantage points to slowing

per scenario family and over all scenes. Prints a table and writes its numbers as JSON with `--out`.

    python benchmarks/speed_landscape.py --checkpoint runs/demo/sft_expert/policy --scenes runs/demo/data/test \\
        [--group-size 8] [--flow-noise 0.5] [--flow-start noisy] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from rewards.pdm import PDMScorer
from rl.evaluate import (
    SPEED_SCALES,
    PreparedScenes,
    load_planner,
    plan_scenes,
    readable_scenes,
    slowed_scores,
)
from rl.policy.config import FLOW_STARTS
from rl.tracking import strict_json


def reach(plans: np.ndarray) -> np.ndarray:
    """Distance (m) from the ego origin to the final pose of plans (..., N, >=2) (ego frame)."""
    return np.linalg.norm(np.asarray(plans, dtype=np.float64)[..., -1, :2], axis=-1)


def slope(ratios: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Pearson correlation of a group's length ratios and PDMS; None where either does not vary."""
    if np.ptp(scores) <= 0.0 or np.ptp(ratios) <= 0.0:
        return None
    return float(np.corrcoef(ratios, scores)[0, 1])


def scene_row(by_scale: dict[float, float], ratios: np.ndarray, scores: np.ndarray, margin: float) -> dict:
    """One scene's landscape: its PDMS per scale (scale 1 included), its group's length ratios and PDMS."""
    base, near = by_scale[1.0], by_scale[0.9]
    best = max(by_scale.values())
    return {
        "PDMS by scale": {f"{s:g}": v for s, v in by_scale.items()},
        "oracle": best,
        "helps at 0.9": near > base + margin,
        "only below 0.9": near <= base + margin and best > base + margin,
        "hurts at 0.9": near < base - margin,
        "reach low": float(np.percentile(ratios, 5)), "reach high": float(np.percentile(ratios, 95)),
        "slope": slope(ratios, scores),
    }


def measure(planner, scenes, scales: Sequence[float], group_size: int, flow_noise: float, flow_start: str,
            seed: int, margin: float) -> list[dict]:
    """One row per scene (`scene_row`, with its token and family); `planner`: a policy's `rl.evaluate.Planner`."""
    scorer, prepared = PDMScorer("v1"), PreparedScenes()
    plans = plan_scenes(planner, scenes)  # (S, N, 3): the deterministic plans evaluation scores
    ordered = sorted({1.0, 0.9, *scales}, reverse=True)
    by_scales = slowed_scores(plans, scenes, ordered, scorer, prepared, planner.interval_s)  # (S, scales)
    rows = []
    for i, (scene, plan, row) in enumerate(zip(scenes, plans, by_scales)):
        by_scale = dict(zip(ordered, row.tolist()))
        group = planner.policy.sample_group(scene, group_size, flow_noise=flow_noise, action_source="expert",
                                            seed=seed + i, group_reasoning="greedy", flow_start=flow_start)
        samples = np.stack([s.trajectory for s in group.samples])
        scores = np.array([r["PDMS"] for r in scorer.score(prepared.get(scorer, scene), samples,
                                                           interval_s=planner.interval_s)])
        ratios = reach(samples) / max(float(reach(plan)), 1e-6)
        rows.append({"token": scene.token, "family": scene.family,
                     **scene_row(by_scale, ratios, scores, margin)})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per family and "all": mean PDMS per scale, the best single scale and its PDMS, the oracle, the shares
    and the sample reach and slope."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["family"]].append(r)
        groups["all"].append(r)
    table = {}
    for family, part in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        scales = list(part[0]["PDMS by scale"])
        by_scale = {s: float(np.mean([r["PDMS by scale"][s] for r in part])) for s in scales}
        best = max(scales, key=lambda s: (round(by_scale[s], 12), float(s)))
        slopes = [r["slope"] for r in part if r["slope"] is not None]
        table[family] = {
            "scenes": len(part), "PDMS by scale": by_scale, "best scale": float(best), "PDMS at best scale": by_scale[best],
            "oracle": float(np.mean([r["oracle"] for r in part])),
            **{k: float(np.mean([r[k] for r in part])) for k in ("helps at 0.9", "only below 0.9", "hurts at 0.9",
                                                                  "reach low", "reach high")},
            "slope": float(np.mean(slopes)) if slopes else None, "groups with spread": len(slopes),
        }
    return table


def format_table(table: dict) -> str:
    head = ["family", "scenes", "PDMS at 1", "best single scale", "per-scene best (oracle)", "helps at 0.9",
            "only below 0.9", "hurts at 0.9", "sample reach (x speed)", "slope (groups)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family, e in table.items():
        lines.append("| " + " | ".join([
            family, str(e["scenes"]), f"{e['PDMS by scale']['1']:.3f}",
            f"{e['PDMS at best scale']:.3f} at {e['best scale']:g}", f"{e['oracle']:.3f}",
            f"{e['helps at 0.9']:.0%}", f"{e['only below 0.9']:.0%}", f"{e['hurts at 0.9']:.0%}",
            f"{e['reach low']:.2f} - {e['reach high']:.2f}",
            "-" if e["slope"] is None else f"{e['slope']:+.2f} ({e['groups with spread']})"]) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved policy directory (SFT or GRPO)")
    parser.add_argument("--scenes", required=True, help="a dataset split (its positive scenes are used)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--flow-noise", type=float, default=0.5, help="the rollout's noise level a in [0, 1]")
    parser.add_argument("--flow-start", default="noisy", choices=FLOW_STARTS)
    parser.add_argument("--margin", type=float, default=0.01, help="PDMS difference that counts as a change")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-scenes", type=int, help="only the first N positive scenes")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    planner = load_planner(args.checkpoint, None, "expert")
    scenes = readable_scenes(args.scenes)[: args.max_scenes]
    began = time.perf_counter()
    with torch.no_grad():
        rows = measure(planner, scenes, SPEED_SCALES, args.group_size, args.flow_noise,
                       args.flow_start, args.seed, args.margin)
    table = summarise(rows)
    print(format_table(table))
    if args.out:
        report = {"checkpoint": args.checkpoint, "scenes": args.scenes, "group_size": args.group_size,
                  "flow_noise": args.flow_noise, "flow_start": args.flow_start, "margin": args.margin,
                  "seed": args.seed, "seconds": time.perf_counter() - began, "table": table, "rows": rows}
        with open(args.out, "w") as f:
            f.write(strict_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
