"""The configuration schema of every entry point (SFT, GRPO training, evaluation, the demo).

Typed dataclasses with documented defaults; YAML files in `configs/` set values, `key=value` overrides on the
command line win (see `rl.config_io.load_config`). Defaults marked [paper] follow SpanVLA / AutoVLA;
the others are this project's choices for the tiny CPU preset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rl.config_io import ConfigError
from rl.policy.config import PolicyConfig, validate_policy_config

TRAIN_TARGETS = ("vlm", "expert", "joint")
KL_ESTIMATORS = ("k1", "k3")


@dataclass
class DataConfig:
    """Datasets written by `python -m sim.generate` (Parquet shards + manifest)."""

    train: str = "data/tiny/train"
    val: str = "data/tiny/val"
    test: str = "data/tiny/test"


@dataclass
class SFTConfig:
    """Supervised fine-tuning. stage "vlm": LM + action-token loss; stage "expert": flow matching, VLM frozen."""

    stage: str = "vlm"
    init: Optional[str] = None  # a saved policy to start from (stage "expert" needs the stage-"vlm" result)
    out_dir: str = "runs/sft"
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    grad_clip: float = 1.0
    zero_stage: int = 1
    freeze_vision: bool = False  # [paper] freezes it; the tiny preset's random vision encoder must learn
    sample_types: list[str] = field(default_factory=lambda: ["pos", "rec"])  # negatives are never imitated
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class ScheduleConfig:
    """GRPO data recipe [paper]: warm-up on positives, then a mix (best: 2K pos + 1.5K neg + 0.5K rec)."""

    warmup_steps: int = 2
    mix: dict[str, float] = field(default_factory=lambda: {"pos": 0.5, "neg": 0.375, "rec": 0.125})


@dataclass
class GRPOConfig:
    """The GRPO objective and step structure."""

    steps: int = 20
    groups_per_step: int = 8  # scenes per step
    group_size: int = 8  # [paper: 64] samples per scene
    train_target: str = "expert"  # vlm (the paper's: token log-probs) | expert (flow steps) | joint
    lr: float = 3e-5  # [paper]
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    updates_per_step: int = 1  # optimizer steps per batch; [paper] 1: the ratio is 1 and clipping never acts
    micro_batch_size: int = 16  # samples per learner forward/backward
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_beta: float = 0.04  # [AutoVLA]
    kl_estimator: str = "k3"
    normalize_std: bool = True
    advantage_std_floor: float = 0.0  # normalise by max(std, floor): tiny reward differences stay tiny
    filter_no_spread: bool = True
    main_reward: str = "pdms"  # the component whose spread decides whether a group is kept
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class RolloutConfig:
    """Rollout workers: inference copies of the policy sampling whole groups."""

    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    action_source: str = "expert"  # the rewarded trajectory: from the expert or decoded from action tokens
    temperature: float = 1.0
    top_p: float = 1.0
    flow_noise: float = 0.5  # a in spanvla.md 2.4 (0: deterministic Euler)
    max_retries: int = 2  # re-sends of a group whose worker died


@dataclass
class RewardTermConfig:
    """One reward function: a registry name, `pkg.module:fn` or `path/file.py:fn`; its weight and kwargs."""

    name: str = "pdms"
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)
    label: Optional[str] = None


def _default_rewards() -> list[RewardTermConfig]:
    # r = r_drive - w_N r_neg + w_R r_rec - lambda_C r_CoT   (spanvla.md 2.3)
    return [
        RewardTermConfig("pdms", 1.0, {"version": "v1"}),
        RewardTermConfig("negative_l2", -5.0, {"threshold_m": 1.7}),
        RewardTermConfig("recovery_l2", 1.0, {"threshold_m": 1.7}),
        RewardTermConfig("cot_length", -1.0, {}),
    ]


@dataclass
class ScorerConfig:
    """Scorer workers (CPU): reward functions loaded by name inside each worker."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    timeout_s: float = 60.0
    rewards: list[RewardTermConfig] = field(default_factory=_default_rewards)


