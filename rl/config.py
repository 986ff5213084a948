"""The configuration schema of every entry point (SFT, GRPO training, evaluation, the demo).

Typed dataclasses with documented defaults; YAML files in `configs/` set values, `key=value` overrides on the
command line win (see `rl.config_io.load_config`). Defaults marked [paper] follow SpanVLA / AutoVLA;
the others are this project's choices for the tiny CPU preset.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from rl.config_io import ConfigError
from rl.grpo.advantages import STD_SCOPES
from rl.policy.config import ACTION_SOURCES, FLOW_STARTS, GROUP_REASONING, PolicyConfig, validate_policy_config
from sim.conventions import SAMPLE_TYPES

# Each enumeration of the config is defined here once (ACTION_SOURCES, GROUP_REASONING, FLOW_STARTS:
# rl.policy.config; sample types: sim.conventions; NAVSIM versions: rewards.pdm.scorer.VERSIONS) and imported
# wherever it is checked.
KL_ESTIMATORS = ("k1", "k3")  # k1: unbiased, signed; k3: non-negative (AutoVLA's choice)
TRAIN_TARGETS = ("vlm", "expert", "joint")
FLOW_TARGETS = ("expert", "joint")  # the train targets whose objective needs the expert's flow chains
REFERENCE_MODES = ("frozen_copy", "adapters_off")
FLOW_RATIOS = ("step", "dimension")  # grpo.flow_ratio: see GRPOConfig
SFT_STAGES = ("vlm", "expert")
RESUME_MODES = ("auto", "never")


@dataclass
class DataConfig:
    """Datasets written by `python -m sim.generate` (Parquet shards + manifest)."""

    train: str = "data/tiny/train"
    val: str = "data/tiny/val"
    test: str = "data/tiny/test"
    # decoded scenes a process keeps in memory for the training split (SFT, GRPO): SFT reads each scene several
    # times, and decoding one costs about as much as a tiny model's step on it. A synthetic scene takes ~0.1 MB;
    # a NAVSIM scene with its camera images a few MB, so size it to the memory you have; 0 decodes every read
    scene_cache: int = 256


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
    # what SFT imitates: "expert", the ground truth (`future`; a recovery scene's correction); "log", each scene's
    # logged drive (`human_trajectory`, 4 s: NAVSIM's log, or the synthetic world's human with its mistakes when
    # generated with --human-logs), the expert where a scene has no log and for recovery scenes (rl.sft)
    target: str = "expert"
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end


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
    # train_target expert / joint: what one clipped ratio of the flow chain measures. "step": the density of a whole
    # denoising step, summed over its D = N x 3 action dimensions (a log-ratio D times a dimension's, so the clip
    # bounds each dimension's move to 1/D of the clip). "dimension": the step's log-ratio and its Gaussian KL
    # averaged over the D dimensions (Flow-GRPO's per-pixel mean), so the clip bounds each dimension's move.
    flow_ratio: str = "step"
    kl_beta: float = 0.04  # [AutoVLA]
    kl_estimator: str = "k3"
    normalize_std: bool = True
    # What normalize_std divides by: "group", each group's own std (GRPO's), so every kept group weighs alike; "batch",
    # one spread for the whole batch (rl.grpo.advantages.batch_advantages), so a group weighs by its reward spread.
    std_scope: str = "group"
    advantage_std_floor: float = 0.0  # normalise by max(std, floor): tiny reward differences stay tiny
    filter_no_spread: bool = True  # drop near-tie groups (see tie_tolerance); unscorable groups are always dropped
    # A group whose scorable TOTAL rewards span (max - min) no more than this is a near tie and is dropped
    # (counted in train/groups_dropped/near_tie). 1e-3 is the resolution PDMS is read at (NAVSIM reports it in
    # percent with one decimal); below it, differences are crumbs - PDMS moves by 5/12 of an EP difference, so
    # 1e-3 is about 10 cm of progress on a 40 m plan, and the CoT penalty moves by at most 1.5e-4 a character -
    # which std normalisation would blow up to unit-scale advantages. 0: exact ties only.
    tie_tolerance: float = 1e-3
    # 0: synchronous (sample, score, update, push). 1: the next step's groups are sampled and scored during this
    # step's learner update, with the weights from before it (one version behind; the ratio uses the recorded
    # log-probs). The step after a checkpoint is always sampled after the push (exact resume).
    max_staleness: int = 0
    # AdamW learning rate of the pace head (rollout.pace_std > 0). Adam moves each of the head's weights by about lr
    # an update, so its output moves by about lr times its features' summed size: 3e-3 made the mean pace wander by
    # 0.2 - 0.3 within 20 steps and the result depend on where it stopped (world 2061: 0.773 / 0.819 / 0.749 PDMS);
    # 3e-4 kept it steady (README "A pace action").
    pace_lr: float = 3e-4
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
    # "noisy": each flow starts at a_his + sigma0 eps, a random start its log-probability does not score.
    # "prior": at a_his, where evaluation's deterministic flow starts; the samples differ only through the scored
    # stochastic steps, so the ratio sees all of a sample's randomness and they spread around the evaluated plan.
    # "scored": drawn as "noisy", with the start's density N(x_0; a_his, sigma0^2) as the chain's first step: the
    # ratio credits the draw, and the update moves a_his, where the evaluated plan starts.
    flow_start: str = "noisy"
    # "sampled": each of the G samples reasons on its own at `temperature` (what train_target vlm / joint train).
    # "greedy" (train_target expert only): the group shares the greedy trace that evaluation decodes, so its G
    # plans differ only in the flow's noise - the expert trains in the context it is evaluated in, its advantages
    # carry no reward variance from reasoning it does not control, and the learner runs the frozen VLM once a group.
    # "auto": greedy with train_target expert, sampled otherwise (`TrainConfig.group_reasoning`).
    group_reasoning: str = "auto"
    max_retries: int = 2  # re-sends of a group whose worker died
    # > 0: each sample also draws its pace, the log of the fraction of the plan's speed it is driven at, from
    # N(the pace head's mean, pace_std^2) (`rl.policy.pace`); its density is one more column of the flow chain, so
    # GRPO trains where along its path the plan is driven with what the plan is. A policy without a pace head gets
    # one, initialised to drive the plan as it is. Needs train_target expert and grpo.flow_ratio step. 0: off.
    pace_std: float = 0.0


@dataclass
class RewardTermConfig:
    """One reward function: a registry name, `pkg.module:fn` or `path/file.py:fn`; its weight and kwargs.

    Trust: a `pkg.module:fn` or `path/file.py:fn` spec names code that is imported, and so run, in the
    driver (when `python -m rl.train` checks the config) and in every scorer worker. A config with reward
    specs is code: use only configs and plug-in files you trust. `label`: the name its components are
    logged under (default: the function name); labels must be unique within `scorer.rewards`.
    """

    name: str = "pdms"
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)
    label: Optional[str] = None


def _default_rewards() -> list[RewardTermConfig]:
    # r = r_drive - w_N r_neg + w_R r_rec - lambda_C r_CoT   (spanvla.md 2.3)
    return [
        RewardTermConfig("pdms", 1.0, {"version": "v1"}),
        # region "separation": d = ADE(expert, negative) / ADE(naive continuation, correction), reachable by a
        # policy near the expert; "fixed" (threshold_m 1.7, the paper's) is out of reach on the synthetic world
        RewardTermConfig("negative_l2", -5.0, {"region": "separation"}),
        RewardTermConfig("recovery_l2", 1.0, {"region": "separation"}),
        RewardTermConfig("cot_length", -1.0, {}),
    ]


@dataclass
class ScorerConfig:
    """Scorer workers (CPU): reward functions loaded by name inside each worker."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    timeout_s: float = 60.0
    rewards: list[RewardTermConfig] = field(default_factory=_default_rewards)
    # The run stops with an error naming the failing reward term(s) when the share of unscorable samples over
    # the last `unscorable_window_steps` steps passes this. Judged on a full window of steps, not per step: one
    # crashed scorer worker can make a single step unscorable (that step is skipped, the run goes on), while a
    # run-long cumulative share would take as many broken steps as good ones to notice a term that breaks
    # late. Unscorable samples are rarely missing at random (odd plans are the ones that break a term), so
    # beyond a fifth the baselines are computed over a biased subset. 1.0: never stop.
    max_unscorable_share: float = 0.2
    unscorable_window_steps: int = 5


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
    cache_prefix: bool = True  # train_target expert: run the frozen VLM once a step, not per update and reference


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
    # The logged human driver in the generated data (sim.scenarios.human, its default mistake rate and severity):
    # every scene carries the drive a human logged and negatives are those logs; with sft.target=log SFT imitates
    # the logs, mistakes included. Off: the perfect-expert world (the imitation ceiling).
    human_logs: bool = False
    # With human_logs: the share of positive scenes whose log is the family's mistake, and per-family overrides.
    mistake_rate: float = 0.3
    family_mistake_rates: dict[str, float] = field(default_factory=dict)
    # With human_logs: a mistake's severity s ~ Beta(a, b) in [0, 1] (0 the expert's plan, 1 the gross negative);
    # Beta(1.5, 4) makes most mistakes subtle (median 0.24).
    mistake_severity_a: float = 1.5
    mistake_severity_b: float = 4.0

    def human_log_options(self):
        """The generator's `sim.scenarios.human.HumanLogs` for these keys, or None when `human_logs` is off.
        Raises ValueError (naming the field) for a rate outside [0, 1] or a severity parameter <= 0."""
        from sim.scenarios.human import HumanLogs  # numpy only

        if not self.human_logs:
            return None
        return HumanLogs(mistake_rate=self.mistake_rate, severity_a=self.mistake_severity_a,
                         severity_b=self.mistake_severity_b, family_rates=dict(self.family_mistake_rates))


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

    def _validate_human_logs(self) -> None:
        p = self.pipeline
        try:
            replace(p, human_logs=True).human_log_options()
        except ValueError as err:
            raise ConfigError(f"pipeline.mistake_rate / pipeline.family_mistake_rates / pipeline.mistake_severity_a|b: "
                              f"{err}") from None
        from sim.scenarios import FAMILIES

        unknown = sorted(set(p.family_mistake_rates) - set(p.families or FAMILIES))
        if unknown:
            raise ConfigError(f"pipeline.family_mistake_rates names {unknown}: not among the generated families "
                              f"({', '.join(p.families or FAMILIES)})")

    def _validate_spanning_rules(self) -> None:
        """Rules between keys (no file is read; `rl.input_checks` checks what the keys point to)."""
        g, r = self.grpo, self.rollout
        if g.train_target in FLOW_TARGETS and r.action_source != "expert":
            raise ConfigError(
                f"grpo.train_target={g.train_target!r} trains on the expert's flow steps, which only"
                f" rollout.action_source='expert' samples (got rollout.action_source={r.action_source!r}):"
                " set rollout.action_source=expert, or grpo.train_target=vlm to train on action tokens")
        if r.group_reasoning == "greedy" and g.train_target != "expert":  # "auto" resolves to sampled there
            # every sample of a group would carry the same tokens: the token ratio would see no advantage spread
            raise ConfigError(
                f"rollout.group_reasoning='greedy' shares one reasoning trace across a group, so the VLM's tokens get"
                f" no learning signal: it serves grpo.train_target=expert only (got {g.train_target!r}); set"
                " rollout.group_reasoning=sampled")
        if g.train_target == "vlm" and r.action_source != "tokens":
            # the VLM's gradient reaches only its tokens; rewarding the expert's plan would credit the flow noise's
            # reward variance to the reasoning tokens, which do not decide the plan
            raise ConfigError(
                f"grpo.train_target='vlm' trains the VLM's tokens, so the rewarded plan must be the one they decode:"
                f" set rollout.action_source=tokens (got {r.action_source!r}), or grpo.train_target=joint to train"
                " the VLM and the expert on the expert's plan")
        if r.pace_std > 0:
            if g.train_target != "expert" or r.action_source != "expert":
                raise ConfigError(f"rollout.pace_std={r.pace_std} trains the expert's pace head: it needs "
                                  f"grpo.train_target expert and rollout.action_source expert (got "
                                  f"{g.train_target!r} and {r.action_source!r}); add rollout.pace_std=0 to train "
                                  "without a pace")
            if g.flow_ratio != "step":
                raise ConfigError(f"rollout.pace_std={r.pace_std} needs grpo.flow_ratio step: the pace is one "
                                  "dimension, which flow_ratio dimension would divide by the plan's")
        for key, types in (("sft.sample_types", self.sft.sample_types), ("grpo.schedule.mix", list(g.schedule.mix))):
            unknown = [t for t in types if t not in SAMPLE_TYPES]
            if unknown:
                raise ConfigError(f"{key}: unknown sample type(s) {unknown}; expected names from {SAMPLE_TYPES}")
        mix = g.schedule.mix
        if any(not w >= 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ConfigError(f"grpo.schedule.mix={dict(mix)}: shares must be >= 0 and sum to more than 0")
        keys: dict[str, int] = {}
        for i, term in enumerate(self.scorer.rewards):
            key = term.label or term.name.rsplit(":", 1)[-1]
            if key in keys:
                raise ConfigError(
                    f"scorer.rewards[{i}] ({term.name!r}) and scorer.rewards[{keys[key]}] are both logged as"
                    f" {key!r}: give one a distinct label")
            keys[key] = i

    def group_reasoning(self) -> str:
        """The rollout's group reasoning with "auto" resolved: greedy when only the expert trains (the VLM is
        frozen, so its reasoning is a context the expert should train in as evaluated), else sampled."""
        if self.rollout.group_reasoning != "auto":
            return self.rollout.group_reasoning
        return "greedy" if self.grpo.train_target == "expert" else "sampled"

    def validate(self) -> "TrainConfig":
        """Checks the types cannot express; each error names the key and what to change."""
        validate_policy_config(self.policy)
        g = self.grpo
        if g.train_target not in TRAIN_TARGETS:
            raise ConfigError(f"grpo.train_target={g.train_target!r}: expected one of {TRAIN_TARGETS}")
        reasoning = ("auto", *GROUP_REASONING)
        if self.rollout.group_reasoning not in reasoning:
            raise ConfigError(f"rollout.group_reasoning={self.rollout.group_reasoning!r}: expected one of {reasoning}")
        if self.rollout.flow_start not in FLOW_STARTS:
            raise ConfigError(f"rollout.flow_start={self.rollout.flow_start!r}: expected one of {FLOW_STARTS}")
        if self.rollout.flow_start == "scored" and self.rollout.flow_noise == 0.0:
            raise ConfigError("rollout.flow_start='scored' needs rollout.flow_noise > 0 (at 0 the start is a_his itself:"
                              " there is no draw to score)")
        if g.flow_ratio not in FLOW_RATIOS:
            raise ConfigError(f"grpo.flow_ratio={g.flow_ratio!r}: expected one of {FLOW_RATIOS}")
        if self.rollout.pace_std < 0:
            raise ConfigError(f"rollout.pace_std={self.rollout.pace_std}: must be >= 0 (0: no pace)")
        if self.rollout.pace_std > 0 and g.pace_lr <= 0:
            raise ConfigError(f"grpo.pace_lr={g.pace_lr}: must be > 0")
        if g.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"grpo.kl_estimator={g.kl_estimator!r}: expected one of {KL_ESTIMATORS}")
        if g.group_size < 2:
            raise ConfigError(f"grpo.group_size={g.group_size}: a group needs at least 2 samples to compare")
        if g.groups_per_step < 1 or g.steps < 0:
            raise ConfigError("grpo.groups_per_step must be >= 1 and grpo.steps >= 0")
        if self.rollout.action_source not in ACTION_SOURCES:
            raise ConfigError(f"rollout.action_source={self.rollout.action_source!r}: expected one of {ACTION_SOURCES}")
        if self.rollout.num_workers < 1 or self.scorer.num_workers < 1 or self.learner.num_workers < 1:
            raise ConfigError("rollout.num_workers, scorer.num_workers and learner.num_workers must each be >= 1")
        if self.learner.reference not in REFERENCE_MODES:
            raise ConfigError(f"learner.reference={self.learner.reference!r}: expected one of {REFERENCE_MODES}")
        if self.learner.reference == "adapters_off" and not self.learner.lora.enabled:
            raise ConfigError("learner.reference='adapters_off' needs learner.lora.enabled=true")
        if self.learner.zero_stage not in (0, 1, 2):
            raise ConfigError(f"learner.zero_stage={self.learner.zero_stage}: the GRPO learner supports ZeRO stages "
                              "0, 1 and 2 (stage 3 partitions the weights that weight sync and export read)")
        if self.data.scene_cache < 0:
            raise ConfigError(f"data.scene_cache={self.data.scene_cache}: expected >= 0 (0: decode every read)")
        if self.sft.stage not in SFT_STAGES:
            raise ConfigError(f"sft.stage={self.sft.stage!r}: expected one of {SFT_STAGES}")
        if self.checkpoint.resume not in RESUME_MODES:
            raise ConfigError(f"checkpoint.resume={self.checkpoint.resume!r}: expected one of {RESUME_MODES}")
        from rewards.pdm.scorer import VERSIONS  # the scorer owns NAVSIM's versions

        for key, version in (("eval.version", self.eval.version), ("pipeline.eval_version", self.pipeline.eval_version)):
            if version not in VERSIONS:
                raise ConfigError(f"{key}={version!r}: expected one of {VERSIONS}")
        self._validate_human_logs()
        if not self.scorer.rewards:
            raise ConfigError("scorer.rewards is empty: configure at least the driving reward (e.g. pdms)")
        self._validate_spanning_rules()
        if not 0.0 <= self.scorer.max_unscorable_share <= 1.0:
            raise ConfigError(f"scorer.max_unscorable_share={self.scorer.max_unscorable_share}: expected a share in [0, 1]")
        if self.scorer.unscorable_window_steps < 1:
            raise ConfigError(f"scorer.unscorable_window_steps={self.scorer.unscorable_window_steps}: expected >= 1")
        if g.std_scope not in STD_SCOPES:
            raise ConfigError(f"grpo.std_scope={g.std_scope!r}: expected one of {STD_SCOPES}")
        if g.tie_tolerance < 0:
            raise ConfigError(f"grpo.tie_tolerance={g.tie_tolerance}: expected >= 0")
        if g.max_staleness not in (0, 1):
            raise ConfigError(f"grpo.max_staleness={g.max_staleness}: expected 0 (synchronous) or 1 (the next step is "
                              "sampled during this step's update, one policy version behind)")
        from rewards.shaping import MEASURES, REGIONS

        for i, term in enumerate(self.scorer.rewards):
            if term.name not in ("negative_l2", "recovery_l2"):
                continue
            for key, allowed in (("region", REGIONS), ("measure", MEASURES)):
                value = (term.kwargs or {}).get(key)
                if value is not None and value not in allowed:
                    raise ConfigError(f"scorer.rewards[{i}] ({term.name}): kwargs.{key}={value!r}: expected one of {allowed}")
        return self
