"""Where a GRPO step's time goes, what the learner's prefix cache saves, how rollout scales with workers, and
what weight sync costs.

    python benchmarks/grpo_step.py [--steps 3] [--groups 8] [--group-size 8] [--parts cache,scaling,sync,async]
                                   [--parts ...,reasoning] [--out FILE.json]

Part 1 (cache) runs the tiny GRPO job (real Ray, real DeepSpeed, tiny policy, train_target expert, 3 updates a
step) twice on the same data with the same seeds: `learner.cache_prefix=false` (the frozen VLM recomputed for
the policy and for the reference in every update) and `true` (once a step, its sparse K/V reused), and reports
the learner's time per step and the whole step's, old / new. Part 2 (scaling) adds the same job with 2 rollout
workers and reports the rollout speed-up of 2 workers over 1 (on a 2-core machine the learner and scorer share
the cores). Every timing is the mean of the steps after the first. Part 3 (sync) pushes synthetic weights of
growing size from one actor to two others through each sync backend (object store; collective over gloo) and
reports seconds and GB/s against the parameter count. Part 4 (async) runs the job with `grpo.max_staleness=1`
(the next step sampled and scored during the learner update) beside the synchronous one and reports the ratio of
their step times. Part 5 (reasoning) runs it with `rollout.group_reasoning=sampled` (a reasoning trace per sample)
and `greedy` (one greedy trace per group: one decode in the rollout, one VLM row per group in the learner) and
reports the ratios of their rollout, learner and step times. Parts 1, 2 and 4 run with the reasoning tiny.yaml
sets. The machine's load average is recorded with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_assets(root: Path, train_scenes: int) -> dict:
    """A small dataset, its codebook, and an untrained tiny policy (timings do not depend on training)."""
    import torch

    from rl.policy import SpanVLAPolicy
    from rl.policy.codebook import build_codebook, read_future_trajectories
    from rl.policy.config import PolicyConfig
    from rl.scene_store import SceneStore
    from sim.cameras import CameraConfig
    from sim.generate import GeneratorOptions, generate_splits
    from sim.scenarios import FAMILIES

    options = GeneratorOptions(tuple(FAMILIES), 0.2, 0.1, CameraConfig(height=32, width=64))
    generate_splits(root / "data", {"train": train_scenes, "val": 8}, 0, options, progress=False)
    build_codebook(read_future_trajectories(root / "data" / "train"), num_tokens=128, delta=0.3).save(root / "codebook.json")
    config = PolicyConfig()
    config.codebook.path = str(root / "codebook.json")
    torch.manual_seed(0)
    policy = SpanVLAPolicy.build(config)
    train = SceneStore(root / "data" / "train")
    policy.fit_trajectory_normalizer(train.scenes(range(len(train))))
    policy.save(root / "policy")
    return {"train": root / "data" / "train", "val": root / "data" / "val", "policy": root / "policy",
            "codebook": root / "codebook.json"}


TIMING_KEYS = ("timing/rollout_s", "timing/scoring_wait_s", "timing/learner_s", "timing/sync_s", "timing/step_s")


def time_steps(assets: dict, out: Path, workers: int, steps: int, groups: int, group_size: int,
               cache_prefix: bool = True, max_staleness: int = 0, group_reasoning: str | None = None) -> dict:
    """Mean seconds of each part of steps 2..steps (the first warms up), plus what the learner did."""
    from rl.config import TrainConfig
    from rl.config_io import load_config
    from rl.driver import GRPODriver
    from rl.tracking import read_metrics

    cfg = load_config(TrainConfig, REPO / "configs" / "tiny.yaml", [
        f"policy_init={assets['policy']}", f"data.train={assets['train']}", f"data.val={assets['val']}",
        f"policy.codebook.path={assets['codebook']}", f"grpo.steps={steps}", f"grpo.groups_per_step={groups}",
        f"grpo.group_size={group_size}", f"rollout.num_workers={workers}", "eval.every=0", "checkpoint.every=1000",
        f"logging.out_dir={out}", "logging.wandb=false", "logging.picture_every=0",
        f"learner.cache_prefix={str(cache_prefix).lower()}", f"grpo.max_staleness={max_staleness}",
    ] + ([f"rollout.group_reasoning={group_reasoning}"] if group_reasoning else []))
    GRPODriver(cfg).run()
    records = [r for r in read_metrics(out / "metrics.jsonl") if "timing/step_s" in r][1:]  # skip the warm-up step
    row = {k.split("/")[1]: float(np.mean([r[k] for r in records])) for k in TIMING_KEYS}
    for key in ("timing/prefix_s", "timing/prefetch_wait_s", "timing/prefetched_rollout_s", "train/prefix_cache_mb", "rollout/num_samples", "train/flow_policy_loss"):
        values = [r[key] for r in records if key in r]
        if values:
            row[key.split("/")[1]] = float(np.mean(values))
    return row


def compare_cache(off: dict, on: dict) -> dict:
    """Old (recompute) / new (cache) ratios of the learner's and the whole step's time."""
    return {"learner_speedup": off["learner_s"] / on["learner_s"], "step_speedup": off["step_s"] / on["step_s"]}


def time_weight_sync(sizes_m: list[float], repeats: int = 3) -> list[dict]:
    import ray
    import torch

    from actors.weight_sync import (CollectiveGroup, CollectiveReceiver, CollectiveSender, ObjectStoreReceiver,
                                    ObjectStoreSender, WeightsPayload, plan_buckets)
    from rl.deepspeed_engine import free_port

    @ray.remote(num_cpus=0)
    class Side:
        def __init__(self, params: int):
            torch.set_num_threads(1)
            self.named = {f"layer{i}.weight": torch.randn(params // 8) for i in range(8)}
            self.sender = None

        def object_store_push(self, version):
            return ObjectStoreSender(64.0).push(self.named, version)

        def object_store_pull(self, payload):
            out = ObjectStoreReceiver().pull(payload)
            for k, v in out.items():
                self.named[k].copy_(v)
            return payload.manifest.version

        def join(self, rank, port, world):
            group = CollectiveGroup("gloo", "127.0.0.1", port, rank, world)
            self.sender, self.receiver = CollectiveSender(group, 64.0), CollectiveReceiver(group)
            return rank

        def manifest(self, version):
            return plan_buckets(self.named, version, self.sender.bucket_bytes)

        def collective_push(self, version):
            return self.sender.push(self.named, version).manifest.version

        def collective_pull(self, manifest):
            out = self.receiver.pull(WeightsPayload(manifest))
            for k, v in out.items():
                self.named[k].copy_(v)
            return manifest.version

    rows = []
    for size in sizes_m:
        params = int(size * 1e6)
        sides = [Side.remote(params) for _ in range(3)]
        port = free_port()
        ray.get([s.join.remote(i, port, 3) for i, s in enumerate(sides)])
        for backend in ("object_store", "collective"):
            seconds = []
            for version in range(repeats):
                start = time.perf_counter()
                if backend == "object_store":
                    payload = ray.get(sides[0].object_store_push.remote(version))
                    ray.get([s.object_store_pull.remote(payload) for s in sides[1:]])
                else:
                    manifest = ray.get(sides[0].manifest.remote(version))
                    refs = [sides[0].collective_push.remote(version)] + [s.collective_pull.remote(manifest) for s in sides[1:]]
                    ray.get(refs)
                seconds.append(time.perf_counter() - start)
            best = min(seconds)
            rows.append({"backend": backend, "params_m": size, "seconds": best, "gb_per_s": params * 4 * 2 / best / 1e9})
        for s in sides:
            ray.kill(s)
    return rows


def print_split(title: str, split: dict) -> None:
    keys = [k.split("/")[1] for k in TIMING_KEYS]
    print(title)
    print(f"{'':>16s}" + "".join(f"{k:>16s}" for k in keys))
    for name, row in split.items():
        print(f"{name:>16s}" + "".join(f"{row[k]:16.2f}" for k in keys))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--parts", default="cache,scaling,sync", help="any of cache, scaling, sync, async")
    parser.add_argument("--sync-sizes", default="1,10,50", help="parameter counts in millions")
    parser.add_argument("--out", help="write the numbers as JSON")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"cache", "scaling", "sync", "async", "reasoning"}
    if unknown or not parts:
        parser.error(f"--parts {args.parts!r}: expected a comma-separated subset of cache, scaling, sync, async, reasoning")
    if args.steps < 2:
        parser.error(f"--steps {args.steps}: need at least 2 (the first step is a warm-up and is not timed)")
    import ray

    result: dict = {"config": {"preset": "configs/tiny.yaml", "steps": args.steps, "groups": args.groups,
                               "group_size": args.group_size},
                    "cpu_count": os.cpu_count(), "load_average_start": list(os.getloadavg())}
    ray.init(address="local", num_cpus=8, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if parts & {"cache", "scaling", "async", "reasoning"}:
            assets = build_assets(root, train_scenes=64)

        def timed(name: str, **kw) -> dict:
            return time_steps(assets, root / name, steps=args.steps, groups=args.groups, group_size=args.group_size, **kw)

        runs: dict = {}
        if "cache" in parts:
            runs["recompute"] = timed("recompute", workers=1, cache_prefix=False)
            runs["cache"] = timed("cache", workers=1, cache_prefix=True)
            ratios = compare_cache(runs["recompute"], runs["cache"])
            result["prefix_cache"] = {"recompute": runs["recompute"], "cache": runs["cache"], **ratios}
        if "scaling" in parts:
            one = runs.get("cache") or timed("workers1", workers=1)
            split = {1: one, 2: timed("workers2", workers=2)}
            result["step_split"] = split
            result["rollout_scaling_2_vs_1"] = split[1]["rollout_s"] / split[2]["rollout_s"]
        if "async" in parts:
            synchronous = runs.get("cache") or timed("synchronous", workers=1)
            overlapped = timed("async", workers=1, max_staleness=1)
            result["async"] = {"synchronous": synchronous, "async": overlapped,
                               "step_speedup": synchronous["step_s"] / overlapped["step_s"]}
        if "reasoning" in parts:
            per_sample = timed("reasoning_sampled", workers=1, group_reasoning="sampled")
            shared = timed("reasoning_greedy", workers=1, group_reasoning="greedy")
            result["group_reasoning"] = {"sampled": per_sample, "greedy": shared, **{
                f"{part}_speedup": per_sample[f"{part}_s"] / shared[f"{part}_s"] for part in ("rollout", "learner", "step")}}
    if "sync" in parts:
        result["weight_sync"] = time_weight_sync([float(x) for x in args.sync_sizes.split(",")])
    ray.shutdown()
    result["load_average_end"] = list(os.getloadavg())

    steps = f"{args.groups} groups x {args.group_size} samples, mean of steps 2..{args.steps}"
    if "prefix_cache" in result:
        pc = result["prefix_cache"]
        print_split(f"GRPO step, train_target expert, 3 updates a step ({steps}), seconds",
                    {"recompute (old)": pc["recompute"], "cache (new)": pc["cache"]})
        print(f"learner: {pc['learner_speedup']:.2f}x faster with the prefix cache; whole step: {pc['step_speedup']:.2f}x"
              f" (cache {pc['cache'].get('prefix_cache_mb', float('nan')):.1f} MiB, built in "
              f"{pc['cache'].get('prefix_s', float('nan')):.2f} s a step)")
    if "step_split" in result:
        split = result["step_split"]
        print_split(f"\nGRPO step by rollout workers, prefix cache on ({steps}), seconds",
                    {f"{w} worker(s)": row for w, row in split.items()})
        print(f"rollout speed-up with 2 workers: {result['rollout_scaling_2_vs_1']:.2f}x; "
              f"whole step: {split[1]['step_s'] / split[2]['step_s']:.2f}x")
    if "async" in result:
        a = result["async"]
        print_split(f"\nGRPO step, synchronous vs grpo.max_staleness=1, 1 rollout worker ({steps}), seconds",
                    {"synchronous": a["synchronous"], "async": a["async"]})
        print(f"async step: {a['step_speedup']:.2f}x the synchronous step's speed (its rollout ran during the previous"
              f" update: {a['async'].get('prefetched_rollout_s', float('nan')):.2f} s, then waited "
              f"{a['async'].get('prefetch_wait_s', float('nan')):.2f} s after the update)")
    if "group_reasoning" in result:
        gr = result["group_reasoning"]
        print_split(f"\nGRPO step, a reasoning trace per sample vs one greedy trace per group ({steps}), seconds",
                    {"sampled": gr["sampled"], "greedy": gr["greedy"]})
        print(f"greedy group reasoning: rollout {gr['rollout_speedup']:.2f}x, learner {gr['learner_speedup']:.2f}x, "
              f"whole step {gr['step_speedup']:.2f}x faster")
    if "weight_sync" in result:
        print("\nweight sync, one sender to two receivers (fp32), best of 3")
        print(f"{'backend':>14s}{'params (M)':>12s}{'seconds':>10s}{'GB/s':>8s}")
        for row in result["weight_sync"]:
            print(f"{row['backend']:>14s}{row['params_m']:12.0f}{row['seconds']:10.3f}{row['gb_per_s']:8.2f}")
    print(f"\nload average (1, 5, 15 min) at start {result['load_average_start']}, at end {result['load_average_end']}"
          f" on {os.cpu_count()} CPUs")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
