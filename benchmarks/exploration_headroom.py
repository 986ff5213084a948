"""How much can GRPO gain from the plans its rollouts draw? For a policy and a test split, per positive scene:

  greedy        v1 PDMS of the deterministic plan (flow_noise 0: what evaluation scores)
  mean          the mean PDMS of a group of G sampled plans at each `--flow-noise` and `--flow-start` (the
                rollout's sampling, one greedy reasoning trace per group as with `rollout.group_reasoning: greedy`;
                start "noisy": a_his + sigma0 eps, "prior": a_his, where the greedy plan starts)
  best-of-G     the PDMS of the group's best plan: GRPO moves probability towards the better samples of a
                group, so a scene whose best sample is no better than the greedy plan gives it nothing to learn
  stuck         the share of scenes where every sample of the group collides at fault (NC = 0) or every one
                leaves the drivable area (DAC = 0): failures that no sample escapes
  inside        on negative / recovery scenes (`--sample-types neg` or `rec`): the share of samples inside the
                shaping region of `negative_l2` / `recovery_l2` (default kwargs), as the scorer computes it; for
                an SFT policy, the share at the very start of GRPO, over every such scene of the split

per scenario family and over all scenes, beside the ground truth (the expert's plan). Prints a table and
writes its numbers as JSON with `--out`.

    python benchmarks/exploration_headroom.py --checkpoint runs/demo/sft_expert/policy \\
        --scenes runs/demo/data/test [--group-size 8] [--flow-noise 0.5,1.0] [--flow-start noisy,prior]
        [--sample-types pos] [--out FILE.json]
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

from rewards.builtin import negative_l2, recovery_l2
from rewards.pdm import PDMScorer
from rewards.registry import ScoringInput
from rl.evaluate import ground_truth_plan, iter_scenes
from rl.policy import SpanVLAPolicy
from rl.policy.config import FLOW_STARTS
from rl.tracking import strict_json


def measure(policy: SpanVLAPolicy, scenes, group_size: int, samplers: Sequence[tuple[str, float]],
            seed: int) -> list[dict]:
    """One row per scene: its family, the v1 PDMS of the expert's and the greedy plan, and per sampler
    (start, noise) the group's mean / best PDMS, whether every sample collides or leaves the drivable area."""
    scorer = PDMScorer("v1")
    rows = []
    for i, scene in enumerate(scenes):
        prepared = scorer.prepare(scene)
        greedy = policy.plan([scene], action_source="expert").trajectories  # (1, 8, 3) ego frame
        row = {"token": scene.token, "family": scene.family,
               "ground_truth": scorer.score(prepared, ground_truth_plan(scene)[None])[0]["PDMS"],
               "greedy": scorer.score(prepared, greedy)[0]["PDMS"]}
        for start, noise in samplers:
            group = policy.sample_group(scene, group_size, temperature=1.0, top_p=1.0, flow_noise=noise,
                                        action_source="expert", seed=seed + i, group_reasoning="greedy",
                                        flow_start=start)
            plans = [s.trajectory for s in group.samples]
            results = scorer.score(prepared, np.stack(plans))
            scores = np.array([r["PDMS"] for r in results])
            nc = np.array([r["NC"] for r in results])
            dac = np.array([r["DAC"] for r in results])
            row[_column(start, noise)] = {"mean": float(scores.mean()), "best": float(scores.max()),
                                          "stuck": bool((nc == 0).all() or (dac == 0).all()),
                                          "spread": float(scores.std()),
                                          "inside": _inside_share(scene, plans)}
        rows.append(row)
    return rows


SHAPING_TERMS = {"neg": negative_l2, "rec": recovery_l2}


def _inside_share(scene, trajectories) -> Optional[float]:
    """The share of `trajectories` inside the scene's shaping region (None on a positive scene)."""
    term = SHAPING_TERMS.get(scene.sample_type)
    if term is None:
        return None
    return float(np.mean([r["inside_share"] for r in term([ScoringInput(scene, t) for t in trajectories])]))


def _column(start: str, noise: float) -> str:
    return f"{start} a={noise}"


def summarise(rows: list[dict], samplers: Sequence[tuple[str, float]]) -> dict:
    """Per family and "all": mean ground-truth and greedy PDMS, and per sampler mean / best-of-G / stuck share."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["family"]].append(r)
        groups["all"].append(r)
    table = {}
    for family, part in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        entry = {"scenes": len(part), "ground_truth": float(np.mean([r["ground_truth"] for r in part])),
                 "greedy": float(np.mean([r["greedy"] for r in part]))}
        for start, noise in samplers:
            cells = [r[_column(start, noise)] for r in part]
            entry[_column(start, noise)] = {k: float(np.mean([c[k] for c in cells])) for k in ("mean", "best", "stuck")}
            inside = [c["inside"] for c in cells if c.get("inside") is not None]
            entry[_column(start, noise)]["inside"] = float(np.mean(inside)) if inside else None
        table[family] = entry
    return table


def format_table(table: dict, samplers: Sequence[tuple[str, float]], group_size: int) -> str:
    head = ["family", "scenes", "expert", "greedy"]
    for start, noise in samplers:
        name = _column(start, noise)
        head += [f"mean {name}", f"best-of-{group_size} {name}", f"stuck {name}", f"inside {name}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family, e in table.items():
        cells = [family, str(e["scenes"]), f"{e['ground_truth']:.3f}", f"{e['greedy']:.3f}"]
        for start, noise in samplers:
            n = e[_column(start, noise)]
            cells += [f"{n['mean']:.3f}", f"{n['best']:.3f}", f"{n['stuck']:.2f}",
                      "-" if n["inside"] is None else f"{n['inside']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved policy directory (SFT or GRPO)")
    parser.add_argument("--scenes", required=True, help="a dataset split (the scenes of --sample-types are used)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--flow-noise", default="0.5", help="comma-separated noise levels a in [0, 1]")
    parser.add_argument("--flow-start", default="noisy",
                        help=f"comma-separated flow starts: {', '.join(FLOW_STARTS)}")
    parser.add_argument("--sample-types", default="pos", help="comma-separated: pos, neg, rec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-scenes", type=int, help="only the first N positive scenes")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    noises = [float(x) for x in args.flow_noise.split(",") if x.strip()]
    starts = [x.strip() for x in args.flow_start.split(",") if x.strip()]
    if not set(starts) <= set(FLOW_STARTS):
        parser.error(f"--flow-start {args.flow_start!r}: expected some of {FLOW_STARTS}")
    samplers = [(start, noise) for start in starts for noise in noises]
    torch.manual_seed(args.seed)
    policy = SpanVLAPolicy.load(args.checkpoint, device="cpu").eval()
    total, stream = iter_scenes(args.scenes, [t.strip() for t in args.sample_types.split(",") if t.strip()])
    scenes = [s for _, s in zip(range(args.max_scenes or total), stream)]
    began = time.perf_counter()
    with torch.no_grad():
        rows = measure(policy, scenes, args.group_size, samplers, args.seed)
    table = summarise(rows, samplers)
    print(format_table(table, samplers, args.group_size))
    if args.out:
        report = {"checkpoint": args.checkpoint, "scenes": args.scenes, "group_size": args.group_size,
                  "flow_noise": noises, "flow_start": starts, "sample_types": args.sample_types, "seed": args.seed,
                  "seconds": time.perf_counter() - began, "table": table, "rows": rows}
        with open(args.out, "w") as f:
            f.write(strict_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
