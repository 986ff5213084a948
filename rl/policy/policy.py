"""`SpanVLAPolicy`: the Qwen2.5-VL backbone, its tokenizer, the action codebook and the flow-matching
action expert behind one API for inference (`plan`, `sample_group`), the learner (`token_logprobs`,
`flow_step_logprobs`, `score_completions`), SFT (`vlm_sft_loss`, `expert_flow_matching_loss`, `collator`)
and persistence (`save`, `load`). The work itself lives in `inference`, `training` and `policy_dir`.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from rl.policy import inference, policy_dir, training
from rl.policy import prompt as P
from rl.policy.backbone import attention_geometry, build_vlm, video_geometry
from rl.policy.codebook import ActionCodebook
from rl.policy.config import PolicyConfig, validate_policy_config
from rl.policy.expert import ActionExpert
from rl.policy.inputs import Completion, PolicyInputs, SceneCollator, action_token_count
from rl.policy.outputs import FlowLogprobs, GroupSample, LossOutput, PlanResult, TokenLogprobs
from rl.policy.tokenizer import PolicyTokenizer
from rl.policy.trajectory import resample_poses
from rl.policy.vision import CameraVideoEncoder
from sim import conventions as C
from sim.scene import Scene


class SpanVLAPolicy(nn.Module):
    """The SpanVLA policy. Build with `SpanVLAPolicy.build(cfg)` or `SpanVLAPolicy.load(dir)`.

    Modules: `vlm` (transformers' Qwen2_5_VLForConditionalGeneration, in `backbone.dtype`) and `expert`
    (`ActionExpert`, float32 whatever the VLM's dtype: the flow and its log-probabilities stay in fp32);
    `tokenizer` (`PolicyTokenizer`), `codebook` (`ActionCodebook` or None) and `config` are plain attributes.

    Precision contract (inference, SFT and the GRPO learner alike): the VLM (LoRA adapters included) runs in
    one dtype, `backbone.dtype` or bf16 under `set_precision(bf16=True)` / a bf16 DeepSpeed engine; the
    expert's parameters, the flow (prior, chain, velocity) and every log-probability (token and flow) are fp32.
    The expert casts the VLM's K/V to fp32 at its input, token logits are cast to fp32 before the softmax.
    `fp32_modules()` names what `rl.deepspeed_engine.create_engine` keeps out of its bf16 cast, because
    DeepSpeed's own bf16 mode would cast the whole wrapped module. A rollout copy and the learner must hold
    the VLM in the same dtype for the recorded log-probabilities to be the learner's (ratio 1 at the first
    update): both call `set_precision` with `learner.bf16`.
    """

    def __init__(self, config: PolicyConfig, tokenizer: PolicyTokenizer, vlm: nn.Module, expert: ActionExpert,
                 codebook: Optional[ActionCodebook] = None):
        super().__init__()
        self.config = validate_policy_config(config)
        self.tokenizer = tokenizer
        self.vlm = vlm
        self.expert = expert
        self.codebook: Optional[ActionCodebook] = None
        self.video = CameraVideoEncoder(video_geometry(vlm, config.backbone))
        if codebook is not None:
            self.set_codebook(codebook)

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: Optional[PolicyConfig] = None) -> "SpanVLAPolicy":
        """A fresh policy: the preset VLM with random weights (or the pretrained one), a new expert, the
        codebook of `config.codebook.path` when set."""
        config = validate_policy_config(config or PolicyConfig())
        k = config.codebook.num_tokens
        if config.backbone.preset == "pretrained":
            if not os.path.isdir(config.backbone.pretrained_path):
                raise FileNotFoundError(
                    f"VLM directory not found: {config.backbone.pretrained_path} (policy.backbone.pretrained_path)")
            tokenizer = PolicyTokenizer.from_pretrained(config.backbone.pretrained_path, k)
        else:
            tokenizer = PolicyTokenizer.build_tiny(k)
        vlm = build_vlm(config.backbone, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.backbone.seed + 1)
            expert = ActionExpert(config.expert, attention_geometry(vlm))
        codebook = ActionCodebook.load(config.codebook.path) if config.codebook.path else None
        return cls(config, tokenizer, vlm, expert, codebook)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "SpanVLAPolicy":
        """A policy saved with `save`; raises `policy_dir.CheckpointError` naming a missing or bad file."""
        return policy_dir.load_policy(cls, path, device)

    def save(self, path: str | os.PathLike) -> None:
        """Write the whole policy as one directory (safetensors + JSON), atomically."""
        policy_dir.save_policy(self, path)

    def set_codebook(self, codebook: ActionCodebook) -> None:
        """Use `codebook` for action-token targets and decoding (at most `codebook.num_tokens` of config)."""
        if codebook.num_tokens > self.tokenizer.num_action_tokens:
            raise ValueError(
                f"codebook has {codebook.num_tokens} tokens but the tokenizer has {self.tokenizer.num_action_tokens}"
                " <action_i> tokens (policy.codebook.num_tokens)"
            )
        self.codebook = codebook

    def fit_trajectory_normalizer(self, scenes: Optional[Sequence[Scene]] = None, *,
                                  futures: Optional[np.ndarray] = None, velocities: Optional[np.ndarray] = None) -> None:
        """Fit the expert's per-waypoint residual statistics on the training split: from scenes (their SFT
        trajectories), or from arrays (e.g. a dataset's `future` and `velocity` columns): futures (M, 10, 3)
        at 0.5 s in the ego frame and ego velocities (M, 2)."""
        e = self.config.expert
        if scenes is not None:
            futures = np.stack([P.target_trajectory(s) for s in scenes])
            velocities = np.array([[s.ego.vx, s.ego.vy] for s in scenes])
        if futures is None or velocities is None:
            raise ValueError("fit_trajectory_normalizer needs scenes, or futures and velocities")
        trajectories = resample_poses(np.asarray(futures, dtype=np.float64), C.LOG_INTERVAL_S, e.horizon, e.interval_s)
        self.expert.normalizer.fit(trajectories, velocities, e.min_spread_xy, e.min_spread_heading)

    def add_pace_head(self) -> "SpanVLAPolicy":
        """Give the expert a pace head (`rl.policy.pace`) unless it has one: new, it drives every plan as it is, and
        every copy of this policy gets the same one (drawn from `backbone.seed`). Sets `config.expert.pace` (the
        expert's own config)."""
        if self.expert.pace_head is None:
            self.expert.add_pace_head(seed=self.config.backbone.seed + 2)
        return self

    # --- precision ----------------------------------------------------------------------------------------
    def fp32_modules(self) -> list[nn.Module]:
        """The modules held in fp32 whatever the VLM's dtype: the flow expert."""
        return [self.expert]

    def set_precision(self, bf16: bool) -> "SpanVLAPolicy":
        """VLM parameters (adapters included) to bf16 when `bf16` (else left as they are); the expert to fp32."""
        from rl.deepspeed_engine import apply_precision

        apply_precision(self, bf16, self.fp32_modules())
        return self

    # --- properties ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.vlm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The VLM's dtype (the expert is float32)."""
        return next(self.vlm.parameters()).dtype

    @property
    def horizon(self) -> int:
        return self.config.expert.horizon

    @property
    def action_vocab(self) -> int:
        """Action tokens the decoder may emit: the codebook's entries (all `<action_i>` without a codebook)."""
        return self.codebook.num_tokens if self.codebook is not None else self.tokenizer.num_action_tokens

    @property
    def num_action_tokens(self) -> int:
        """Codebook tokens in an answer (covering the expert's horizon)."""
        segment_s = self.codebook.segment_s if self.codebook is not None else self.config.codebook.segment_s
        return action_token_count(self.config.expert.horizon, self.config.expert.interval_s, segment_s)

    # --- inputs -------------------------------------------------------------------------------------------
    def collator(self, targets: Optional[str] = None) -> SceneCollator:
        """A picklable DataLoader `collate_fn`: targets None (prompts), "tokens" (SFT stage 1) or "expert"
        (SFT stage 2)."""
        e = self.config.expert
        return SceneCollator(self.tokenizer, self.video, e.horizon, e.interval_s, self.codebook,
                             self.config.system_prompt, self.config.reasoning_sample_weight, targets)

    def collate_completions(self, scenes: Sequence[Scene], completions: Sequence[Completion]) -> PolicyInputs:
        """The learner's batch: each scene's prompt followed by one sampled completion."""
        return self.collator().collate(scenes, completions)

    def tokens_to_trajectory(self, action_tokens: Sequence[int]) -> np.ndarray:
        """Codebook indices -> (N, 3) at the expert's horizon (composed from the origin, then resampled)."""
        if self.codebook is None:
            raise ValueError("decoding action tokens needs a codebook: set one with set_codebook")
        tokens = np.asarray(action_tokens, dtype=np.int64)
        needed = self.num_action_tokens
        if len(tokens) < needed:
            raise ValueError(f"{len(tokens)} action tokens cover less than the {needed} the horizon needs")
        poses = self.codebook.decode(tokens[:needed])
        e = self.config.expert
        return resample_poses(poses, self.codebook.segment_s, e.horizon, e.interval_s)

    # --- parameters ---------------------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"vision": the vision encoder, "language": the language model and its head, "expert": the expert}."""
        vision = list(self.vlm.model.visual.parameters())
        vision_ids = {id(p) for p in vision}
        language = [p for p in self.vlm.parameters() if id(p) not in vision_ids]
        return {"vision": vision, "language": language, "expert": list(self.expert.parameters())}

    def set_trainable(self, vision: bool = False, language: bool = True, expert: bool = True) -> None:
        """requires_grad per group (the paper keeps the vision encoder frozen)."""
        for name, flag in (("vision", vision), ("language", language), ("expert", expert)):
            for p in self.parameter_groups()[name]:
                p.requires_grad_(flag)

    # --- inference ----------------------------------------------------------------------------------------
    def plan(self, scenes: Sequence[Scene], action_source: Optional[str] = None, seed: int = 0,
             drive_pace: bool = True) -> PlanResult:
        """Deterministic planning for a batch: greedy reasoning, Euler flow from a_his (or tokens decoded), driven
        at the pace head's mean pace when there is one and `drive_pace`."""
        return inference.plan(self, scenes, action_source or self.config.plan_source, seed, drive_pace)

    def sample_group(self, scene: Scene, group_size: int, *, temperature: float = 1.0, top_p: float = 1.0,
                     flow_noise: float = 0.0, action_source: Optional[str] = None, seed: Optional[int] = None,
                     generator: Optional[torch.Generator] = None,
                     max_reasoning_tokens: Optional[int] = None, group_reasoning: str = "sampled",
                     flow_start: str = "noisy", pace_std: float = 0.0) -> GroupSample:
        """G samples of one scene with ONE prefill; deterministic under a fixed seed (see `inference.sample_group`)."""
        return inference.sample_group(
            self, scene, group_size, temperature=temperature, top_p=top_p, flow_noise=flow_noise,
            action_source=action_source or self.config.plan_source, seed=seed, generator=generator,
            max_reasoning_tokens=max_reasoning_tokens or self.config.max_reasoning_tokens,
            group_reasoning=group_reasoning, flow_start=flow_start, pace_std=pace_std,
        )

    # --- learner ------------------------------------------------------------------------------------------
    def token_logprobs(self, batch: PolicyInputs, temperature: float = 1.0) -> TokenLogprobs:
        """Per-token log-probabilities (B, T) with grad of the completions in `batch` (`collate_completions`);
        equal to the sampled ones for the same weights (see `training.token_logprobs`)."""
        return training.token_logprobs(self, batch, temperature)

    def flow_step_logprobs(self, batch: PolicyInputs, chains: training.Chains, noise_level: Optional[float] = None,
                           kv_grad: bool = False) -> FlowLogprobs:
        """Per-step log-probabilities (B, K) and means of the given flow chains, with grad through the expert
        (and through the VLM's K/V when `kv_grad`); see `training.flow_step_logprobs`."""
        return training.flow_step_logprobs(self, batch, chains, noise_level, kv_grad)

    def score_completions(self, batch: PolicyInputs, chains: Optional[training.Chains] = None, temperature: float = 1.0,
                          noise_level: Optional[float] = None,
                          kv_grad: bool = True) -> tuple[TokenLogprobs, Optional[FlowLogprobs]]:
        """Token and flow log-probabilities from one VLM forward (joint training)."""
        return training.score_completions(self, batch, chains, temperature, noise_level, kv_grad)

    def vlm_sft_loss(self, batch: PolicyInputs) -> LossOutput:
        """SFT stage 1 loss on a `collator("tokens")` batch (see `training.vlm_sft_loss`)."""
        return training.vlm_sft_loss(self, batch)

    def expert_flow_matching_loss(self, batch: PolicyInputs, generator: Optional[torch.Generator] = None) -> LossOutput:
        """SFT stage 2 loss on a `collator("expert")` batch, the VLM frozen (see `training.expert_flow_matching_loss`)."""
        return training.expert_flow_matching_loss(self, batch, generator)


__all__ = ["SpanVLAPolicy"]
