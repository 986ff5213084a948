"""How worth learning is the synthetic world? Per scenario family, the NAVSIM scores (PDMS v1, EPDMS v2) of

  expert     the expert's ground truth (first 8 poses of `Scene.future`) on positive scenes,
  negative   the negative trajectory of the `neg` scene of the same seed,
  recovery   the expert's correction on the `rec` scene of the same seed,
  const_vel  a constant-velocity baseline: straight ahead at the current speed,

plus the gap expert - const_vel (the claim: >= 0.25 PDMS overall, expert mean PDMS >= 0.95).

    python benchmarks/world_quality.py --seeds 20 [--families lane_follow,curve] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

from rewards.pdm.scorer import PDMScorer
from sim import conventions as C
from sim.scenarios import FAMILIES, make_scene

ROWS = ("expert", "negative", "recovery", "const_vel")


def constant_velocity_plan(scene) -> np.ndarray:
    """(8, 3) rear-axle poses straight ahead at the current speed (ego frame)."""
    t = C.future_times(C.NAVSIM_PLAN_POSES)
    return np.stack([scene.ego.vx * t, np.zeros_like(t), np.zeros_like(t)], axis=-1)


def _score(scorers: dict, scene, plan: np.ndarray) -> dict[str, float]:
    out = {}
    for version, scorer in scorers.items():
        prepared = scorer.prepare(scene)
        result = scorer.score(prepared, plan[None])[0]
        out[version] = float(result["PDMS" if version == "v1" else "EPDMS"])
    return out


def evaluate(families: Sequence[str], seeds: Sequence[int]) -> dict:
    scorers = {"v1": PDMScorer("v1"), "v2": PDMScorer("v2")}
    table: dict = {}
    for family in families:
        values = {row: {"v1": [], "v2": []} for row in ROWS}
        started = time.perf_counter()
        for seed in seeds:
            pos = make_scene(family, seed, "pos")
            neg = make_scene(family, seed, "neg")
            rec = make_scene(family, seed, "rec")
            plans = {
                "expert": (pos, pos.future[: C.NAVSIM_PLAN_POSES]),
                "negative": (neg, neg.negative_trajectory[: C.NAVSIM_PLAN_POSES]),
                "recovery": (rec, rec.recovery_trajectory[: C.NAVSIM_PLAN_POSES]),
                "const_vel": (pos, constant_velocity_plan(pos)),
            }
            for row, (scene, plan) in plans.items():
                for version, value in _score(scorers, scene, plan).items():
                    values[row][version].append(value)
        table[family] = {
            row: {version: float(np.mean(v)) for version, v in per.items()} for row, per in values.items()
        }
        table[family]["seconds"] = time.perf_counter() - started
    overall = {row: {v: float(np.mean([table[f][row][v] for f in families])) for v in ("v1", "v2")} for row in ROWS}
    return {"families": table, "overall": overall, "seeds": list(seeds)}


def print_table(report: dict) -> None:
    header = f"{'family':<20}" + "".join(f"{row + ' v1':>14}{row + ' v2':>14}" for row in ROWS) + f"{'gap v1':>9}"
    print(header)
    print("-" * len(header))
    for family, rows in list(report["families"].items()) + [("OVERALL", report["overall"])]:
        cells = "".join(f"{rows[row]['v1']:>14.3f}{rows[row]['v2']:>14.3f}" for row in ROWS)
        gap = rows["expert"]["v1"] - rows["const_vel"]["v1"]
        print(f"{family:<20}{cells}{gap:>9.3f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per family (0 .. N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated family names")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    report = evaluate(families, range(args.first_seed, args.first_seed + args.seeds))
    print_table(report)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