@dataclass
class LoRAConfig:
    """LoRA adapters on the VLM's language model through peft [paper: LoRA]."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class LearnerConfig:
    """The learner group: one DeepSpeed job over `num_workers` ranks."""

    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    zero_stage: int = 1
    bf16: bool = False
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    reference: str = "frozen_copy"  # frozen_copy | adapters_off (LoRA only)


@dataclass
class WeightSyncConfig:
    backend: str = "auto"  # auto | object_store | collective
    bucket_mb: float = 64.0


@dataclass
class CheckpointConfig:
    dir: Optional[str] = None  # None: <logging.out_dir>/ckpt
    every: int = 10  # steps; the final step is always saved
    resume: str = "auto"  # auto: continue from <dir>/latest when it exists | never
    keep_last: int = 3


@dataclass
class LoggingConfig:
    out_dir: str = "runs/grpo"
    run_name: Optional[str] = None
    wandb: bool = True
    wandb_project: str = "spanvla-rl"
    wandb_mode: Optional[str] = None  # None: WANDB_MODE or "offline"
    picture_every: int = 10  # a picture of one group's trajectories every N steps (0: never)
    console_every: int = 1


@dataclass
class EvalConfig:
    every: int = 10  # GRPO steps between evaluations on the val split (0: never)
    num_scenes: int = 32
    version: str = "v1"


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: RAY_ADDRESS, or a new local cluster
    num_cpus: Optional[int] = None  # for a local cluster
    placement_timeout_s: float = 120.0


@dataclass
class DebugConfig:
    """Fault injection for tests: the rollout worker of this rank exits mid-sampling at this step, once."""

    kill_rollout_worker_at_step: int = -1
    kill_rollout_worker_rank: int = 0


@dataclass
class PipelineConfig:
    """Sizes of the end-to-end pipeline `python -m rl.demo` runs (data -> codebook -> SFT -> GRPO -> evaluation)."""

    train_scenes: int = 1600
    val_scenes: int = 96
    test_scenes: int = 240
    families: Optional[list[str]] = None  # None: every family
    neg_share: float = 0.2
    rec_share: float = 0.1
    image_height: int = 32
    image_width: int = 64
    generate_workers: int = 2
    codebook_tokens: int = 256
    codebook_delta: float = 0.2
    vlm_steps: int = 300
    expert_steps: int = 300
    eval_version: str = "v1"
    pictures: int = 4  # scenes pictured before and after post-training


@dataclass
class TrainConfig:
    """Everything one run needs. `policy_init`: the SFT policy directory GRPO starts from."""

    seed: int = 0
    policy_init: Optional[str] = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def validate(self) -> "TrainConfig":
        """Checks the types cannot express; each error names the key and what to change."""
        validate_policy_config(self.policy)
        g = self.grpo
        if g.train_target not in TRAIN_TARGETS:
            raise ConfigError(f"grpo.train_target={g.train_target!r}: expected one of {TRAIN_TARGETS}")
        if g.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"grpo.kl_estimator={g.kl_estimator!r}: expected one of {KL_ESTIMATORS}")
        if g.group_size < 2:
            raise ConfigError(f"grpo.group_size={g.group_size}: a group needs at least 2 samples to compare")
        if g.groups_per_step < 1 or g.steps < 0:
            raise ConfigError("grpo.groups_per_step must be >= 1 and grpo.steps >= 0")
        if self.rollout.action_source not in ("tokens", "expert"):
            raise ConfigError(f"rollout.action_source={self.rollout.action_source!r}: expected 'tokens' or 'expert'")
        if self.rollout.num_workers < 1 or self.scorer.num_workers < 1 or self.learner.num_workers < 1:
            raise ConfigError("rollout.num_workers, scorer.num_workers and learner.num_workers must each be >= 1")
        if self.learner.reference not in ("frozen_copy", "adapters_off"):
            raise ConfigError(f"learner.reference={self.learner.reference!r}: expected 'frozen_copy' or 'adapters_off'")
        if self.learner.reference == "adapters_off" and not self.learner.lora.enabled:
            raise ConfigError("learner.reference='adapters_off' needs learner.lora.enabled=true")
        if self.sft.stage not in ("vlm", "expert"):
            raise ConfigError(f"sft.stage={self.sft.stage!r}: expected 'vlm' or 'expert'")
        if self.checkpoint.resume not in ("auto", "never"):
            raise ConfigError(f"checkpoint.resume={self.checkpoint.resume!r}: expected 'auto' or 'never'")
        if self.eval.version not in ("v1", "v2"):
            raise ConfigError(f"eval.version={self.eval.version!r}: expected 'v1' or 'v2'")
        if not self.scorer.rewards:
            raise ConfigError("scorer.rewards is empty: configure at least the driving reward (e.g. pdms)")
        return self
