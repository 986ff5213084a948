"""One command that checks the GPU cluster path on one GPU (a few minutes), or on a CPU with --cpu.

    python benchmarks/gpu_check.py [--cpu] [--out FILE.json] [--workdir DIR]

On a local Ray, with the real actors (`rl.driver.GRPODriver`): a DeepSpeed ZeRO-2 learner in bf16 and one
rollout worker that share one GPU (`gpus_per_worker: 0.5` each; `--cpu`: no GPU), one scorer worker.

1. assets: a small synthetic dataset, its codebook and an untrained policy (preset `small`; `--cpu`: `tiny`);
2. expert: 3 synchronous GRPO steps, `train_target: expert`, `kl_beta > 0`: finite losses, the first update's
   ratio is 1, every step's weights synced at its version (the backend `weight_sync.backend: auto` picks for this
   placement), checkpoints written, the exported expert fp32;
3. resume: a second job starts from step 2's checkpoint and redoes step 3: same rewards, same expert weights;
4. vlm_lora: GRPO on the VLM's tokens with LoRA adapters (dropout 0.1) and `action_source: tokens`: the first
   update of the last step (adapters already moved) has ratio 1;
5. latency: `benchmarks/latency.py` on the same device.

Prints a table (check, result, value) and writes JSON with --out. Exit code 0 when every check passes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {  # per mode: data, policy preset, GRPO batch and tolerances
    # ratio_tol: |first-update ratio - 1|. In bf16 the sampler's cached decode and the learner's full forward
    # round differently (CPU: within 1e-3, measured; CUDA kernels differ more between shapes).
    # resume_tol: max |weight difference| after a resume (CPU: exact; CUDA backward kernels may use atomics).
    # image: (height, width), multiples of the preset's patch_size * spatial_merge_size (small 28, tiny 16).
    "gpu": {"preset": "small", "image": (56, 112), "train": 32, "groups": 4, "group_size": 8, "vlm_steps": 3,
            "gpus": 0.5,
            "ratio_tol": 1e-2, "resume_tol": 1e-5,
            "latency": ["--preset", "small", "--device", "cuda", "--scenes", "5", "--repeats", "2"]},
    "cpu": {"preset": "tiny", "image": (32, 64), "train": 8, "groups": 2, "group_size": 4, "vlm_steps": 2, "gpus": 0.0,
            "ratio_tol": 1e-3, "resume_tol": 0.0,
            "latency": ["--preset", "tiny", "--device", "cpu", "--scenes", "1", "--repeats", "1", "--warmup", "0"]},
}


def build_assets(root: Path, preset: str, train_scenes: int, image: tuple[int, int]) -> dict:
    """Dataset (train with positives and negatives, val), codebook, untrained policy with a fitted normaliser."""
    import numpy as np
    import torch

    from rl.policy import SpanVLAPolicy
    from rl.policy.codebook import build_codebook
    from rl.policy.config import PolicyConfig
    from rl.scene_store import SceneStore
    from sim.generate import main as generate

    data = root / "data"
    code = generate(["--splits", f"train={train_scenes},val=4", "--seed", "5", "--out", str(data), "--quiet",
                     "--families", "lane_follow,lead_braking,cut_in", "--neg-share", "0.25",
                     "--height", str(image[0]), "--width", str(image[1])])
    if code != 0:
        raise RuntimeError(f"sim.generate exited with {code}")
    train = SceneStore(data / "train")
    scenes = train.scenes(range(len(train)))
    build_codebook(np.stack([s.future for s in scenes]), num_tokens=64, delta=0.3).save(root / "codebook.json")
    config = PolicyConfig()
    config.backbone.preset = preset
    config.backbone.image_height, config.backbone.image_width = image
    config.codebook.path = str(root / "codebook.json")
    config.max_reasoning_tokens = 8
    torch.manual_seed(0)
    policy = SpanVLAPolicy.build(config)
    policy.fit_trajectory_normalizer(scenes)
    policy.save(root / "policy")
    return {"train": data / "train", "val": data / "val", "policy": root / "policy", "codebook": root / "codebook.json"}


def run_grpo(assets: dict, out: Path, size: dict, **extra):
    """One GRPO job (a fresh driver and fresh actors); returns its metric records."""
    from rl.config import TrainConfig
    from rl.config_io import load_config
    from rl.driver import GRPODriver
    from rl.tracking import read_metrics

    values = {
        "policy_init": assets["policy"], "data.train": assets["train"], "data.val": assets["val"],
        "policy.codebook.path": assets["codebook"], "grpo.steps": 3, "grpo.groups_per_step": size["groups"],
        "grpo.group_size": size["group_size"], "grpo.schedule.warmup_steps": 0, "grpo.lr": 1e-3,
        "grpo.updates_per_step": 1, "grpo.micro_batch_size": 8, "grpo.train_target": "expert", "grpo.kl_beta": 0.01,
        "rollout.action_source": "expert", "rollout.num_workers": 1, "scorer.num_workers": 1,
        "learner.num_workers": 1, "learner.zero_stage": 2, "learner.bf16": True,
        "learner.gpus_per_worker": size["gpus"], "rollout.gpus_per_worker": size["gpus"],
        "weight_sync.backend": "auto", "logging.out_dir": out, "logging.wandb": False, "logging.picture_every": 0,
        "eval.every": 0, "checkpoint.every": 1, "checkpoint.keep_last": 5,
        # synchronous steps (configs/tiny.yaml samples ahead): every step's first update is on-policy, ratio 1
        "grpo.max_staleness": 0,
    }
    values.update(extra)
    cfg = load_config(TrainConfig, REPO / "configs" / "tiny.yaml", [f"{k}={v}" for k, v in values.items()])
    GRPODriver(cfg).run()
    return [r for r in read_metrics(out / "metrics.jsonl") if "rollout/num_groups" in r]


class Checks:
    """Collects (check, ok, value) rows."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, name: str, ok: bool, value) -> None:
        self.rows.append({"check": name, "ok": bool(ok), "value": value})

    @property
    def passed(self) -> bool:
        return all(r["ok"] for r in self.rows)


