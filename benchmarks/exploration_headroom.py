"""How much can GRPO gain from the plans its rollouts draw? For a policy and a test split, per positive scene:

  greedy        v1 PDMS of the deterministic plan (flow_noise 0: what evaluation scores)
  mean          the mean PDMS of a group of G sampled plans at each `--flow-noise` (the rollout's sampling,
                one greedy reasoning trace per group as with `rollout.group_reasoning: greedy`)
  best-of-G     the PDMS of the group's best plan: GRPO moves probability towards the better samples of a
                group, so a scene whose best sample is no better than the greedy plan gives it nothing to learn
  stuck         the share of scenes where every sample of the group collides at fault (NC = 0) or every one
                leaves the drivable area (DAC = 0): failures that no sample escapes

per scenario family and over all scenes, beside the ground truth (the expert's plan). Prints a table and
writes its numbers as JSON with `--out`.

    python benchmarks/exploration_headroom.py --checkpoint runs/demo/sft_expert/policy \\
        --scenes runs/demo/data/test [--group-size 8] [--flow-noise 0.5,1.0] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from rewards.pdm import PDMScorer
from rl.evaluate import ground_truth_plan, iter_scenes
from rl.policy import SpanVLAPolicy
from rl.tracking import strict_json


def score_plans(scorer: PDMScorer, scene, plans: np.ndarray) -> list[dict]:
    """v1 results of plans (G, 8, 3), ego frame, 0.5 s apart."""
    return scorer.score(scorer.prepare(scene), plans)


def measure(policy: SpanVLAPolicy, scenes, group_size: int, noises: Sequence[float], seed: int) -> dict[str, list]:
    """One row per scene: its family and, per column, the v1 PDMS (and NC / DAC of each sample)."""
    scorer = PDMScorer("v1")
    rows = []
    for i, scene in enumerate(scenes):
        row = {"token": scene.token, "family": scene.family,
               "ground_truth": score_plans(scorer, scene, ground_truth_plan(scene)[None])[0]["PDMS"],
               "greedy": score_plans(scorer, scene, policy.plan([scene], action_source="expert").trajectories)[0]["PDMS"]}
        for noise in noises:
            group = policy.sample_group(scene, group_size, temperature=1.0, top_p=1.0, flow_noise=noise,
                                        action_source="expert", seed=seed + i, group_reasoning="greedy")
            results = score_plans(scorer, scene, np.stack([s.trajectory for s in group.samples]))
            scores = np.array([r["PDMS"] for r in results])
            nc = np.array([r["NC"] for r in results])
            dac = np.array([r["DAC"] for r in results])
            row[f"noise_{noise}"] = {"mean": float(scores.mean()), "best": float(scores.max()),
                                     "stuck": bool((nc == 0).all() or (dac == 0).all()),
                                     "spread": float(scores.std())}
        rows.append(row)
    return rows


def summarise(rows: list[dict], noises: Sequence[float]) -> dict:
    """Per family and "all": mean ground-truth and greedy PDMS, and per noise mean / best-of-G / stuck share."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["family"]].append(r)
        groups["all"].append(r)
    table = {}
    for family, part in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        entry = {"scenes": len(part), "ground_truth": float(np.mean([r["ground_truth"] for r in part])),
                 "greedy": float(np.mean([r["greedy"] for r in part]))}
        for noise in noises:
            cells = [r[f"noise_{noise}"] for r in part]
            entry[f"noise_{noise}"] = {k: float(np.mean([c[k] for c in cells])) for k in ("mean", "best", "stuck")}
        table[family] = entry
    return table


def format_table(table: dict, noises: Sequence[float], group_size: int) -> str:
    head = ["family", "scenes", "expert", "greedy"]
    for noise in noises:
        head += [f"mean a={noise}", f"best-of-{group_size} a={noise}", f"stuck a={noise}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family, e in table.items():
        cells = [family, str(e["scenes"]), f"{e['ground_truth']:.3f}", f"{e['greedy']:.3f}"]
        for noise in noises:
            n = e[f"noise_{noise}"]
            cells += [f"{n['mean']:.3f}", f"{n['best']:.3f}", f"{n['stuck']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved policy directory (SFT or GRPO)")
    parser.add_argument("--scenes", required=True, help="a dataset split (its positive scenes are used)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--flow-noise", default="0.5", help="comma-separated noise levels a in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-scenes", type=int, help="only the first N positive scenes")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    noises = [float(x) for x in args.flow_noise.split(",") if x.strip()]
    torch.manual_seed(args.seed)
    policy = SpanVLAPolicy.load(args.checkpoint, device="cpu").eval()
    total, stream = iter_scenes(args.scenes, ["pos"])
    scenes = [s for i, s in zip(range(args.max_scenes or total), stream)]
    start = time.perf_counter()
    with torch.no_grad():
        rows = measure(policy, scenes, args.group_size, noises, args.seed)
    table = summarise(rows, noises)
    print(format_table(table, noises, args.group_size))
    if args.out:
        report = {"checkpoint": args.checkpoint, "scenes": args.scenes, "group_size": args.group_size,
                  "flow_noise": noises, "seed": args.seed, "seconds": time.perf_counter() - start,
                  "table": table, "rows": rows}
        with open(args.out, "w") as f:
            f.write(strict_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
