"""The action codebook: discrete motion tokens for the autoregressive baseline and the SFT targets.

A token is one motion segment (dx, dy, dheading) of `segment_s` seconds: the rear-axle pose at the end of
the segment in the frame of its start. The codebook is built by K-disk clustering (AutoVLA, after SMART):
pick a random uncovered segment, make the segments whose rolled-out box corners lie within `delta` metres
(mean over the 4 corners) one cluster, store the cluster mean as a token, repeat until K tokens or nothing
is left. Token 0 is standing still.

Encoding is drift-free: each step picks the token nearest to the ground truth as seen from the pose
reconstructed from the tokens chosen so far, so errors do not accumulate. Decoding composes tokens from the
origin. Command line:

    python -m rl.policy.codebook --dataset DIR --out FILE [--k K --delta D]
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from sim.geometry import box_corners, wrap_angle

FORMAT_NAME = "spanvla-action-codebook"
FORMAT_VERSION = 1


class CodebookError(ValueError):
    """A codebook file or input that cannot be used; the message names the file or the field."""


@dataclass
class ActionCodebook:
    """K motion tokens; `segments[i]` = (dx, dy, dheading) of token i in its start frame (m, m, rad).

    Box used by the distance: `box_length` x `box_width` centred `rear_axle_to_center` ahead of the rear axle.
    """

    segments: np.ndarray  # (K, 3)
    segment_s: float = 0.5
    delta: float = 0.2
    box_length: float = 4.8
    box_width: float = 2.0
    rear_axle_to_center: float = 1.461
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.segments = np.asarray(self.segments, dtype=np.float64).reshape(-1, 3)
        if len(self.segments) == 0 or not np.allclose(self.segments[0], 0.0):
            raise CodebookError("codebook segments[0] must be standing still (0, 0, 0)")
        self._corners = segment_corners(self.segments, self.box_length, self.box_width, self.rear_axle_to_center)

    @property
    def num_tokens(self) -> int:
        return len(self.segments)

    def distance_to_tokens(self, segments: np.ndarray) -> np.ndarray:
        """Mean box-corner distance (m) from segments (M, 3) to every token: (M, K)."""
        corners = segment_corners(segments, self.box_length, self.box_width, self.rear_axle_to_center)
        return np.linalg.norm(corners[:, None] - self._corners[None], axis=-1).mean(-1)

    def encode(self, trajectories: np.ndarray) -> np.ndarray:
        """Rear-axle poses (..., T, 3) in the ego frame, one every `segment_s` -> tokens (..., T) int64, drift-free."""
        trajectories = np.asarray(trajectories, dtype=np.float64)
        if trajectories.ndim < 2 or trajectories.shape[-1] != 3:
            raise CodebookError(f"encode expects poses (..., T, 3), got shape {trajectories.shape}")
        lead, steps = trajectories.shape[:-2], trajectories.shape[-2]
        flat = trajectories.reshape(-1, steps, 3)
        pose = np.zeros((len(flat), 3))
        tokens = np.zeros((len(flat), steps), dtype=np.int64)
        for i in range(steps):
            wanted = _relative_batch(pose, flat[:, i])
            tokens[:, i] = self.distance_to_tokens(wanted).argmin(-1)
            pose = _absolute_batch(pose, self.segments[tokens[:, i]])
        return tokens.reshape(*lead, steps)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens (..., T) -> rear-axle poses (..., T, 3) in the ego frame, composed from the origin."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.num_tokens):
            raise CodebookError(f"token ids must lie in [0, {self.num_tokens}), got {tokens.min()}..{tokens.max()}")
        lead, steps = tokens.shape[:-1], tokens.shape[-1]
        flat = tokens.reshape(-1, steps)
        pose = np.zeros((len(flat), 3))
        out = np.zeros((len(flat), steps, 3))
        for i in range(steps):
            pose = _absolute_batch(pose, self.segments[flat[:, i]])
            out[:, i] = pose
        return out.reshape(*lead, steps, 3)

    def to_json(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "segment_s": self.segment_s,
            "delta": self.delta,
            "box_length": self.box_length,
            "box_width": self.box_width,
            "rear_axle_to_center": self.rear_axle_to_center,
            "stats": self.stats,
            "segments": self.segments.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "<dict>") -> "ActionCodebook":
        if data.get("format") != FORMAT_NAME:
            raise CodebookError(f"{source}: not an action codebook (format {data.get('format')!r}, expected {FORMAT_NAME!r})")
        if data.get("version") != FORMAT_VERSION:
            raise CodebookError(f"{source}: codebook format version {data.get('version')!r}, this code reads {FORMAT_VERSION}")
        try:
            return cls(
                segments=np.asarray(data["segments"], dtype=np.float64),
                segment_s=float(data["segment_s"]),
                delta=float(data["delta"]),
                box_length=float(data["box_length"]),
                box_width=float(data["box_width"]),
                rear_axle_to_center=float(data["rear_axle_to_center"]),
                stats=dict(data.get("stats", {})),
            )
        except KeyError as err:
            raise CodebookError(f"{source}: codebook field {err.args[0]!r} is missing") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ActionCodebook":
        path = Path(path)
        if not path.is_file():
            raise CodebookError(f"codebook file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CodebookError(f"{path}: not valid JSON ({err})") from None
        return cls.from_json(data, str(path))


def segment_corners(segments: np.ndarray, box_length: float, box_width: float, rear_axle_to_center: float) -> np.ndarray:
    """Corners (M, 4, 2) of the vehicle box after each segment (M, 3) driven from the origin."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 3)
    centres = segments.copy()
    centres[:, 0] += rear_axle_to_center * np.cos(segments[:, 2])
    centres[:, 1] += rear_axle_to_center * np.sin(segments[:, 2])
    return box_corners(centres, box_length, box_width)


