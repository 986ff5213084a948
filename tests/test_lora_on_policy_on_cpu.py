"""LoRA with dropout stays on-policy: rollout copies sample and evaluate with dropout off, and the learner's
log-prob forward equals the sampler's, so after the adapters have moved the log-probabilities a rollout
records are the learner's at the first update of the step, and two evaluations are identical.

A real DeepSpeed learner (CPU, gloo, fp32) and a rollout worker in this process (the classes Ray hosts);
weights travel with the function the rollout worker applies on arrival (`load_into_module`).
"""
from __future__ import annotations

import numpy as np
import torch

from actors.learner import Learner
from actors.rollout import RolloutWorker
from rl.records import GroupRequest
from actors.weight_sync import load_into_module
from rl.config import GRPOConfig, LearnerConfig, LoRAConfig, RolloutConfig
from rl.deepspeed_engine import free_port
from rl.grpo.objective import TrainingSample, _left_aligned, batch_normalisers
from rl.scene_store import SceneStore

LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}


def sample(worker: RolloutWorker, scenes, step: int) -> list[TrainingSample]:
    samples = []
    for i, scene in enumerate(scenes):
        group = worker.sample(GroupRequest(step, i, scene, 1000 * step + i)).group
        for j, s in enumerate(group.samples):
            samples.append(TrainingSample(scene, s.completion, s.chain, float(j) - 1.5, i))
    return samples


def test_lora_dropout_rollout_logprobs_equal_the_learners_after_the_adapters_moved(tiny_grpo_assets):
    scenes = SceneStore(tiny_grpo_assets["train"]).scenes(range(2))
    lora = LoRAConfig(**LORA)
    worker = RolloutWorker(0, str(tiny_grpo_assets["policy"]), RolloutConfig(temperature=1.0, action_source="tokens", group_reasoning="sampled"), 4,
                           lora=lora)
    learner = Learner(0, 1, str(tiny_grpo_assets["policy"]),
                      GRPOConfig(train_target="vlm", kl_beta=0.0, lr=5e-2, micro_batch_size=8),
                      LearnerConfig(zero_stage=1, lora=lora), RolloutConfig(temperature=1.0, action_source="tokens", group_reasoning="sampled"))
    learner.init_engine("127.0.0.1", free_port())
    assert not any(m.training for m in worker.policy.modules())
    assert not any(m.training for m in learner.policy.modules())

    for step in (1, 2, 3):
        samples = sample(worker, scenes, step)
        batch = learner.policy.collate_completions([s.scene for s in samples], [s.completion for s in samples])
        with torch.no_grad():
            ours = learner.policy.token_logprobs(batch, 1.0)
        recorded = _left_aligned([s.completion.logprobs for s in samples], ours.logprobs.shape[1])
        mask = ours.mask
        assert int(mask.sum()) > 0
        np.testing.assert_allclose(ours.logprobs[mask].numpy(), recorded[mask].numpy(), atol=1e-5, rtol=0)
        metrics = learner.update(samples, batch_normalisers(samples))
        assert abs(metrics["train/token_ratio_mean"] - 1.0) <= 1e-5
        load_into_module(worker.policy, learner.sync_tensors())
    adapters = {n: p for n, p in learner.policy.named_parameters() if ".lora_B" in n}
    assert adapters and any(float(p.abs().max()) > 0 for p in adapters.values()), "the adapters never moved"

    first, second = worker.plan(scenes), worker.plan(scenes)
    np.testing.assert_array_equal(first.trajectories, second.trajectories)
    assert first.texts == second.texts
