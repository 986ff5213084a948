"""Where a GRPO step's time goes, how it scales with rollout workers, and what weight sync costs.

    python benchmarks/grpo_step.py [--steps 3] [--groups 8] [--group-size 8] [--out FILE.json]

Part 1 runs the tiny GRPO job (real Ray, real DeepSpeed, tiny policy) with 1 and then 2 rollout workers and
reports the mean time split of the steps after the first (rollout, scoring wait, learner, weight sync) and the
rollout speed-up of 2 workers over 1 (the scaling ratio; on a 2-core machine the learner and scorer share
the cores). Part 2 pushes synthetic weights of growing size from one actor to two others through each sync
backend (object store; collective over gloo) and reports seconds and GB/s against the parameter count.
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


def time_steps(assets: dict, out: Path, workers: int, steps: int, groups: int, group_size: int) -> dict:
    from rl.config import TrainConfig
    from rl.config_io import load_config
    from rl.driver import GRPODriver
    from rl.tracking import read_metrics

    cfg = load_config(TrainConfig, REPO / "configs" / "tiny.yaml", [
        f"policy_init={assets['policy']}", f"data.train={assets['train']}", f"data.val={assets['val']}",
        f"policy.codebook.path={assets['codebook']}", f"grpo.steps={steps}", f"grpo.groups_per_step={groups}",
        f"grpo.group_size={group_size}", f"rollout.num_workers={workers}", "eval.every=0", "checkpoint.every=1000",
        f"logging.out_dir={out}", "logging.wandb=false", "logging.picture_every=0",
    ])
    GRPODriver(cfg).run()
    records = [r for r in read_metrics(out / "metrics.jsonl") if "timing/step_s" in r][1:]  # skip the warm-up step
    keys = ("timing/rollout_s", "timing/scoring_wait_s", "timing/learner_s", "timing/sync_s", "timing/step_s")
    return {k.split("/")[1]: float(np.mean([r[k] for r in records])) for k in keys}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--sync-sizes", default="1,10,50", help="parameter counts in millions")
    parser.add_argument("--out", help="write the numbers as JSON")
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=8, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assets = build_assets(root, train_scenes=64)
        split = {w: time_steps(assets, root / f"run_{w}", w, args.steps, args.groups, args.group_size) for w in (1, 2)}
    sync = time_weight_sync([float(x) for x in args.sync_sizes.split(",")])
    ray.shutdown()

    print(f"GRPO step on the tiny preset ({args.groups} groups x {args.group_size} samples, mean of steps 2..{args.steps}), seconds")
    print(f"{'rollout workers':>16s}" + "".join(f"{k:>14s}" for k in split[1]))
    for w, row in split.items():
        print(f"{w:>16d}" + "".join(f"{v:14.2f}" for v in row.values()))
    ratio = split[1]["rollout_s"] / split[2]["rollout_s"]
    print(f"rollout speed-up with 2 workers: {ratio:.2f}x; whole step: {split[1]['step_s'] / split[2]['step_s']:.2f}x")
    print("\nweight sync, one sender to two receivers (fp32), best of 3")
    print(f"{'backend':>14s}{'params (M)':>12s}{'seconds':>10s}{'GB/s':>8s}")
    for row in sync:
        print(f"{row['backend']:>14s}{row['params_m']:12.0f}{row['seconds']:10.3f}{row['gb_per_s']:8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"step_split": split, "rollout_scaling_2_vs_1": ratio, "weight_sync": sync,
                                              "cpu_count": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
