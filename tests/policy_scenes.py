"""Scenes and tiny policies for the policy tests, built in code."""
from __future__ import annotations

import numpy as np
import torch

from rl.policy.codebook import build_codebook
from rl.policy.config import PolicyConfig
from rl.policy.policy import SpanVLAPolicy
from sim import conventions as C
from sim.scene import Camera, EgoState, MapData, Reasoning, Scene


def smooth_trajectories(n: int, seed: int = 0, steps: int = 10, dt: float = 0.5) -> np.ndarray:
    """(n, steps, 3) smooth rear-axle trajectories (speed 0-15 m/s, gentle acceleration and curvature)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1) * dt
    out = []
    for _ in range(n):
        v, a, k = rng.uniform(0, 15), rng.uniform(-1.5, 1.0), rng.uniform(-0.03, 0.03)
        s = np.maximum.accumulate(np.maximum(v * t + 0.5 * a * t * t, 0.0))
        ds = np.diff(np.concatenate([[0.0], s]))
        h = np.concatenate([[0.0], k * s])
        mid = (h[:-1] + h[1:]) / 2
        out.append(np.stack([np.cumsum(ds * np.cos(mid)), np.cumsum(ds * np.sin(mid)), h[1:]], -1))
    return np.array(out)


def make_policy_scene(index: int, slow: bool = False, sample_type: str = "pos", image_size=(48, 96)) -> Scene:
    """A straight-road scene with random camera images, a constant-speed history and a smooth future."""
    rng = np.random.default_rng(index)
    v = float(rng.uniform(3.0, 12.0))
    history = [EgoState(-v * t, 0.0, 0.0, v, 0.0) for t in (1.5, 1.0, 0.5)] + [EgoState(0.0, 0.0, 0.0, v, 0.1, 0.3, 0.05)]
    cameras = [
        Camera(name, np.eye(3), np.eye(3), np.zeros(3),
               rng.integers(0, 256, (C.NUM_HISTORY_FRAMES, *image_size, 3), dtype=np.uint8))
        for name in C.CAMERA_NAMES
    ]
    future = smooth_trajectories(1, seed=index)[0]
    text = "A car ahead in the ego lane brakes. Slow down and keep the gap. Keep the lane. Then go."
    reasoning = Reasoning("slow", [], "decelerate", "keep lane", text) if slow else None
    scene = Scene(f"scene-{index}", history, index % len(C.DRIVING_COMMANDS), MapData(), future=future, cameras=cameras,
                  reasoning=reasoning, sample_type=sample_type)
    if sample_type == "rec":
        scene.recovery_trajectory = future.copy()
    return scene


def tiny_policy(config: PolicyConfig | None = None, with_codebook: bool = True) -> SpanVLAPolicy:
    """The tiny preset with a codebook of smooth trajectories and a normaliser fitted on them."""
    torch.manual_seed(0)
    policy = SpanVLAPolicy.build(config or PolicyConfig())
    if with_codebook:
        policy.set_codebook(build_codebook(smooth_trajectories(400), policy.config.codebook.num_tokens, 0.2))
    scenes = [make_policy_scene(i) for i in range(8)]
    policy.fit_trajectory_normalizer(scenes)
    return policy.eval()
