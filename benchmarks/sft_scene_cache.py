"""The SFT stage's scene reads with the default scene cache against a larger one (`data.scene_cache`). Replays
one SFT stage's batches in its own order (`rl.sft.sft_batch_rows`, as `python -m rl.sft` draws them) and reads
each batch's scenes from the training store, as the stage does before its model step; the model is left out, the
cache changes nothing there. Checks that both caches hand out the same scenes. Prints a table and writes its
numbers as JSON with `--out`.

    python benchmarks/sft_scene_cache.py --split runs/demo/data/train [--steps 500 --batch-size 8]
                                         [--caches 256,2048] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional

import numpy as np

from rl.scene_store import SceneStore
from rl.sft import sft_batch_rows


def replay(split: str, cache: int, steps: int, batch_size: int, seed: int, sample_types: list[str]) -> dict:
    """Seconds and decodes to read one SFT stage's batches through a store keeping `cache` scenes."""
    store = SceneStore(split, cache_size=cache)
    rows = np.array([r for r, t in enumerate(store.sample_types) if t in sample_types])
    tokens = []
    start = time.perf_counter()
    for batch in sft_batch_rows(rows, steps, batch_size, seed):
        tokens.extend(scene.token for scene in store.scenes(batch))
    seconds = time.perf_counter() - start
    return {"cache": cache, "reads": len(tokens), "decodes": store.decodes, "seconds": seconds, "tokens": tokens}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", required=True, help="a training split written by `python -m sim.generate`")
    parser.add_argument("--steps", type=int, default=500, help="SFT steps of one stage (the demo: 500)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-types", default="pos,rec", help="what SFT imitates (sft.sample_types)")
    parser.add_argument("--caches", default="256,2048", help="baseline,candidate (data.scene_cache)")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    baseline_cache, candidate_cache = (int(c) for c in args.caches.split(","))
    types = [t.strip() for t in args.sample_types.split(",")]
    runs = [replay(args.split, c, args.steps, args.batch_size, args.seed, types) for c in (baseline_cache, candidate_cache)]
    if runs[0].pop("tokens") != runs[1].pop("tokens"):
        print("error: the two caches handed out different scenes", file=sys.stderr)
        return 1
    ratio = runs[0]["seconds"] / runs[1]["seconds"]
    print("| data.scene_cache | scene reads | decodes | seconds |\n|---|---|---|---|")
    for r in runs:
        print(f"| {r['cache']} | {r['reads']} | {r['decodes']} | {r['seconds']:.1f} |")
    print(f"| ratio | | | {ratio:.2f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"split": args.split, "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                       "sample_types": types, "baseline": runs[0], "candidate": runs[1], "ratio": ratio,
                       "same_scenes": True}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
