"""Evaluating several planners on one split: each scene prepared once (`rl.evaluate.PreparedScenes`, what
`rl.demo` and `rl.ablations` do) against each planner preparing every scene again (one `rl.evaluate` call per
planner). Both orders score the baselines (`--planners`) with NAVSIM v1 and v2 on the split's positive scenes;
the averages must be equal. Prints a table and writes its numbers as JSON with `--out`.

    python benchmarks/evaluation.py --scenes runs/demo/data/test [--planners ground_truth,human_log,constant_velocity]
                                    [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional

from rl.evaluate import BASELINES, PreparedScenes, run_evaluation
from sim.conventions import VERSIONS


def timed_evaluations(scenes: str, planners: list[str], shared: bool) -> tuple[float, dict]:
    """Seconds to evaluate every planner in turn, and their summaries' averages."""
    prepared = PreparedScenes(scenes) if shared else None
    start = time.perf_counter()
    averages = {p: {v: s["average"] for v, s in run_evaluation(scenes, None, VERSIONS, baseline=p, sample_types=["pos"],
                                                               show_progress=False, prepared=prepared).items()}
                for p in planners}
    return time.perf_counter() - start, averages


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", required=True, help="a dataset split (its positive scenes are scored)")
    parser.add_argument("--planners", default=",".join(BASELINES), help="comma-separated baselines")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    planners = [p.strip() for p in args.planners.split(",") if p.strip()]
    separate_s, separate = timed_evaluations(args.scenes, planners, shared=False)
    shared_s, shared = timed_evaluations(args.scenes, planners, shared=True)
    if json.dumps(separate, sort_keys=True) != json.dumps(shared, sort_keys=True):
        print("error: the shared preparation changed a score", file=sys.stderr)
        return 1
    ratio = separate_s / shared_s
    print(f"| {len(planners)} planners, v1 + v2 | seconds |\n|---|---|\n"
          f"| each prepares every scene | {separate_s:.1f} |\n| scenes prepared once | {shared_s:.1f} |\n"
          f"| ratio | {ratio:.2f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"scenes": args.scenes, "planners": planners, "versions": list(VERSIONS),
                       "separate_s": separate_s, "shared_s": shared_s, "ratio": ratio, "averages_equal": True}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
