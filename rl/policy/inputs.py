"""Scenes -> model inputs. `SceneCollator` is a picklable callable usable as a torch DataLoader
`collate_fn`; it builds left-padded token sequences (the prompt, optionally followed by a completion), the
camera videos, and the expert's history features and targets.

Sequences are LEFT padded: every row ends at the same index, which keeps decoding and the expert's
"next position" simple; positions are computed from the attention mask, so padding never shifts them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import numpy as np
import torch

from rl.policy import prompt as P
from rl.policy.codebook import ActionCodebook
from rl.policy.config import ACTION_SOURCES
from rl.policy.expert import history_features
from rl.policy.tokenizer import PolicyTokenizer
from rl.policy.trajectory import resample_poses
from rl.policy.vision import CameraVideoEncoder
from sim import conventions as C
from sim.scene import Scene

LABEL_NONE, LABEL_TEXT, LABEL_ACTION = 0, 1, 2
IGNORE_INDEX = -100


@dataclass
class Completion:
    """One generated completion (numpy, cheap to ship through Ray).

    token_ids (T,) int64: from `<think>` to `<action_gen>` or `</answer>`; logprobs (T,) float32 under the
    sampling policy (0 where forced); sampled (T,) bool: tokens drawn from the policy (forced structural
    tokens are False: they carry no policy gradient); action_slots (T,) bool: tokens drawn from the
    action-token vocabulary only (their log-probabilities are normalised over the action tokens)."""

    token_ids: np.ndarray
    logprobs: np.ndarray
    sampled: np.ndarray
    action_slots: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        for name in ("logprobs", "sampled", "action_slots"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Completion.{name} has length {len(getattr(self, name))}, token_ids has {n}")


@dataclass
class PolicyInputs:
    """A batch. Shapes: B rows, L tokens (left padded), P vision patches, V = 3 B videos.

    input_ids, attention_mask, mm_token_type_ids (B, L); pixel_values_videos (P, D); video_grid_thw (V, 3);
    second_per_grid_ts (V,); completion_mask (B, L) bool: completion tokens (none for a prompt-only batch);
    history (B, F) and velocity (B, 2): the expert's inputs. Optional, depending on the collation:
    labels (B, L) (-100 = no loss) and label_kind (B, L) (0 none, 1 text, 2 action) for SFT;
    sample_weight (B,); trajectory (B, N, 3) ego-frame target at the expert's horizon;
    sampled (B, L) bool and action_slots (B, L) bool for completions being re-scored."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor
    second_per_grid_ts: torch.Tensor
    completion_mask: torch.Tensor
    history: torch.Tensor
    velocity: torch.Tensor
    scene_tokens: list[str]
    labels: Optional[torch.Tensor] = None
    label_kind: Optional[torch.Tensor] = None
    sample_weight: Optional[torch.Tensor] = None
    trajectory: Optional[torch.Tensor] = None
    sampled: Optional[torch.Tensor] = None
    action_slots: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> "PolicyInputs":
        """Tensors moved to `device`; float tensors (pixels, features) cast to `dtype` when given."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if dtype is not None and value.is_floating_point() and f.name in ("pixel_values_videos",):
                    value = value.to(dtype)
            moved[f.name] = value
        return replace(self, **moved)


def action_token_count(horizon: int, interval_s: float, segment_s: float) -> int:
    """Codebook tokens covering a plan of `horizon` poses every `interval_s`."""
    return int(math.ceil(horizon * interval_s / segment_s - 1e-9))


class SceneCollator:
    """Builds `PolicyInputs` from scenes. `targets`: None (prompts only), "tokens" (SFT stage 1: completion
    with action tokens, LM labels), "expert" (SFT stage 2: completion ending in `<action_gen>`, trajectory
    targets)."""

    def __init__(self, tokenizer: PolicyTokenizer, video: CameraVideoEncoder, horizon: int, interval_s: float,
                 codebook: Optional[ActionCodebook] = None, system_prompt: Optional[str] = None,
                 reasoning_sample_weight: float = 1.0, targets: Optional[str] = None):
        if targets is not None and targets not in ACTION_SOURCES:
            raise ValueError(f"targets={targets!r}: expected None or one of {ACTION_SOURCES}")
        self.tokenizer, self.video = tokenizer, video
        self.horizon, self.interval_s = horizon, interval_s
        self.codebook, self.system_prompt = codebook, system_prompt
        self.reasoning_sample_weight, self.targets = reasoning_sample_weight, targets

    def __call__(self, scenes: Sequence[Scene]) -> PolicyInputs:
        if self.targets is None:
            return self.collate(scenes)
        return self.collate_sft(scenes, self.targets)

    # --- pieces -------------------------------------------------------------------------------------------
    def prompt(self, scene: Scene) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """(prompt ids, pixel values, grid (3, 3), seconds per temporal patch (3,)) of one scene."""
        pixels, grid, seconds = self.video.scene_videos(scene)
        counts = [self.video.geometry.tokens_per_video(C.NUM_HISTORY_FRAMES)] * len(C.CAMERA_NAMES)
        ids = self.tokenizer.encode(P.build_prompt(scene, counts, self.system_prompt))
        if ids.count(self.tokenizer.video_pad_id) != sum(counts):
            found = ids.count(self.tokenizer.video_pad_id)
            raise ValueError(f"scene {scene.token!r}: prompt tokenised to {found} video tokens, expected {sum(counts)}")
        return ids, pixels, grid, seconds

    def target_tokens(self, scene: Scene) -> np.ndarray:
        """Drift-free codebook tokens of the scene's SFT trajectory over the expert's horizon."""
        if self.codebook is None:
            raise ValueError("action-token targets need a codebook: build one (python -m rl.policy.codebook)"
                             " and set it on the policy")
        n = action_token_count(self.horizon, self.interval_s, self.codebook.segment_s)
        poses = resample_poses(P.target_trajectory(scene), C.LOG_INTERVAL_S, n, self.codebook.segment_s)
        return self.codebook.encode(poses)

    def target_trajectory(self, scene: Scene) -> np.ndarray:
        """The scene's SFT trajectory (N, 3) at the expert's horizon (ego frame)."""
        return resample_poses(P.target_trajectory(scene), C.LOG_INTERVAL_S, self.horizon, self.interval_s)

    def target_text(self, scene: Scene, targets: str = "tokens") -> tuple[str, str]:
        """(mode, SFT completion text): the scene's reasoning, then its action tokens ("tokens") or the
        action-generation token ("expert")."""
        mode, reasoning = P.reasoning_of(scene)
        return mode, P.completion_text(reasoning, self.target_tokens(scene) if targets == "tokens" else None)

    # --- batches ------------------------------------------------------------------------------------------
    def collate(self, scenes: Sequence[Scene], completions: Optional[Sequence[Completion]] = None) -> PolicyInputs:
        """Prompts, each followed by its completion when given (the learner's re-scoring batch)."""
        if completions is not None and len(completions) != len(scenes):
            raise ValueError(f"{len(scenes)} scenes but {len(completions)} completions")
        rows = []
        for i, scene in enumerate(scenes):
            ids, pixels, grid, seconds = self.prompt(scene)
            extra = {}
            if completions is not None:
                c = completions[i]
                extra = dict(completion=[int(t) for t in c.token_ids], sampled=np.asarray(c.sampled, bool),
                             action_slots=np.asarray(c.action_slots, bool))
            rows.append(dict(scene=scene, prompt=ids, pixels=pixels, grid=grid, seconds=seconds, **extra))
        return self._assemble(rows)

    def collate_sft(self, scenes: Sequence[Scene], targets: str) -> PolicyInputs:
        """Prompts + teacher-forced completions, with labels (text / action) and trajectory targets."""
        rows = []
        for scene in scenes:
            ids, pixels, grid, seconds = self.prompt(scene)
            mode, text = self.target_text(scene, targets)
            completion = self.tokenizer.encode(text)
            weight = self.reasoning_sample_weight if mode == "slow" else 1.0
            rows.append(dict(scene=scene, prompt=ids, pixels=pixels, grid=grid, seconds=seconds, completion=completion,
                             weight=weight, trajectory=self.target_trajectory(scene)))
        return self._assemble(rows, with_labels=targets == "tokens")

    def _assemble(self, rows: list[dict], with_labels: bool = False) -> PolicyInputs:
        tok = self.tokenizer
        sequences = [r["prompt"] + r.get("completion", []) for r in rows]
        length = max(len(s) for s in sequences)
        b = len(rows)
        input_ids = torch.full((b, length), tok.pad_id, dtype=torch.long)
        attention = torch.zeros(b, length, dtype=torch.long)
        completion_mask = torch.zeros(b, length, dtype=torch.bool)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
        label_kind = torch.zeros(b, length, dtype=torch.int8)
        sampled = torch.zeros(b, length, dtype=torch.bool)
        action_slots = torch.zeros(b, length, dtype=torch.bool)
        for i, (row, seq) in enumerate(zip(rows, sequences)):
            start = length - len(seq)
            input_ids[i, start:] = torch.tensor(seq)
            attention[i, start:] = 1
            comp = row.get("completion", [])
            if comp:
                c0 = length - len(comp)
                completion_mask[i, c0:] = True
                comp_ids = torch.tensor(comp)
                labels[i, c0:] = comp_ids
                label_kind[i, c0:] = torch.where(tok.is_action(comp_ids), LABEL_ACTION, LABEL_TEXT).to(torch.int8)
                if "sampled" in row:
                    sampled[i, c0:] = torch.as_tensor(np.asarray(row["sampled"], dtype=bool).copy())
                    action_slots[i, c0:] = torch.as_tensor(np.asarray(row["action_slots"], dtype=bool).copy())
        mm_types = (input_ids == tok.video_pad_id).to(torch.int32) * 2
        history = np.stack([history_features(r["scene"]) for r in rows])
        velocity = np.array([[r["scene"].ego.vx, r["scene"].ego.vy] for r in rows], dtype=np.float32)
        inputs = PolicyInputs(
            input_ids=input_ids,
            attention_mask=attention,
            mm_token_type_ids=mm_types,
            pixel_values_videos=torch.from_numpy(np.concatenate([r["pixels"] for r in rows])),
            video_grid_thw=torch.from_numpy(np.concatenate([r["grid"] for r in rows])),
            second_per_grid_ts=torch.from_numpy(np.concatenate([r["seconds"] for r in rows])),
            completion_mask=completion_mask,
            history=torch.from_numpy(history),
            velocity=torch.from_numpy(velocity),
            scene_tokens=[r["scene"].token for r in rows],
        )
        if with_labels:
            inputs.labels, inputs.label_kind = labels, label_kind
        if "weight" in rows[0]:
            inputs.sample_weight = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        if "trajectory" in rows[0]:
            inputs.trajectory = torch.from_numpy(np.stack([r["trajectory"] for r in rows])).float()
        if "sampled" in rows[0]:
            inputs.sampled, inputs.action_slots = sampled, action_slots
        return inputs
