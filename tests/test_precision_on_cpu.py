"""The precision contract under a real DeepSpeed engine (CPU, gloo): with `learner.bf16` the VLM runs in bf16
while the flow expert, its parameters and every log-probability stay fp32, for the flow-expert and joint
GRPO steps; ZeRO stage 3 is refused by name.

The learner and the rollout worker run in this process (the same classes Ray hosts), so the sampled chains
and the learner's first update can be compared directly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actors.learner import Learner
from actors.rollout import RolloutWorker
from rl.records import GroupRequest
from rl.config import GRPOConfig, LearnerConfig, RolloutConfig
from rl.deepspeed_engine import create_engine, free_port
from rl.grpo.objective import TrainingSample, batch_normalisers
from rl.scene_store import SceneStore


def sampled_batch(assets, worker: RolloutWorker, num_scenes: int = 2, seed: int = 100) -> list[TrainingSample]:
    """One group per scene from `worker`, with fixed non-zero advantages (the update must move weights)."""
    store = SceneStore(assets["train"])
    samples = []
    for i, scene in enumerate(store.scenes(range(num_scenes))):
        group = worker.sample(GroupRequest(1, i, scene, seed + i)).group
        for j, s in enumerate(group.samples):
            samples.append(TrainingSample(scene, s.completion, s.chain, float(j) - 1.5, i))
    return samples


def bf16_learner(assets, target: str, zero_stage: int = 2, kl_beta: float = 0.01) -> Learner:
    learner = Learner(0, 1, str(assets["policy"]), GRPOConfig(train_target=target, kl_beta=kl_beta, lr=1e-3,
                                                              micro_batch_size=8),
                      LearnerConfig(bf16=True, zero_stage=zero_stage))
    learner.init_engine("127.0.0.1", free_port())
    return learner


@pytest.mark.parametrize("target", ["expert", "joint"])
def test_flow_grpo_step_under_a_bf16_deepspeed_engine_keeps_the_expert_and_its_logprobs_fp32(tiny_grpo_assets, target):
    worker = RolloutWorker(0, str(tiny_grpo_assets["policy"]), RolloutConfig(flow_noise=0.5, group_reasoning="sampled"), 4, bf16=True)
    samples = sampled_batch(tiny_grpo_assets, worker)
    assert all(s.chain.logprobs.dtype == np.float32 for s in samples)
    learner = bf16_learner(tiny_grpo_assets, target)
    policy = learner.policy
    assert {p.dtype for p in policy.vlm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in policy.expert.parameters()} == {torch.float32}
    assert not policy.training  # dropout off in the learner's log-prob forward
    before = {n: p.detach().clone() for n, p in policy.expert.named_parameters()}

    batch = policy.collate_completions([s.scene for s in samples], [s.completion for s in samples])
    with torch.no_grad():
        flow = policy.flow_step_logprobs(batch, [s.chain for s in samples])
    assert flow.logprobs.dtype == torch.float32 and flow.means.dtype == torch.float32
    assert flow.stds.dtype == torch.float32
    recorded = np.stack([s.chain.logprobs for s in samples])
    # Per step, within bf16 rounding of the VLM's K/V (the sampler decodes with a cache, the learner runs one
    # forward over prompt + completion); the update's mean ratio is checked at 1e-3 below.
    np.testing.assert_allclose(np.exp(flow.logprobs.numpy() - recorded), 1.0, atol=5e-3, rtol=0)

    metrics = learner.update(samples, batch_normalisers(samples))
    assert math.isfinite(metrics["train/flow_policy_loss"]) and math.isfinite(metrics["train/grad_norm"])
    assert metrics["train/flow_ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    assert "train/flow_kl" in metrics
    if target == "joint":
        assert metrics["train/token_ratio_mean"] == pytest.approx(1.0, abs=1e-3)
        assert math.isfinite(metrics["train/token_policy_loss"])
    assert {p.dtype for p in policy.expert.parameters()} == {torch.float32}
    assert {p.dtype for p in policy.vlm.parameters()} == {torch.bfloat16}
    moved = [n for n, p in policy.expert.named_parameters() if not torch.equal(p, before[n])]
    assert moved, "the update did not change the expert"


def test_bf16_parameters_are_refused_without_zero_master_weights(tiny_grpo_assets):
    from rl.policy import SpanVLAPolicy

    policy = SpanVLAPolicy.load(tiny_grpo_assets["policy"])
    policy.requires_grad_(False)
    params = policy.parameter_groups()["language"]
    for p in params:
        p.requires_grad_(True)
    with pytest.raises(ValueError, match=r"zero_stage=0 .*learner.zero_stage"):
        create_engine(policy, params, lr=1e-3, zero_stage=0, bf16=True, master_port=free_port())


def test_zero_stage_3_is_refused_by_the_config_and_by_the_learner(tiny_grpo_assets):
    from rl.config import TrainConfig
    from rl.config_io import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"learner.zero_stage=3"):
        load_config(TrainConfig, "configs/tiny.yaml", ["learner.zero_stage=3"]).validate()
    with pytest.raises(ValueError, match=r"learner.zero_stage=3"):
        Learner(0, 1, str(tiny_grpo_assets["policy"]), GRPOConfig(train_target="expert", kl_beta=0.0, lr=1e-3),
                LearnerConfig(zero_stage=3))


def test_weight_sync_never_sends_an_empty_tensor():
    from actors.weight_sync import plan_buckets

    with pytest.raises(ValueError, match=r"expert.out.weight is empty"):
        plan_buckets({"expert.out.weight": torch.empty(0), "expert.out.bias": torch.ones(3)}, 1, 2**20)


def test_partitioned_zero_3_parameters_are_never_sent_empty(tiny_grpo_assets, monkeypatch):
    """Past the up-front refusal (bypassed here), a real ZeRO-3 engine leaves each rank a partition: weight sync
    names the parameter and the key instead of shipping empty tensors."""
    import actors.learner as learner_module

    monkeypatch.setattr(learner_module, "check_zero_stage", lambda stage: None)
    learner = Learner(0, 1, str(tiny_grpo_assets["policy"]), GRPOConfig(train_target="expert", kl_beta=0.0, lr=1e-3,
                                                                       micro_batch_size=8), LearnerConfig(zero_stage=3))
    learner.init_engine("127.0.0.1", free_port())
    with pytest.raises(RuntimeError, match=r"weight sync: expert\.\S+ holds 0 of its \d+ elements.*learner.zero_stage"):
        learner.sync_tensors()
