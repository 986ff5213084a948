"""Synthetic data speed: scene generation with cameras (1 vs 2 worker processes), rendering alone, and
dataset reading with and without images.

    python benchmarks/sim_generate.py [--num-scenes 96] [--height 64 --width 128] [--out FILE]

Claims and their baselines, measured in the same run:
- generation scales with workers: scenes/s with 2 workers over scenes/s with 1 worker (the ratio);
- rendering is fast enough for thousands of scenes in minutes: scenes/s of `render_cameras` (12 images per
  scene) on one core, over the 50 scenes/s target;
- reading without images skips the PNG decoding: rows/s without images over rows/s with images decoded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

from sim.cameras import CameraConfig, render_cameras  # noqa: E402
from sim.dataset import SCHEMA, SceneDataset, decode_png  # noqa: E402
from sim.generate import GeneratorOptions, generate_dataset, scene_specs  # noqa: E402
from sim.scenarios import FAMILIES, make_scene  # noqa: E402

RENDER_TARGET_SCENES_PER_S = 50.0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-scenes", type=int, default=96)
    parser.add_argument("--height", type=int, default=CameraConfig.height)
    parser.add_argument("--width", type=int, default=CameraConfig.width)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    camera = CameraConfig(height=args.height, width=args.width)
    options = GeneratorOptions(tuple(FAMILIES), camera=camera, shard_size=32)
    n = args.num_scenes
    results: dict = {"num_scenes": n, "image_size": [args.height, args.width], "cpu_count": os.cpu_count(),
                     "load_average_at_start": os.getloadavg()[0]}

    with tempfile.TemporaryDirectory() as tmp:
        gen = {}
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            gen[workers] = n / _timed(lambda: generate_dataset(out, n, 0, options, workers=workers, progress=False))
        results["generate_scenes_per_s"] = {"1_worker": gen[1], "2_workers": gen[2]}
        results["generate_scaling_2_over_1"] = gen[2] / gen[1]

        scenes = [make_scene(s.family, s.seed, s.sample_type) for s in scene_specs(min(n, 48), 0, "bench", options)]
        cpu_start = time.process_time()
        render_s = _timed(lambda: [render_cameras(s, camera) for s in scenes])
        results["render_scenes_per_cpu_s"] = len(scenes) / (time.process_time() - cpu_start)
        results["render_scenes_per_s"] = len(scenes) / render_s
        results["render_images_per_s"] = 12 * len(scenes) / render_s
        results["render_over_target"] = results["render_scenes_per_s"] / RENDER_TARGET_SCENES_PER_S

        dataset = SceneDataset(Path(tmp) / "w1")
        columns = [c for c in SCHEMA.names if c != "images"]
        no_images_s = _timed(lambda: [b.to_pylist() for b in dataset.batches(columns)])

        def read_decoded():
            for batch in dataset.batches(columns + ["images"]):
                for row in batch.to_pylist():
                    [decode_png(p) for p in row["images"]]

        images_s = _timed(read_decoded)
        results["read_rows_per_s"] = {"without_images": n / no_images_s, "with_images_decoded": n / images_s}
        results["read_without_over_with_images"] = images_s / no_images_s

    rows = [
        ("generate, 1 worker (scenes/s)", results["generate_scenes_per_s"]["1_worker"]),
        ("generate, 2 workers (scenes/s)", results["generate_scenes_per_s"]["2_workers"]),
        ("  scaling 2 / 1 workers (x)", results["generate_scaling_2_over_1"]),
        ("render alone, 12 images (scenes/s)", results["render_scenes_per_s"]),
        (f"  over the {RENDER_TARGET_SCENES_PER_S:.0f} scenes/s target (x)", results["render_over_target"]),
        ("render alone, per CPU second (scenes)", results["render_scenes_per_cpu_s"]),
        ("read without images (rows/s)", results["read_rows_per_s"]["without_images"]),
        ("read with images decoded (rows/s)", results["read_rows_per_s"]["with_images_decoded"]),
        ("  without / with images (x)", results["read_without_over_with_images"]),
    ]
    print(f"{n} scenes, images {args.height} x {args.width}, {os.cpu_count()} CPUs, "
          f"load average {results['load_average_at_start']:.2f} at start (other processes share the cores)")
    for name, value in rows:
        print(f"{name:<42} {value:10.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
