"""PDM scorer throughput on one core: a group call of 16 plans vs one call per plan, and PDM-Closed.

    python benchmarks/pdm_score.py [--scenes DIR | --world N] [--versions v1 v2] [--group 16] [--repeats 3]
                                   [--policy-group] [--out FILE.json]

For every scene JSON in DIR (default: the worked examples), or for N scenes of the synthetic world (every
family in turn, with their agents and lights: the scenes RL scores), 16 plans are made from the scene's plan
(perturbed, stretched, shifted), then timed: `prepare` with PDM-Closed computed (per scene), one `score`
call for the group, and 16 `score` calls of one plan each (both with PDM-Closed cached). Reports medians over
scenes: ms per scene for `prepare` (and the PDM-Closed part of it: fresh minus cached), plans per second for
both ways, and their ratio. Both ways must give identical results (checked). With --policy-group (synthetic
scenes), the time the tiny policy takes to sample the same group (one prefill, 16 reasoning traces and flows)
is measured beside it: scoring must never be what RL waits for.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rewards.pdm import PDMScorer  # noqa: E402
from sim.scene_json import load_scene_json  # noqa: E402

DEFAULT_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdm_examples"


def plan_group(plan: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` plans around `plan` (8, 3): time-stretched, shifted sideways, jittered."""
    rng = np.random.default_rng(seed)
    plans = []
    for i in range(size):
        p = plan.copy()
        p[:, :2] *= rng.uniform(0.6, 1.3)
        p[:, 1] += rng.normal(0, 0.5) * np.linspace(0.2, 1.0, len(p))
        p[:, :2] += rng.normal(0, 0.1, size=(len(p), 2))
        plans.append(p)
    return np.stack(plans)


def bench_scene(path: Path, version: str, group: int, repeats: int) -> dict:
    scene, plan, _ = load_scene_json(path)
    if plan is None:
        raise ValueError(f"{path}: the scene has no plan to make the group around")
    scorer = PDMScorer(version)
    t0 = time.perf_counter()
    prepared = scorer.prepare(scene)  # PDM-Closed computed here
    prepare_fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.prepare(scene)  # PDM-Closed now cached on the scene
    prepare_cached = time.perf_counter() - t0
    plans = plan_group(plan, group, seed=zlib.crc32(path.name.encode()))
    group_times, single_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        together = scorer.score(prepared, plans)
        group_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        alone = [scorer.score(prepared, p)[0] for p in plans]
        single_times.append(time.perf_counter() - t0)
        if together != alone:
            raise AssertionError(f"{path.name} {version}: group and single calls differ")
    return {"scene": path.name, "version": version, "pdm_closed_prepare_ms": 1e3 * prepare_fresh,
            "prepare_cached_ms": 1e3 * prepare_cached, "pdm_closed_ms": 1e3 * (prepare_fresh - prepare_cached),
            "group_ms_per_plan": 1e3 * min(group_times) / group,
            "single_ms_per_plan": 1e3 * min(single_times) / group}


def world_scenes(count: int, out: Path) -> Path:
    """Write `count` synthetic scenes (families in turn, seeds 0, 1, ...) as scene JSON files in `out`."""
    from sim.conventions import NAVSIM_PLAN_POSES
    from sim.scenarios import FAMILIES, make_scene
    from sim.scene_json import write_scene_json

    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scene = make_scene(FAMILIES[i % len(FAMILIES)], i // len(FAMILIES))
        # the plan the group is made around: the expert's ground truth, as NAVSIM's 8 poses
        write_scene_json(out / f"{scene.token}.json", scene, plan=scene.future[:NAVSIM_PLAN_POSES])
    return out


def policy_group_ms(files: list[Path], group: int, repeats: int) -> float:
    """Median ms for the tiny policy (random weights: the cost does not depend on them) to sample a group."""
    import torch

    from rl.policy import SpanVLAPolicy
    from sim.cameras import CameraConfig, render_cameras

    torch.set_num_threads(1)
    policy = SpanVLAPolicy.build().eval()
    h, w = policy.video.geometry.height, policy.video.geometry.width
    times = []
    for path in files:
        scene, _, _ = load_scene_json(path)
        scene.cameras = render_cameras(scene, CameraConfig(height=h, width=w))
        best = float("inf")
        for r in range(repeats):
            t0 = time.perf_counter()
            policy.sample_group(scene, group, temperature=1.0, flow_noise=0.5, seed=r)
            best = min(best, time.perf_counter() - t0)
        times.append(1e3 * best)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=Path, default=DEFAULT_SCENES)
    parser.add_argument("--world", type=int, default=0, help="score N synthetic scenes instead of --scenes")
    parser.add_argument("--policy-group", action="store_true", help="also time the tiny policy sampling each group")
    parser.add_argument("--versions", nargs="+", default=["v1", "v2"], choices=["v1", "v2"])
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use at most this many scenes (0: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    if args.world:
        import atexit
        import shutil
        import tempfile

        args.scenes = world_scenes(args.world, Path(tempfile.mkdtemp(prefix="pdm_bench_")))
        atexit.register(shutil.rmtree, args.scenes, ignore_errors=True)
    files = sorted(args.scenes.glob("*.json"))
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise SystemExit(f"no scene JSON files in {args.scenes}")
    rows, summary = [], {}
    for version in args.versions:
        results = []
        for path in files:
            try:
                results.append(bench_scene(path, version, args.group, args.repeats))
            except ValueError as exc:  # e.g. a scene without route: NAVSIM cannot score it either
                print(f"skipped {path.name} ({version}): {exc}")
        rows += results
        med = {k: float(np.median([r[k] for r in results])) for k in
               ("pdm_closed_prepare_ms", "prepare_cached_ms", "pdm_closed_ms", "group_ms_per_plan", "single_ms_per_plan")}
        med["group_plans_per_s"] = 1e3 / med["group_ms_per_plan"]
        med["single_plans_per_s"] = 1e3 / med["single_ms_per_plan"]
        med["group_speedup"] = med["single_ms_per_plan"] / med["group_ms_per_plan"]
        med["scenes"] = len(results)
        summary[version] = med

    print(f"PDM scorer, one core, groups of {args.group}, {len(files)} scenes from {args.scenes} (medians)")
    print(f"{'version':<8}{'prepare ms':>11}{'of which PDM-Closed':>21}{'cached prepare ms':>19}{'group plans/s':>15}"
          f"{'single plans/s':>16}{'group/single':>14}")
    for version, m in summary.items():
        print(f"{version:<8}{m['pdm_closed_prepare_ms']:>11.1f}{m['pdm_closed_ms']:>21.1f}{m['prepare_cached_ms']:>19.1f}"
              f"{m['group_plans_per_s']:>15.0f}{m['single_plans_per_s']:>16.0f}{m['group_speedup']:>13.2f}x")
    if args.policy_group:
        sample_ms = policy_group_ms(files, args.group, args.repeats)
        summary["policy_group_sample_ms"] = sample_ms
        print(f"\ntiny policy sampling a group of {args.group}: {sample_ms:.1f} ms (median); scoring it: "
              + ", ".join(f"{v} {summary[v]['group_ms_per_plan'] * args.group:.1f} ms "
                          f"({sample_ms / (summary[v]['group_ms_per_plan'] * args.group):.1f}x less)" for v in args.versions))
    if args.out:
        scenes = f"synthetic world, {args.world} scenes" if args.world else str(args.scenes)
        args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "group": args.group,
                                        "scenes": scenes, "summary": summary, "per_scene": rows}, indent=1))


if __name__ == "__main__":
    main()
