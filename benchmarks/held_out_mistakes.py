"""Does a policy still drive the logged mistakes on scenes it never trained on? For each policy and the negative
and recovery scenes of a held-out split (the test split: its negatives are logged mistakes of scenes no policy
saw), the deterministic plan that evaluation drives, and per scene:

  neg inside    on a negative scene: 1 when the plan is inside `negative_l2`'s region (default kwargs, region
                "separation": closer to the logged mistake than the expert's plan is), i.e. the policy still
                drives towards the mistake there; the share over scenes is what a negative sample should lower
  neg term      `negative_l2`'s value there (1 on the mistake, 0 at the expert's distance or further)
  rec inside    on a recovery scene: 1 when the plan is closer to the expert's correction than not correcting is;
                the share is what a recovery sample should raise
  rec term      `recovery_l2`'s value there
  region        the region's radius d (m): for a negative, the expert's plan's ADE to the mistake; for a recovery,
                not correcting's ADE to the correction; beside it the plan's ADE to the reference (the mistake or
                the correction) and, on negatives, to the expert's plan: a policy whose plans lie further from the
                expert than the mistake does cannot tell the two apart

each measured twice: "driven", the plan as the pace head drives it (what evaluation scores), and "plan", the flow's
plan before the pace (what the flow itself learned; the same for a policy without a pace head). Per scenario
family and over all scenes; prints a table and writes its numbers as JSON with `--out`.

    python benchmarks/held_out_mistakes.py --scenes runs/demo/data/test \\
        --checkpoints runs/demo/sft_expert/policy,runs/demo/grpo/ckpt/step_160/policy --names sft,grpo \\
        [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from typing import Optional

import numpy as np
import torch

from rewards.builtin import negative_l2, recovery_l2
from rewards.registry import ScoringInput
from rewards.shaping import MEASURES, average_displacement
from rl.evaluate import EvaluationError, iter_scenes, load_planner, named_checkpoints
from rl.tracking import strict_json

TERMS = {"neg": negative_l2, "rec": recovery_l2}


def scene_rows(planner, scenes, batch_size: int = 8) -> list[dict]:
    """One row per negative / recovery scene: its family and type, and per measure the term's value and whether
    the plan is inside the term's region. `planner` is an `rl.evaluate.Planner` of a policy."""
    rows = []
    for start in range(0, len(scenes), batch_size):
        batch = scenes[start:start + batch_size]
        result = planner.policy.plan(batch, action_source="expert")
        driven = result.trajectories
        plans = driven if result.plans is None else result.plans
        for scene, plan, drive in zip(batch, plans, driven):
            row = {"token": scene.token, "family": scene.family, "type": scene.sample_type}
            for measure in MEASURES:
                [out] = TERMS[scene.sample_type]([ScoringInput(scene, drive, plan=plan)], measure=measure)
                row[measure] = {"term": float(out["reward"]), "inside": float(out["inside_share"]),
                                "ade_m": float(out["ade_m"])}
                if scene.sample_type == "neg":  # how far the plan is from the expert's, beside the mistake's
                    row[measure]["ade_expert_m"] = average_displacement(plan if measure == "plan" else drive,
                                                                        scene.future)
            row["region_m"] = float(out["region_m"])
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per sample type, per family and "all": scenes, and per measure the mean inside share, term and ADE (m)."""
    table = {}
    for sample_type in TERMS:
        groups = defaultdict(list)
        for r in rows:
            if r["type"] == sample_type:
                groups[r["family"]].append(r)
                groups["all"].append(r)
        table[sample_type] = {
            family: {"scenes": len(part), "region_m": float(np.mean([r["region_m"] for r in part])),
                     **{m: {k: float(np.mean([r[m][k] for r in part])) for k in r0[m]} for m in MEASURES}}
            for family, part in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])) for r0 in part[:1]}
    return table


def format_table(tables: dict[str, dict]) -> str:
    head = ["policy", "type", "family", "scenes", "inside (driven)", "term (driven)", "inside (plan)", "term (plan)",
            "region (m)", "plan's ADE to the reference (m)", "plan's ADE to the expert (m)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, table in tables.items():
        for sample_type, families in table.items():
            for family, e in families.items():
                lines.append("| " + " | ".join([
                    name, sample_type, family, str(e["scenes"]), f"{e['driven']['inside']:.2f}",
                    f"{e['driven']['term']:.3f}", f"{e['plan']['inside']:.2f}", f"{e['plan']['term']:.3f}",
                    f"{e['region_m']:.2f}", f"{e['plan']['ade_m']:.2f}",
                    f"{e['plan']['ade_expert_m']:.2f}" if "ade_expert_m" in e["plan"] else "-"]) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", required=True, help="a held-out dataset split (its neg and rec scenes are used)")
    parser.add_argument("--checkpoints", required=True, help="comma-separated policy directories")
    parser.add_argument("--names", help="comma-separated names of --checkpoints (default: their paths)")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    try:
        policies = named_checkpoints(args.checkpoints, args.names)
    except ValueError as err:
        parser.error(str(err))
    began = time.perf_counter()
    try:
        _, stream = iter_scenes(args.scenes, list(TERMS))
        scenes = list(stream)
        if not scenes:
            raise EvaluationError(f"--scenes {args.scenes}: no negative or recovery scenes")
        tables, rows = {}, {}
        with torch.no_grad():
            for name, path in policies:
                rows[name] = scene_rows(load_planner(path, None, "expert"), scenes)
                tables[name] = summarise(rows[name])
    except (EvaluationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(tables))
    if args.out:
        report = {"scenes": args.scenes, "checkpoints": dict(policies),
                  "seconds": time.perf_counter() - began, "table": tables, "rows": rows}
        with open(args.out, "w") as f:
            f.write(strict_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
