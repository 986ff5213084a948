"""Where does post-training move the evaluated plan? For a test split, the deterministic plans of a reference
policy (SFT) and of each other policy (GRPO runs), and per other policy:

  ADE           mean displacement (m) over the 8 poses between its plan and the reference's, per scene, averaged
  final dx, dy  the final pose's shift (m, ego frame: x forward, y left), mean and sample std over scenes
  common share  the share of the mean squared shift that one common offset explains: |mean_s d_s|^2 / mean_s |d_s|^2
                over every pose (d_s: a scene's (8, 2) shift). 1 = every plan moved the same way (a scene-blind
                bias such as "drive slower"), near 0 = each scene moved its own way
  residual      root mean square (m) of the shifts left after the common offset: the scene-specific part

per scenario family and over all scenes; and the v1 PDMS of each policy's plans. With `--before-pace` the plans are
the flow's before a pace head drives them (`rl.policy.pace`): what the flow itself learned, without the slow-down.
Prints a table and writes its numbers as JSON with `--out`.

    python benchmarks/plan_shift.py --scenes runs/demo/data/test --reference runs/demo/sft_expert/policy \\
        --checkpoints runs/demo/grpo/ckpt/step_160/policy[,...] [--names grpo,...] [--before-pace] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from typing import Optional

import numpy as np
import torch

from rewards.pdm import PDMScorer
from rl.evaluate import iter_scenes, load_planner, named_checkpoints, plan_scenes
from rl.tracking import strict_json


def shift_statistics(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How `other` plans (S, N, >=2) differ from `reference` plans (S, N, >=2) (ego frame, m; x, y used).

    Returns ade (mean over scenes of the mean pose displacement), final_dx / final_dy mean and sample std
    (ddof 1; 0 for one scene), common_share = |mean_s d_s|^2 / mean_s |d_s|^2 over all poses (NaN when no
    plan moved) and residual_m = sqrt(mean_s |d_s - mean d|^2 / N) (per pose).
    """
    d = np.asarray(other, dtype=np.float64)[..., :2] - np.asarray(reference, dtype=np.float64)[..., :2]  # (S, N, 2)
    scenes, poses = d.shape[0], d.shape[1]
    common = d.mean(0)  # (N, 2): the offset every scene shares
    total = float((d ** 2).sum((1, 2)).mean())
    ddof = 1 if scenes > 1 else 0
    return {
        "scenes": scenes,
        "ade": float(np.linalg.norm(d, axis=-1).mean()),
        "final_dx_mean": float(d[:, -1, 0].mean()), "final_dx_std": float(d[:, -1, 0].std(ddof=ddof)),
        "final_dy_mean": float(d[:, -1, 1].mean()), "final_dy_std": float(d[:, -1, 1].std(ddof=ddof)),
        "common_share": float((common ** 2).sum() / total) if total > 0 else float("nan"),
        "residual_m": float(np.sqrt(((d - common) ** 2).sum((1, 2)).mean() / poses)),
    }


def measure(reference: np.ndarray, plans: dict[str, np.ndarray], families: list[str], scores: dict[str, np.ndarray]) -> dict:
    """Per other policy: per family and "all", `shift_statistics` against the reference and both mean PDMS."""
    index = defaultdict(list)
    for i, f in enumerate(families):
        index[f].append(i)
    index["all"] = list(range(len(families)))
    table = {}
    for name, plan in plans.items():
        table[name] = {f: {**shift_statistics(reference[rows], plan[rows]),
                           "reference PDMS": float(scores["reference"][rows].mean()),
                           "PDMS": float(scores[name][rows].mean())}
                       for f, rows in sorted(index.items(), key=lambda kv: (kv[0] == "all", kv[0]))}
    return table


def format_table(table: dict) -> str:
    head = ["policy", "family", "scenes", "PDMS ref -> policy", "ADE (m)", "final dx (m)", "final dy (m)",
            "common share", "residual (m)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, families in table.items():
        for f, e in families.items():
            lines.append("| " + " | ".join([
                name, f, str(e["scenes"]), f"{e['reference PDMS']:.3f} -> {e['PDMS']:.3f}", f"{e['ade']:.2f}",
                f"{e['final_dx_mean']:+.2f} +- {e['final_dx_std']:.2f}", f"{e['final_dy_mean']:+.2f} +- {e['final_dy_std']:.2f}",
                f"{e['common_share']:.2f}", f"{e['residual_m']:.2f}"]) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", required=True, help="a dataset split (its positive scenes are used)")
    parser.add_argument("--reference", required=True, help="the policy the others are compared with (SFT)")
    parser.add_argument("--checkpoints", required=True, help="comma-separated policy directories")
    parser.add_argument("--names", help="comma-separated names of --checkpoints (default: their paths)")
    parser.add_argument("--before-pace", action="store_true",
                        help="compare the flow's plans before a pace head drives them slower (what the flow itself "
                             "learned; PDMS is then of those plans); default: the plans as evaluation drives them")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    try:
        policies = named_checkpoints(args.checkpoints, args.names)
    except ValueError as err:
        parser.error(str(err))
    began = time.perf_counter()
    _, stream = iter_scenes(args.scenes, ["pos"])
    scenes = list(stream)
    scorer = PDMScorer("v1")
    prepared = [scorer.prepare(s) for s in scenes]
    plans, scores = {}, {}
    with torch.no_grad():
        for name, path in [("reference", args.reference), *policies]:
            planner = load_planner(path, None, "expert")
            planner.drive_pace = not args.before_pace
            plans[name] = plan_scenes(planner, scenes)  # by default what evaluation scores
            scores[name] = np.array([scorer.score(p, plan[None])[0]["PDMS"] for p, plan in zip(prepared, plans[name])])
    reference = plans.pop("reference")
    table = measure(reference, plans, [s.family for s in scenes], scores)
    print(format_table(table))
    if args.out:
        report = {"scenes": args.scenes, "reference": args.reference, "before_pace": args.before_pace,
                  "checkpoints": dict(policies), "seconds": time.perf_counter() - began, "table": table}
        with open(args.out, "w") as f:
            f.write(strict_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
