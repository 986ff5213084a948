"""How fast does the synthetic world make scenes (no cameras)? Per family, milliseconds per scene for

  pos alone     `make_scene(family, seed, "pos")` for fresh seeds (layout, expert with its NAVSIM-kinematics
                acceptance check, redraws of rejected layouts, scene assembly, reasoning);
  pos+neg+rec   the three sample types of each seed in a row (they share the base scenario);

against the 20 ms per scene budget (ratio = budget / measured, > 1 is within budget). CPU time of this
process (one thread), so other load on the machine does not count.

    python benchmarks/scenario_generation.py --seeds 20 [--families a,b] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from sim.scenarios import FAMILIES, make_scene  # noqa: E402
from sim.scenarios.generator import base_scenario  # noqa: E402

BUDGET_MS = 20.0


def _cpu_ms(fn, repeats: int) -> float:
    start = time.process_time()
    for i in range(repeats):
        fn(i)
    return (time.process_time() - start) * 1000.0 / repeats


def measure(families: Sequence[str], seeds: int, first_seed: int) -> dict:
    rows = {}
    for family in families:
        base_scenario.cache_clear()
        alone = _cpu_ms(lambda i: make_scene(family, first_seed + i, "pos"), seeds)
        base_scenario.cache_clear()
        offset = first_seed + seeds
        triple = _cpu_ms(lambda i: make_scene(family, offset + i // 3, ("pos", "neg", "rec")[i % 3]), 3 * seeds)
        rows[family] = {"pos_alone_ms": alone, "pos_neg_rec_ms": triple}
    overall = {key: float(np.mean([r[key] for r in rows.values()])) for key in ("pos_alone_ms", "pos_neg_rec_ms")}
    return {"families": rows, "overall": overall, "budget_ms": BUDGET_MS, "seeds_per_family": seeds}


def print_table(report: dict) -> None:
    print(f"{'family':<20}{'pos alone ms':>14}{'ratio':>8}{'pos+neg+rec ms':>16}{'ratio':>8}")
    print("-" * 66)
    for family, row in list(report["families"].items()) + [("OVERALL", report["overall"])]:
        a, b = row["pos_alone_ms"], row["pos_neg_rec_ms"]
        print(f"{family:<20}{a:>14.1f}{BUDGET_MS / a:>8.2f}{b:>16.1f}{BUDGET_MS / b:>8.2f}")
    print(f"(ratio = {BUDGET_MS:.0f} ms budget / measured CPU time per scene; one thread)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="seeds per family and measurement")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    report = measure(families, args.seeds, args.first_seed)
    print_table(report)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
