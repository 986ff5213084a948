"""Session-wide fixtures: one local Ray for every Ray test, and a tiny dataset + policy for the GRPO system."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# Local clusters in tests: no auth token, no usage stats, loopback only; wandb offline.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def load_benchmark():
    """A loader of `benchmarks/<name>.py` as the module `benchmark_<name>` (benchmarks/ is not a package)."""

    def load(name: str):
        module_name = f"benchmark_{name}"
        if module_name not in sys.modules:
            path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        return sys.modules[module_name]

    return load


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray (started once per session; ~6 s), over-committing CPUs so every actor fits."""
    import ray

    from actors.placement import start_local_cluster

    if not ray.is_initialized():
        start_local_cluster(num_cpus=8, log_to_driver=False)  # loopback only, as every local run
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_grpo_assets(tmp_path_factory):
    """A small synthetic dataset (train with pos / neg / rec, val), its codebook and an untrained tiny policy
    saved as the GRPO starting point. Returns a dict of paths."""
    import torch

    from rl.policy import SpanVLAPolicy
    from rl.policy.codebook import build_codebook
    from rl.policy.config import PolicyConfig
    from rl.scene_store import SceneStore
    from sim.generate import main as generate

    root = tmp_path_factory.mktemp("grpo_assets")
    data = root / "data"
    assert generate(["--splits", "train=24,val=4", "--seed", "3", "--out", str(data), "--quiet",
                     "--families", "lane_follow,lead_braking,cut_in,red_light",
                     "--neg-share", "0.3", "--rec-share", "0.2", "--height", "32", "--width", "64"]) == 0
    train = SceneStore(data / "train")
    scenes = train.scenes(range(len(train)))
    import numpy as np

    codebook = build_codebook(np.stack([s.future for s in scenes]), num_tokens=64, delta=0.3)
    codebook.save(root / "codebook.json")
    config = PolicyConfig()
    config.backbone.image_height, config.backbone.image_width = 32, 64
    config.codebook.path = str(root / "codebook.json")
    config.max_reasoning_tokens = 8
    torch.manual_seed(0)
    policy = SpanVLAPolicy.build(config)
    policy.fit_trajectory_normalizer(scenes)
    policy.save(root / "policy")
    return {"root": root, "train": data / "train", "val": data / "val", "policy": root / "policy",
            "codebook": root / "codebook.json"}