def trajectory_segments(trajectories: np.ndarray) -> np.ndarray:
    """Trajectories (N, T, 3) in the ego frame (the origin is the pose before the first) -> segments (N*T, 3)."""
    trajectories = np.asarray(trajectories, dtype=np.float64)
    if trajectories.ndim != 3 or trajectories.shape[-1] != 3:
        raise CodebookError(f"trajectories must have shape (N, T, 3), got {trajectories.shape}")
    starts = np.concatenate([np.zeros_like(trajectories[:, :1]), trajectories[:, :-1]], axis=1)
    return _relative_batch(starts.reshape(-1, 3), trajectories.reshape(-1, 3))


def build_codebook(
    trajectories: np.ndarray,
    num_tokens: int = 256,
    delta: float = 0.2,
    segment_s: float = 0.5,
    box_length: float = 4.8,
    box_width: float = 2.0,
    rear_axle_to_center: float = 1.461,
    seed: int = 0,
) -> ActionCodebook:
    """K-disk clustering of the segments of `trajectories` (N, T, 3) (poses every `segment_s` seconds,
    ego frame). Trajectories with non-finite poses are skipped. Returns at most `num_tokens` tokens."""
    trajectories = np.asarray(trajectories, dtype=np.float64)
    if trajectories.ndim != 3 or trajectories.shape[-1] != 3:
        raise CodebookError(f"trajectories must have shape (N, T, 3), got {trajectories.shape}")
    trajectories = trajectories[np.isfinite(trajectories).all(axis=(1, 2))]
    if len(trajectories) == 0:
        raise CodebookError("no finite trajectory to build a codebook from")
    segments = trajectory_segments(trajectories)
    corners = segment_corners(segments, box_length, box_width, rear_axle_to_center)
    rng = np.random.default_rng(seed)

    tokens = [np.zeros(3)]
    still = segment_corners(tokens[0], box_length, box_width, rear_axle_to_center)[0]
    uncovered = np.linalg.norm(corners - still, axis=-1).mean(-1) >= delta
    while len(tokens) < num_tokens and uncovered.any():
        candidates = np.flatnonzero(uncovered)
        pick = candidates[rng.integers(len(candidates))]
        dist = np.linalg.norm(corners[candidates] - corners[pick], axis=-1).mean(-1)
        members = candidates[dist < delta]
        tokens.append(_mean_segment(segments[members]))
        uncovered[members] = False
    codebook = ActionCodebook(
        np.stack(tokens), segment_s, delta, box_length, box_width, rear_axle_to_center,
        stats={"num_trajectories": int(len(trajectories)), "num_segments": int(len(segments)),
               "uncovered_segments": int(uncovered.sum())},
    )
    codebook.stats.update(round_trip_error(codebook, trajectories))
    return codebook


