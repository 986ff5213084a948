"""The expert's trajectory space: rear-axle (x, y, heading) poses in the ego frame at t = 0, as residuals
to the constant-velocity extrapolation, standardised per waypoint with statistics of the training split.

    x_norm[i] = (pose[i] - cv[i] - offset[i]) / spread[i],   cv[i] = (vx * t_i, vy * t_i, 0)

(vx, vy) is the rear-axle velocity in the ego frame. `offset` and `spread` are (N, 3) buffers saved with
the expert's weights; before `fit` they hold broad defaults (offset 0, spread growing with t).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sim.geometry import wrap_angle


def waypoint_times(horizon: int, interval_s: float) -> np.ndarray:
    """Times (s) of the plan's poses: interval, 2 * interval, ..., horizon * interval."""
    return (np.arange(horizon) + 1) * interval_s


def resample_poses(poses: np.ndarray, source_interval_s: float, horizon: int, interval_s: float) -> np.ndarray:
    """Poses (..., T, 3) every `source_interval_s` (the origin (0, 0, 0) at t = 0 implied) -> (..., horizon, 3)
    at `interval_s`, by linear interpolation of x, y and the unwrapped heading. Raises if the requested
    horizon runs past the source."""
    poses = np.asarray(poses, dtype=np.float64)
    steps = poses.shape[-2]
    target = waypoint_times(horizon, interval_s)
    if target[-1] > steps * source_interval_s + 1e-9:
        raise ValueError(
            f"cannot resample {steps} poses at {source_interval_s} s to {horizon} at {interval_s} s:"
            f" {target[-1]:.2f} s is past the last pose at {steps * source_interval_s:.2f} s"
        )
    source = np.concatenate([[0.0], waypoint_times(steps, source_interval_s)])
    if len(source) - 1 == horizon and np.allclose(source[1:], target):
        return poses.copy()
    full = np.concatenate([np.zeros(poses.shape[:-2] + (1, 3)), poses], axis=-2)
    full[..., 2] = np.unwrap(full[..., 2], axis=-1)
    flat = full.reshape(-1, steps + 1, 3)
    out = np.stack([np.stack([np.interp(target, source, f[:, d]) for d in range(3)], -1) for f in flat])
    out[..., 2] = wrap_angle(out[..., 2])
    return out.reshape(poses.shape[:-2] + (horizon, 3))


def constant_velocity(velocity: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Velocity (B, 2) m/s in the ego frame, times (N,) s -> poses (B, N, 3) of straight driving, heading 0."""
    xy = velocity[:, None, :] * times[None, :, None]
    return torch.cat([xy, torch.zeros_like(xy[..., :1])], dim=-1)


class TrajectoryNormalizer(nn.Module):
    """Maps ego-frame trajectories (B, N, 3) to the expert's normalised space and back."""

    def __init__(self, horizon: int, interval_s: float):
        super().__init__()
        times = torch.tensor(waypoint_times(horizon, interval_s), dtype=torch.float32)
        self.register_buffer("times", times)
        self.register_buffer("offset", torch.zeros(horizon, 3))
        default = torch.stack([0.5 + 0.5 * times, 0.2 + 0.2 * times, 0.02 + 0.02 * times], dim=-1)
        self.register_buffer("spread", default)
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def horizon(self) -> int:
        return int(self.times.shape[0])

    def normalize(self, trajectory: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        residual = trajectory - constant_velocity(velocity, self.times)
        return (residual - self.offset) / self.spread

    def denormalize(self, x: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        return x * self.spread + self.offset + constant_velocity(velocity, self.times)

    @torch.no_grad()
    def fit(self, trajectories: np.ndarray, velocities: np.ndarray, min_spread_xy: float = 0.05,
            min_spread_heading: float = 0.005) -> None:
        """Set offset / spread to the per-waypoint mean / std of the residuals of the training split:
        trajectories (M, N, 3) at this normaliser's times, velocities (M, 2)."""
        trajectories = np.asarray(trajectories, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        if trajectories.shape[1:] != (self.horizon, 3) or velocities.shape != (len(trajectories), 2):
            raise ValueError(
                f"fit expects trajectories (M, {self.horizon}, 3) and velocities (M, 2),"
                f" got {trajectories.shape} and {velocities.shape}"
            )
        if len(trajectories) < 2:
            raise ValueError("fit needs at least 2 trajectories")
        times = self.times.double().numpy()
        cv = np.concatenate([velocities[:, None, :] * times[None, :, None], np.zeros((len(velocities), self.horizon, 1))], -1)
        residual = trajectories - cv
        floor = np.array([min_spread_xy, min_spread_xy, min_spread_heading])
        self.offset.copy_(torch.from_numpy(residual.mean(0)).float())
        self.spread.copy_(torch.from_numpy(np.maximum(residual.std(0), floor)).float())
        self.fitted.fill_(True)
