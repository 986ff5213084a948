"""The learner's once-a-step prefix cache (train_target expert, the VLM frozen): cached sparse K/V give the
same flow log-probabilities as recomputing the VLM, for the policy's and the reference's experts and across
updates; a real DeepSpeed learner ends a 2-update step with the same parameters either way; vlm / joint
never read a cache."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from rl.grpo.objective import (ObjectiveConfig, TrainingSample, batch_normalisers, micro_batch_loss,
                               micro_batch_prefix, prefix_cache_applies)
from rl.config import GRPOConfig, LearnerConfig, LoRAConfig
from rl.policy import SpanVLAPolicy
from rl.policy.training import cached_flow_step_logprobs, check_vlm_frozen
from rl.scene_store import SceneStore

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


@pytest.fixture(scope="module")
def policy_and_samples(tiny_grpo_assets):
    """The tiny policy and 8 sampled completions with flow chains (2 scenes x 4, noisy flows) and advantages."""
    policy = SpanVLAPolicy.load(tiny_grpo_assets["policy"])
    store = SceneStore(tiny_grpo_assets["train"])
    samples = []
    for gid, scene in enumerate(store.scenes([0, 1])):
        group = policy.sample_group(scene, 4, temperature=1.0, flow_noise=0.5, action_source="expert", seed=gid,
                                    max_reasoning_tokens=4)
        for j, s in enumerate(group.samples):
            samples.append(TrainingSample(scene, s.completion, s.chain, advantage=(-1.0) ** j * (1 + 0.25 * j),
                                          group_id=gid))
    return policy, samples


def _recomputed(policy, samples):
    batch = policy.collate_completions([s.scene for s in samples], [s.completion for s in samples])
    return policy.flow_step_logprobs(batch, [s.chain for s in samples])


def _max_diff(a, b) -> float:
    return max(float((a.logprobs - b.logprobs).abs().max()), float((a.means - b.means).abs().max()))


def _count_vlm_forwards(policy) -> list[int]:
    calls = [0]
    policy.vlm.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_cached_kv_gives_the_recomputed_flow_logprobs_for_policy_and_reference_across_updates(policy_and_samples):
    base, samples = policy_and_samples
    samples = samples[2:6]  # both scenes
    policy = copy.deepcopy(base)
    reference = copy.deepcopy(base).eval().requires_grad_(False)
    for p in policy.vlm.parameters():
        p.requires_grad_(False)
    check_vlm_frozen(policy)
    prefix = micro_batch_prefix(policy, samples)
    # Only the VLM layers the expert reads are kept (tiny: 6 layers, the expert reads 1, 3, 5).
    assert prefix.layers == (1, 3, 5)
    assert [i for i, kv in enumerate(prefix.layer_kv) if kv is not None] == [1, 3, 5]
    chains = [s.chain for s in samples]
    cfg = ObjectiveConfig(train_target="expert", kl_beta=0.01)
    norm = batch_normalisers(samples)
    optimizer = torch.optim.Adam(policy.expert.parameters(), lr=1e-3)
    with torch.no_grad():
        before = cached_flow_step_logprobs(policy, prefix, chains).logprobs.clone()
    for _ in range(2):  # two updates reading the cache built before the first
        optimizer.zero_grad()
        loss, _ = micro_batch_loss(policy, samples, cfg, norm, reference=lambda: _Fixed(reference), prefix=prefix)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = cached_flow_step_logprobs(policy, prefix, chains)
        for who, model in (("policy", policy), ("reference", reference)):
            diff = _max_diff(cached_flow_step_logprobs(model, prefix, chains), _recomputed(model, samples))
            assert diff <= 1e-6, f"{who} after 2 updates: cached vs recomputed differ by {diff}"
        # What the updates read for the KL: the reference's flow kept by the first one.
        assert _max_diff(prefix.reference_flow, _recomputed(reference, samples)) <= 1e-6
    # The updates moved the policy's expert: the cache holds only the VLM's part, never stale expert outputs.
    assert float((after.logprobs - before).abs().max()) > 1e-3


def test_samples_sharing_a_completion_share_one_vlm_row_with_equal_logprobs(policy_and_samples):
    base, samples = policy_and_samples
    policy = copy.deepcopy(base).requires_grad_(False)
    # Two groups as group_reasoning greedy samples them: each group's samples carry its first sample's completion.
    shared = [TrainingSample(s.scene, samples[4 * (i // 4)].completion, s.chain, s.advantage, group_id=s.group_id)
              for i, s in enumerate(samples)]
    rows = []
    policy.vlm.model.register_forward_hook(lambda _m, _i, out: rows.append(out.last_hidden_state.shape[0]))
    prefix = micro_batch_prefix(policy, shared)
    assert rows == [2]  # one VLM row per group ...
    assert all(kv[0].shape[0] == 8 for kv in prefix.layer_kv if kv is not None)  # ... gathered for its 8 samples
    with torch.no_grad():
        diff = _max_diff(cached_flow_step_logprobs(policy, prefix, [s.chain for s in shared]), _recomputed(policy, shared))
    assert diff <= 1e-6
    assert micro_batch_prefix(policy, samples).batch.input_ids.shape[0] == 8  # distinct completions: 8 rows


class _Fixed:
    """A context manager yielding a fixed reference policy (what `Learner._reference` yields)."""

    def __init__(self, ref):
        self.ref = ref

    def __enter__(self):
        return self.ref

    def __exit__(self, *exc):
        return False


def test_lora_adapters_off_reference_reads_the_same_kv_and_moved_adapters_are_refused(tiny_grpo_assets,
                                                                                       policy_and_samples):
    from actors.learner import Learner

    base, samples = policy_and_samples
    samples = samples[2:6]
    learner = Learner(rank=0, world_size=1, policy_dir=str(tiny_grpo_assets["policy"]),
                      grpo=GRPOConfig(train_target="expert", kl_beta=0.01, micro_batch_size=4),
                      learner=LearnerConfig(lora=LoRAConfig(enabled=True, **LORA), reference="adapters_off"),
                      seed=0, num_threads=torch.get_num_threads())
    policy = learner.policy
    assert learner.reference_policy is None and any(".lora_B" in n for n, _ in policy.named_parameters())
    check_vlm_frozen(policy)
    prefix = micro_batch_prefix(policy, samples)  # computed with the (zero, frozen) adapters on
    chains = [s.chain for s in samples]
    with torch.no_grad(), learner._reference() as ref:  # the policy with its adapters off and the frozen expert
        diff = _max_diff(cached_flow_step_logprobs(ref, prefix, chains), _recomputed(ref, samples))
    assert diff <= 1e-6
    # Switching the adapters back on leaves them frozen: the next step may cache again, sync ships the expert only.
    check_vlm_frozen(policy)
    assert learner.sync_tensors() and all(name.startswith("expert.") for name in learner.sync_tensors())
    name, adapter = next((n, p) for n, p in policy.vlm.named_parameters() if ".lora_B" in n)
    with torch.no_grad():
        adapter.add_(0.01)
    with pytest.raises(ValueError, match=f"LoRA adapter {re.escape(name)} is not zero"):
        check_vlm_frozen(policy)
    with pytest.raises(ValueError, match="the VLM is not frozen"):
        check_vlm_frozen(base)  # a loaded policy trains every parameter


def test_a_step_with_the_cache_runs_the_vlm_once_instead_of_per_update_and_reference(policy_and_samples):
    base, samples = policy_and_samples
    samples = [samples[0], samples[4]]  # one sample of each scene: a micro-batch each
    cfg = ObjectiveConfig(train_target="expert", kl_beta=0.01)
    norm = batch_normalisers(samples)
    counts = {}
    for cache in (True, False):
        policy = copy.deepcopy(base)
        reference = copy.deepcopy(base).eval()
        calls = _count_vlm_forwards(policy)
        ref_calls = _count_vlm_forwards(reference)
        micro = [samples[:1], samples[1:]]
        prefixes = [micro_batch_prefix(policy, m) for m in micro] if cache else [None, None]
        for _ in range(2):  # two updates
            for m, prefix in zip(micro, prefixes):
                micro_batch_loss(policy, m, cfg, norm, reference=lambda: _Fixed(reference), prefix=prefix)[0].backward()
        counts[cache] = (calls[0], ref_calls[0])
    assert counts[True] == (2, 0)  # one forward per micro-batch for the whole step
    assert counts[False] == (4, 4)  # per micro-batch and update, for the policy and again for the reference


@pytest.mark.parametrize("target", ["vlm", "joint"])
def test_vlm_and_joint_never_use_a_cached_prefix(policy_and_samples, target):
    policy, samples = policy_and_samples
    assert prefix_cache_applies(ObjectiveConfig(train_target="expert", cache_prefix=True))
    assert not prefix_cache_applies(ObjectiveConfig(train_target="expert", cache_prefix=False))
    cfg = ObjectiveConfig(train_target=target, cache_prefix=True)
    assert not prefix_cache_applies(cfg)
    prefix = micro_batch_prefix(policy, samples[:2])
    with pytest.raises(ValueError, match=f"train_target='{target}' trains the VLM: its prefix cannot be cached"):
        micro_batch_loss(policy, samples[:2], cfg, batch_normalisers(samples[:2]), prefix=prefix)


def test_a_prefix_built_for_other_samples_is_refused(policy_and_samples):
    policy, samples = policy_and_samples
    prefix = micro_batch_prefix(policy, samples[:2])  # scene 0
    cfg = ObjectiveConfig(train_target="expert")
    with pytest.raises(ValueError, match="the cached prefix was built for scenes"):
        micro_batch_loss(policy, samples[4:6], cfg, batch_normalisers(samples), prefix=prefix)  # scene 1


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_update_deepspeed_step_ends_with_the_same_parameters_with_and_without_the_cache(
        ray_cluster, tiny_grpo_assets, policy_and_samples):
    from actors.learner import Learner

    _, samples = policy_and_samples
    learner_cls = ray_cluster.remote(Learner)
    runs = {"cached": ("expert", True), "recomputed": ("expert", False), "joint": ("joint", True)}
    actors = {}
    for name, (target, cache) in runs.items():
        grpo = GRPOConfig(train_target=target, kl_beta=0.01, lr=1e-3, micro_batch_size=4, updates_per_step=2)
        actors[name] = learner_cls.options(num_cpus=0).remote(
            rank=0, world_size=1, policy_dir=str(tiny_grpo_assets["policy"]), grpo=grpo,
            learner=LearnerConfig(zero_stage=1, cache_prefix=cache), seed=0)
    try:
        addresses = ray_cluster.get([a.address.remote() for a in actors.values()])
        ray_cluster.get([a.init_engine.remote(*addr) for a, addr in zip(actors.values(), addresses)])
        start = ray_cluster.get(actors["cached"].trainable_state.remote())
        norm = batch_normalisers(samples)
        metrics = dict(zip(actors, ray_cluster.get([a.update.remote(samples, norm) for a in actors.values()])))
        cached, recomputed = (ray_cluster.get(actors[n].trainable_state.remote()) for n in ("cached", "recomputed"))
    finally:
        for a in actors.values():
            ray_cluster.kill(a)
    assert metrics["cached"]["train/prefix_cached"] == 1.0 and metrics["cached"]["train/prefix_cache_mb"] > 0
    assert metrics["recomputed"]["train/prefix_cached"] == 0.0 and metrics["recomputed"]["train/prefix_cache_mb"] == 0
    assert metrics["joint"]["train/prefix_cached"] == 0.0 and metrics["joint"]["train/prefix_cache_mb"] == 0
    assert metrics["cached"]["train/optimizer_steps"] == 2.0
    assert cached.keys() == recomputed.keys() and any(k.startswith("expert.") for k in cached)
    assert max(float(np.abs(start[k] - cached[k]).max()) for k in cached) > 1e-5  # the step moved the expert
    for k in cached:
        np.testing.assert_allclose(cached[k], recomputed[k], rtol=0, atol=1e-6, err_msg=k)
    for key in ("train/flow_policy_loss", "train/flow_kl", "train/flow_ratio_mean"):
        assert metrics["cached"][key] == pytest.approx(metrics["recomputed"][key], abs=1e-6), key
    assert metrics["cached"]["train/flow_kl"] > 0  # the second update's expert differs from the reference's


@pytest.mark.ray
@pytest.mark.slow
def test_a_step_reports_its_loss_metrics_averaged_over_every_update(ray_cluster, tiny_grpo_assets, policy_and_samples):
    """A 2-update step reports the mean of its two passes: the same as two 1-update steps on the same samples
    (the second of which is the first's second pass: same old log-probs, same reference, Adam's second step)."""
    from actors.learner import Learner

    _, samples = policy_and_samples
    learner_cls = ray_cluster.remote(Learner)
    actors = {}
    for name, updates in (("two updates", 2), ("one update", 1)):
        grpo = GRPOConfig(train_target="expert", kl_beta=0.01, lr=1e-3, micro_batch_size=4, updates_per_step=updates)
        actors[name] = learner_cls.options(num_cpus=0).remote(
            rank=0, world_size=1, policy_dir=str(tiny_grpo_assets["policy"]), grpo=grpo,
            learner=LearnerConfig(zero_stage=1), seed=0)
    try:
        addresses = ray_cluster.get([a.address.remote() for a in actors.values()])
        ray_cluster.get([a.init_engine.remote(*addr) for a, addr in zip(actors.values(), addresses)])
        norm = batch_normalisers(samples)
        both = ray_cluster.get(actors["two updates"].update.remote(samples, norm))
        first = ray_cluster.get(actors["one update"].update.remote(samples, norm))
        second = ray_cluster.get(actors["one update"].update.remote(samples, norm))
        states = [ray_cluster.get(a.trainable_state.remote()) for a in actors.values()]
    finally:
        for a in actors.values():
            ray_cluster.kill(a)
    # the first pass is on-policy (the sampler's float32 log-probs, summed over 24 dimensions, agree to ~1e-6) and
    # at the reference: nothing to clip, no KL
    assert first["train/flow_ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert first["train/flow_kl"] == pytest.approx(0.0, abs=1e-9) and second["train/flow_kl"] > 1e-6
    assert first["train/flow_clip_fraction"] == 0.0
    for key in ("train/flow_ratio_mean", "train/flow_clip_fraction", "train/flow_kl", "train/flow_policy_loss"):
        assert both[key] == pytest.approx((first[key] + second[key]) / 2, abs=1e-5), key
    assert both["train/flow_ratio_mean"] != pytest.approx(second["train/flow_ratio_mean"], abs=1e-5)  # not the last pass
    for k in states[0]:
        np.testing.assert_allclose(states[0][k], states[1][k], rtol=0, atol=1e-6, err_msg=k)