def _finite(records: list[dict], prefix: str) -> bool:
    values = [v for r in records for k, v in r.items() if k.startswith(prefix) and isinstance(v, float)]
    return bool(values) and all(math.isfinite(v) for v in values)


def _updates(records: list[dict], key: str) -> list[dict]:
    return [r for r in records if key in r]


def check_expert(checks: Checks, assets: dict, work: Path, size: dict) -> dict:
    from safetensors import safe_open

    from actors.weight_sync import resolve_backend

    start = time.perf_counter()
    records = run_grpo(assets, work / "expert", size)
    checks.add("expert: weight-sync backend for the placement", True,
               "/".join(str(x) for x in resolve_backend("auto", size["gpus"], size["gpus"], 1) if x))
    checks.add("expert: steps run", [r["step"] for r in records] == [1, 2, 3], [r["step"] for r in records])
    checks.add("expert: finite losses and KL", _finite(records, "train/flow_"),
               records[-1].get("train/flow_policy_loss"))
    updates = _updates(records, "train/flow_ratio_mean")
    ratio = updates[0]["train/flow_ratio_mean"] if updates else float("nan")
    checks.add("expert: first-update ratio", abs(ratio - 1.0) <= size["ratio_tol"], ratio)
    checks.add("expert: KL term present (kl_beta > 0)", bool(updates) and "train/flow_kl" in updates[0],
               updates[0].get("train/flow_kl") if updates else None)
    versions = [r.get("sync/policy_version") for r in records]
    expected = [float(r["step"] - r.get("train/skipped", 0)) for r in records]
    checks.add("expert: synced policy versions", versions == expected, versions)
    expert_file = work / "expert" / "ckpt" / "step_3" / "policy" / "expert.safetensors"
    with safe_open(str(expert_file), "pt") as f:
        dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()} - {"BOOL", "I64"})
    checks.add("expert: checkpoint written, expert stored fp32", dtypes == ["F32"], dtypes)
    return {"records": records, "seconds": time.perf_counter() - start}


def check_resume(checks: Checks, assets: dict, work: Path, size: dict, reference: dict) -> dict:
    import numpy as np
    from safetensors.numpy import load_file

    from rl.checkpoint import CheckpointDir

    start = time.perf_counter()
    src, out = work / "expert", work / "resume"
    shutil.copytree(src / "ckpt" / "step_2", out / "ckpt" / "step_2")
    CheckpointDir(out / "ckpt").commit(2)  # the job "died" after step 2's checkpoint
    records = run_grpo(assets, out, size)
    checks.add("resume: continues at step 3", [r["step"] for r in records] == [3], [r["step"] for r in records])
    ref3 = next(r for r in reference["records"] if r["step"] == 3)
    reward = records[-1].get("reward/total", math.nan) if records else math.nan
    same_reward = abs(reward - ref3.get("reward/total", math.nan)) <= size["resume_tol"]
    checks.add("resume: same step-3 rewards", same_reward, reward)
    a = load_file(str(src / "ckpt" / "step_3" / "policy" / "expert.safetensors"))
    b = load_file(str(out / "ckpt" / "step_3" / "policy" / "expert.safetensors"))
    diff = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    checks.add("resume: step-3 expert weights identical", diff <= size["resume_tol"], diff)
    return {"seconds": time.perf_counter() - start}