def round_trip_error(codebook: ActionCodebook, trajectories: np.ndarray) -> dict:
    """Encode then decode `trajectories` (N, T, 3); position errors in metres (mean over poses, final pose)."""
    trajectories = np.asarray(trajectories, dtype=np.float64)
    decoded = codebook.decode(codebook.encode(trajectories))
    err = np.linalg.norm(decoded[..., :2] - trajectories[..., :2], axis=-1)
    heading = np.abs(wrap_angle(decoded[..., 2] - trajectories[..., 2]))
    return {
        "round_trip_ade_m": float(err.mean()),
        "round_trip_fde_m": float(err[:, -1].mean()),
        "round_trip_max_m": float(err.max()),
        "round_trip_heading_rad": float(heading.mean()),
    }


def _mean_segment(segments: np.ndarray) -> np.ndarray:
    heading = np.arctan2(np.sin(segments[:, 2]).mean(), np.cos(segments[:, 2]).mean())
    return np.array([segments[:, 0].mean(), segments[:, 1].mean(), heading])


def _relative_batch(origins: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Row-wise `absolute_to_relative` for origins (M, 3) and poses (M, 3)."""
    c, s = np.cos(origins[:, 2]), np.sin(origins[:, 2])
    dx, dy = poses[:, 0] - origins[:, 0], poses[:, 1] - origins[:, 1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy, wrap_angle(poses[:, 2] - origins[:, 2])], axis=-1)


def _absolute_batch(origins: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Row-wise `relative_to_absolute`: segments (M, 3) driven from origins (M, 3)."""
    c, s = np.cos(origins[:, 2]), np.sin(origins[:, 2])
    return np.stack(
        [origins[:, 0] + c * segments[:, 0] - s * segments[:, 1],
         origins[:, 1] + s * segments[:, 0] + c * segments[:, 1],
         wrap_angle(origins[:, 2] + segments[:, 2])],
        axis=-1,
    )


# --- command line -----------------------------------------------------------------------------------------

def read_future_trajectories(dataset: str | os.PathLike, limit: Optional[int] = None) -> np.ndarray:
    """Ground-truth futures (N, 10, 3) of a scene dataset (`sim.dataset`: a directory of Parquet shards or
    one shard), streamed batch by batch from its `future` column (rows without one are skipped), or of a
    `.npy` array (N, T, 3)."""
    path = Path(dataset)
    if path.suffix == ".npy":
        if not path.is_file():
            raise CodebookError(f"trajectory file not found: {path}")
        return np.load(path)[:limit]
    from sim import conventions as C
    from sim.dataset import SceneDataset, fixed_list_to_numpy

    chunks: list[np.ndarray] = []
    count = 0
    for batch in SceneDataset(path).batches(columns=["future"]):
        futures = fixed_list_to_numpy(batch.column(0), (C.NUM_FUTURE_FRAMES, 3)).astype(np.float64)
        futures = futures[np.isfinite(futures).all(axis=(1, 2))]
        chunks.append(futures)
        count += len(futures)
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise CodebookError(f"{path}: no scene has a `future` trajectory")
    return np.concatenate(chunks)[:limit]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.policy.codebook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="scene dataset (sim.dataset: directory or shard), or a .npy (N, T, 3)")
    parser.add_argument("--out", required=True, help="codebook JSON to write")
    parser.add_argument("--k", type=int, default=256, help="number of tokens (token 0 = standing still)")
    parser.add_argument("--delta", type=float, default=0.2, help="K-disk radius: mean box-corner distance (m)")
    parser.add_argument("--segment-s", type=float, default=0.5, help="segment duration (s) = the dataset's pose interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="read at most this many scenes")
    args = parser.parse_args(argv)
    futures = read_future_trajectories(args.dataset, args.limit)
    codebook = build_codebook(futures, num_tokens=args.k, delta=args.delta, segment_s=args.segment_s, seed=args.seed)
    codebook.save(args.out)
    s = codebook.stats
    print(
        f"codebook: {codebook.num_tokens} tokens from {s['num_segments']} segments of {s['num_trajectories']} trajectories"
        f" ({s['uncovered_segments']} segments left uncovered at K={args.k}, delta={args.delta} m)\n"
        f"round trip: ADE {s['round_trip_ade_m']:.3f} m, FDE {s['round_trip_fde_m']:.3f} m, max {s['round_trip_max_m']:.3f} m\n"
        f"written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