def check_vlm_lora(checks: Checks, assets: dict, work: Path, size: dict) -> dict:
    start = time.perf_counter()
    steps = size["vlm_steps"]
    records = run_grpo(assets, work / "vlm_lora", size, **{
        "grpo.steps": steps, "grpo.train_target": "vlm", "rollout.action_source": "tokens", "rollout.pace_std": 0.0,
        "learner.lora.enabled": True, "learner.lora.r": 8, "learner.lora.alpha": 16, "learner.lora.dropout": 0.1,
        "learner.reference": "adapters_off", "grpo.lr": 1e-2})
    checks.add("vlm_lora: steps run", [r["step"] for r in records] == list(range(1, steps + 1)),
               [r["step"] for r in records])
    checks.add("vlm_lora: finite losses and KL", _finite(records, "train/token_"),
               records[-1].get("train/token_policy_loss"))
    updates = _updates(records, "train/token_ratio_mean")
    ratio = updates[-1]["train/token_ratio_mean"] if len(updates) >= 2 else float("nan")
    checks.add("vlm_lora: first-update ratio after the adapters moved", abs(ratio - 1.0) <= size["ratio_tol"], ratio)
    return {"seconds": time.perf_counter() - start}


def check_latency(checks: Checks, work: Path, size: dict) -> dict:
    start = time.perf_counter()
    out = work / "latency.json"
    command = [sys.executable, str(REPO / "benchmarks" / "latency.py"), *size["latency"], "--out", str(out)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    ok = proc.returncode == 0 and out.is_file()
    value = None
    if ok:
        summary = json.loads(out.read_text())
        value = summary.get("totals_s", summary)
    else:
        value = proc.stderr[-2000:]
    checks.add("latency: benchmarks/latency.py", ok, value)
    return {"seconds": time.perf_counter() - start}


def print_table(checks: Checks, timings: dict, mode: str) -> None:
    print(f"\nGPU-path check ({mode} mode)")
    print(f"{'check':58s} {'result':6s} value")
    for row in checks.rows:
        value = row["value"]
        text = f"{value:.6g}" if isinstance(value, float) else json.dumps(value, default=str)[:80]
        print(f"{row['check']:58s} {'ok' if row['ok'] else 'FAIL':6s} {text}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true",
                        help="no GPU: the tiny preset and tiny data, every step that can run")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    parser.add_argument("--workdir", default=None, help="where to build data and runs (default: a temporary directory)")
    parser.add_argument("--assets", default=None,
                        help="reuse a directory with data/train, data/val, policy/ and codebook.json")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)

    import ray
    import torch

    mode = "cpu" if args.cpu else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        print("no CUDA device visible to torch: run with --cpu for the CPU mode", file=sys.stderr)
        return 2
    size = SIZES[mode]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    checks, timings = Checks(), {}
    start = time.perf_counter()
    own_ray = not ray.is_initialized()  # a Ray started here is shut down here; a caller's is left running
    try:
        if args.assets:
            root = Path(args.assets)
            assets = {"train": root / "data" / "train", "val": root / "data" / "val", "policy": root / "policy",
                      "codebook": root / "codebook.json"}
        else:
            assets = build_assets(work / "assets", size["preset"], size["train"], size["image"])
        timings["assets"] = time.perf_counter() - start
        expert = check_expert(checks, assets, work, size)
        timings["expert"] = expert["seconds"]
        timings["resume"] = check_resume(checks, assets, work, size, expert)["seconds"]
        timings["vlm_lora"] = check_vlm_lora(checks, assets, work, size)["seconds"]
        if not args.skip_latency:
            timings["latency"] = check_latency(checks, work, size)["seconds"]
    except Exception as err:  # a crash is a failed check with its message, after what already ran
        checks.add(f"crashed: {type(err).__name__}", False, str(err)[-2000:])
        import traceback

        traceback.print_exc()
    finally:
        if own_ray and ray.is_initialized():
            ray.shutdown()
    timings["total"] = time.perf_counter() - start
    print_table(checks, timings, mode)
    result = {"mode": mode, "passed": checks.passed, "checks": checks.rows, "seconds": timings,
              "device": torch.cuda.get_device_name(0) if mode == "gpu" else "cpu"}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0 if checks.passed else 1



if __name__ == "__main__":
    sys.exit(main())
