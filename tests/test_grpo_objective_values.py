"""`micro_batch_loss` and `batch_normalisers` against values computed by hand from the log-probabilities the
policy returns: the clipped surrogate at ratio 1 and under known ratios, the k3 token KL and the closed-form
Gaussian KL of the flow steps, padding, the micro-batch shares of a batch and the world-size factor.

The samples' recorded (old) log-probabilities are replaced by the policy's own (ratio exactly 1) or by those
shifted by a known amount per sample (ratio exp(delta)), so every expected value is a short closed form.
"""
from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene, tiny_policy
from rl.grpo.objective import ObjectiveConfig, TrainingSample, batch_normalisers, micro_batch_loss, micro_batch_prefix

torch.set_num_threads(1)

CLIP_LOW, CLIP_HIGH = 0.2, 0.28


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def _draw(policy, index: int, action_source: str, max_reasoning_tokens: int, advantage: float) -> TrainingSample:
    scene = make_policy_scene(index, slow=index % 2 == 0)
    s = policy.sample_group(scene, 1, temperature=1.0, flow_noise=0.5, action_source=action_source, seed=index,
                            max_reasoning_tokens=max_reasoning_tokens).samples[0]
    return TrainingSample(scene, s.completion, s.chain, advantage, group_id=index)


@pytest.fixture(scope="module")
def token_samples(policy):
    """Four samples answered with action tokens, of different lengths (2 to 24 reasoning tokens)."""
    settings = [(2, 1.0), (24, -0.7), (8, 0.75), (16, -1.25)]  # (reasoning tokens at most, advantage)
    samples = [_draw(policy, i, "tokens", m, a) for i, (m, a) in enumerate(settings)]
    counts = [int(s.completion.sampled.sum()) for s in samples]
    assert len(set(counts)) > 1, counts  # the shares of the micro-batches must differ
    return samples


@pytest.fixture(scope="module")
def flow_samples(policy):
    """Four samples with stochastic flow chains (noise level 0.5)."""
    settings = [(2, 1.0), (12, -0.5), (6, 0.75), (4, -1.25)]
    return [_draw(policy, 10 + i, "expert", m, a) for i, (m, a) in enumerate(settings)]


def _collate(policy, samples):
    return policy.collate_completions([s.scene for s in samples], [s.completion for s in samples])


def _own_token_logprobs(policy, samples) -> list[np.ndarray]:
    """Each sample's log-probabilities under `policy` (float32, the completion's length; 0 where not sampled)."""
    with torch.no_grad():
        out = policy.token_logprobs(_collate(policy, samples), 1.0)
    return [out.logprobs[i, :len(s.completion.token_ids)].numpy().copy() for i, s in enumerate(samples)]


def _own_flow(policy, samples):
    with torch.no_grad():
        return policy.flow_step_logprobs(_collate(policy, samples), [s.chain for s in samples])


def with_token_olds(policy, samples, deltas) -> list[TrainingSample]:
    """Copies whose recorded log-probs are the policy's own minus deltas[i] at sampled tokens: ratio exp(delta)."""
    own = _own_token_logprobs(policy, samples)
    out = []
    for s, lp, d in zip(samples, own, deltas):
        old = (lp - np.float32(d) * s.completion.sampled).astype(np.float32)
        out.append(dataclasses.replace(s, completion=dataclasses.replace(s.completion, logprobs=old)))
    return out


def with_flow_olds(policy, samples, deltas) -> list[TrainingSample]:
    """Copies whose recorded step log-probs are the policy's own minus deltas[i] at stochastic steps."""
    own = _own_flow(policy, samples).logprobs.numpy()
    out = []
    for s, lp, d in zip(samples, own, deltas):
        old = (lp - np.float32(d) * s.chain.stochastic).astype(np.float32)
        out.append(dataclasses.replace(s, chain=dataclasses.replace(s.chain, logprobs=old)))
    return out


def clipped_term(ratio: float, advantage: float) -> float:
    """-min(r A, clip(r, 1 - 0.2, 1 + 0.28) A) for one position."""
    return -min(ratio * advantage, min(max(ratio, 1 - CLIP_LOW), 1 + CLIP_HIGH) * advantage)


def token_counts(samples) -> np.ndarray:
    return np.array([float(s.completion.sampled.sum()) for s in samples])


def step_counts(samples) -> np.ndarray:
    return np.array([float(s.chain.stochastic.sum()) for s in samples])


def _loss(policy, samples, target, normalisers=None, world_size=1, kl_beta=0.0, reference=None, cached=False,
          flow_ratio="step"):
    """micro_batch_loss; cached: through the once-a-step VLM prefix (train_target expert) instead of a forward."""
    cfg = ObjectiveConfig(train_target=target, temperature=1.0, kl_beta=kl_beta, clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                          flow_ratio=flow_ratio, cache_prefix=cached)
    ref = (lambda: nullcontext(reference)) if reference is not None else None
    prefix = micro_batch_prefix(policy, samples) if cached else None
    loss, metrics = micro_batch_loss(policy, samples, cfg, normalisers or batch_normalisers(samples), world_size, ref,
                                     prefix=prefix)
    return float(loss.detach()), metrics


# --- batch_normalisers ---------------------------------------------------------------------------------------
def test_batch_normalisers_count_sampled_tokens_and_stochastic_steps_and_skip_padding(token_samples, flow_samples):
    pad = dataclasses.replace(flow_samples[0], weight=0.0)
    batch = [token_samples[0], token_samples[1], *flow_samples[1:3], pad]
    norm = batch_normalisers(batch)
    tokens = sum(int(s.completion.sampled.sum()) for s in batch[:4])  # the padding sample is left out
    steps = sum(int(s.chain.stochastic.sum()) for s in flow_samples[1:3])  # token samples carry no chain
    assert tokens < sum(len(s.completion.token_ids) for s in batch[:4])  # forced tokens are not counted
    assert norm == {"tokens": float(tokens), "steps": float(steps)}
    assert steps == 2 * 4  # 4 of the 5 flow steps are stochastic (the last one is deterministic)
    assert batch_normalisers([pad]) == {"tokens": 1.0, "steps": 1.0}  # never a division by zero


# --- tokens (train_target vlm) -------------------------------------------------------------------------------
def test_vlm_loss_at_ratio_one_is_minus_the_token_weighted_mean_advantage(policy, token_samples):
    samples = with_token_olds(policy, token_samples[:2], [0.0, 0.0])
    n, adv = token_counts(samples), np.array([s.advantage for s in samples])
    loss, metrics = _loss(policy, samples, "vlm")
    expected = -(adv * n).sum() / n.sum()  # -(1.0 n1 - 0.7 n2) / (n1 + n2)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert metrics["token_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["token_clip_fraction"] == 0.0
    assert "flow_policy_loss" not in metrics


@pytest.mark.parametrize("deltas, factors", [
    # A1 = 1 > 0 with r = e^0.5 = 1.65 -> clipped at 1.28; A2 = -0.7 < 0 with r = e^-0.5 = 0.61 -> clipped at 0.8
    ((0.5, -0.5), (1 + CLIP_HIGH, 1 - CLIP_LOW)),
    # A1 > 0 with r = e^-0.5: min takes r (below the clip); A2 < 0 with r = e^0.5: min takes r A (the pessimum)
    ((-0.5, 0.5), (np.exp(-0.5), np.exp(0.5))),
])
def test_vlm_loss_under_known_ratios_takes_the_pessimistic_clipped_term(policy, token_samples, deltas, factors):
    samples = with_token_olds(policy, token_samples[:2], deltas)
    n, adv = token_counts(samples), np.array([s.advantage for s in samples])
    expected = -(np.array(factors) * adv * n).sum() / n.sum()
    for d, a, f in zip(deltas, adv, factors):
        assert clipped_term(np.exp(d), a) == pytest.approx(-f * a)  # the factors above, term by term
    loss, metrics = _loss(policy, samples, "vlm")
    assert loss == pytest.approx(expected, rel=1e-5)
    assert metrics["token_ratio_mean"] == pytest.approx((np.exp(deltas) * n).sum() / n.sum(), rel=1e-5)
    clipped = n[0] * (factors[0] != np.exp(deltas[0])) + n[1] * (factors[1] != np.exp(deltas[1]))
    assert metrics["token_clip_fraction"] == pytest.approx(clipped / n.sum(), abs=1e-6)


def test_vlm_loss_with_kl_adds_beta_times_the_k3_estimate_to_the_reference(policy, token_samples):
    samples = with_token_olds(policy, token_samples[:2], [0.0, 0.0])
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        reference.vlm.lm_head.weight.add_(0.05 * torch.randn(reference.vlm.lm_head.weight.shape, generator=gen))
    own = _own_token_logprobs(policy, samples)
    ref = _own_token_logprobs(reference, samples)
    k3 = []
    for s, lp, rp in zip(samples, own, ref):
        x = (rp.astype(np.float64) - lp)[s.completion.sampled]  # log(pi_ref / pi) at counted tokens
        k3.append(np.exp(x) - x - 1.0)
    kl = np.concatenate(k3).mean()
    assert kl > 1e-4  # the reference differs
    n, adv = token_counts(samples), np.array([s.advantage for s in samples])
    beta = 0.1
    loss, metrics = _loss(policy, samples, "vlm", kl_beta=beta, reference=reference)
    assert metrics["token_kl"] == pytest.approx(kl, rel=1e-4)
    assert loss == pytest.approx(-(adv * n).sum() / n.sum() + beta * kl, rel=1e-5)


# --- flow steps (train_target expert) ------------------------------------------------------------------------
def test_expert_loss_at_ratio_one_is_minus_the_step_weighted_mean_advantage(policy, flow_samples):
    samples = with_flow_olds(policy, flow_samples[:2], [0.0, 0.0])
    steps, adv = step_counts(samples), np.array([s.advantage for s in samples])
    assert list(steps) == [4.0, 4.0]
    loss, metrics = _loss(policy, samples, "expert")
    assert loss == pytest.approx(-(adv * steps).sum() / steps.sum(), rel=1e-5)  # = -mean(A) = -0.25
    assert loss == pytest.approx(-0.25, rel=1e-5)
    assert metrics["flow_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert "token_policy_loss" not in metrics


@pytest.mark.parametrize("cached", [False, True], ids=["recomputed", "cached_prefix"])
def test_expert_loss_under_known_ratios_clips_per_step(policy, flow_samples, cached):
    deltas = (0.5, 0.5)  # r = 1.65 for both: A1 = 1 is clipped at 1.28, A2 = -0.5 keeps r A (the pessimum)
    samples = with_flow_olds(policy, flow_samples[:2], deltas)
    steps, adv = step_counts(samples), np.array([s.advantage for s in samples])
    r = np.exp(0.5)
    expected = ((-(1 + CLIP_HIGH) * adv[0]) * steps[0] + (-r * adv[1]) * steps[1]) / steps.sum()
    assert expected == pytest.approx((clipped_term(r, adv[0]) * 4 + clipped_term(r, adv[1]) * 4) / 8)
    loss, metrics = _loss(policy, samples, "expert", cached=cached)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert metrics["flow_clip_fraction"] == pytest.approx(0.5, abs=1e-6)
    assert metrics["flow_ratio_mean"] == pytest.approx(r, rel=1e-5)


@pytest.mark.parametrize("cached", [False, True], ids=["recomputed", "cached_prefix"])
def test_expert_loss_with_kl_adds_beta_times_the_gaussian_closed_form(policy, flow_samples, cached):
    samples = with_flow_olds(policy, flow_samples[:2], [0.0, 0.0])
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in reference.expert.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    mine, theirs = _own_flow(policy, samples), _own_flow(reference, samples)
    means = mine.means.double().flatten(2).numpy()  # (B, K, N * 3)
    ref_means = theirs.means.double().flatten(2).numpy()
    stochastic = mine.stochastic.numpy()
    std = mine.stds.double().numpy()[stochastic]  # (K',): the deterministic step has std 0 and no KL
    per_step = ((means - ref_means)[:, stochastic] ** 2).sum(-1) / (2.0 * std[None, :] ** 2)  # |m - m_ref|^2 / (2 s^2)
    kl = per_step.mean()
    assert kl > 1e-4
    steps, adv = step_counts(samples), np.array([s.advantage for s in samples])
    beta = 0.05
    loss, metrics = _loss(policy, samples, "expert", kl_beta=beta, reference=reference, cached=cached)
    assert metrics["flow_kl"] == pytest.approx(kl, rel=1e-4)
    assert loss == pytest.approx(-(adv * steps).sum() / steps.sum() + beta * kl, rel=1e-5)


def test_the_per_dimension_flow_ratio_divides_each_step_log_ratio_and_kl_by_the_action_dimensions(policy,
                                                                                                    flow_samples):
    samples = with_flow_olds(policy, flow_samples[:2], (0.5, 0.5))  # the step's joint ratio 1.65 is clipped
    dims = _own_flow(policy, samples).means.flatten(2).shape[-1]
    assert dims == 3 * samples[0].chain.states.shape[-2]  # N poses x (x, y, heading)
    adv = np.array([s.advantage for s in samples])
    r = np.exp(0.5 / dims)  # the geometric mean of the dimensions' ratios: inside the clip
    _, joint = _loss(policy, samples, "expert")
    loss, metrics = _loss(policy, samples, "expert", flow_ratio="dimension")
    assert joint["flow_clip_fraction"] == pytest.approx(0.5, abs=1e-6)
    assert metrics["flow_clip_fraction"] == 0.0
    assert loss == pytest.approx(-r * adv.mean(), rel=1e-5)  # both samples have 4 stochastic steps
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        for p in reference.expert.parameters():
            p.add_(0.01)
    _, step_kl = _loss(policy, samples, "expert", kl_beta=0.05, reference=reference)
    _, dim_kl = _loss(policy, samples, "expert", kl_beta=0.05, reference=reference, flow_ratio="dimension")
    assert dim_kl["flow_kl"] == pytest.approx(step_kl["flow_kl"] / dims, rel=1e-5)
    with pytest.raises(ValueError, match="flow_ratio='pixel'"):
        _loss(policy, samples, "expert", flow_ratio="pixel")


def test_joint_loss_is_the_token_term_plus_the_flow_term_each_over_its_own_count(policy, flow_samples):
    samples = with_flow_olds(policy, flow_samples[:2], [0.0, 0.0])
    samples = with_token_olds(policy, samples, [0.5, 0.0])  # token ratio e^0.5 on sample 1: clipped at 1.28
    n, steps = token_counts(samples), step_counts(samples)
    adv = np.array([s.advantage for s in samples])
    token_part = -((1 + CLIP_HIGH) * adv[0] * n[0] + adv[1] * n[1]) / n.sum()
    flow_part = -(adv * steps).sum() / steps.sum()
    loss, metrics = _loss(policy, samples, "joint")
    assert metrics["token_policy_loss"] == pytest.approx(token_part, rel=1e-5)
    assert metrics["flow_policy_loss"] == pytest.approx(flow_part, rel=1e-5)
    assert loss == pytest.approx(token_part + flow_part, rel=1e-5)


# --- padding, micro-batch shares and world size --------------------------------------------------------------
@pytest.mark.parametrize("target", ["vlm", "expert"])
def test_a_padding_sample_changes_neither_the_loss_nor_the_normalisers(policy, token_samples, flow_samples, target):
    base = token_samples if target == "vlm" else flow_samples
    samples = _perturbed(policy, base[:2], target)
    pad = dataclasses.replace(base[2], weight=0.0, advantage=5.0)
    assert batch_normalisers(samples + [pad]) == batch_normalisers(samples)
    alone, _ = _loss(policy, samples, target)
    padded, _ = _loss(policy, samples + [pad], target)
    # float32 forwards over a batch of 3 rows instead of 2 reduce in another order (3e-6 relative seen on some
    # CPUs); a pad that leaked into the loss (its advantage 5) or the normalisers would move it by O(1)
    assert padded == pytest.approx(alone, rel=1e-5, abs=1e-7)


def _perturbed(policy, samples, target):
    rng = np.random.default_rng(0)
    deltas = rng.uniform(-0.6, 0.6, len(samples))
    return with_token_olds(policy, samples, deltas) if target == "vlm" else with_flow_olds(policy, samples, deltas)


@pytest.mark.parametrize("target", ["vlm", "expert"])
def test_world_size_two_doubles_a_micro_batch_loss(policy, token_samples, flow_samples, target):
    samples = _perturbed(policy, (token_samples if target == "vlm" else flow_samples)[:2], target)
    norm = batch_normalisers(samples)
    one, _ = _loss(policy, samples, target, norm, world_size=1)
    two, _ = _loss(policy, samples, target, norm, world_size=2)
    assert one != 0.0
    assert two == pytest.approx(2.0 * one, rel=1e-6)


@pytest.mark.parametrize("target", ["vlm", "expert"])
def test_micro_batch_shares_make_the_batch_token_mean_on_one_rank_and_on_two(policy, token_samples, flow_samples,
                                                                             target):
    """One rank: the micro-batches' losses sum to the whole batch's loss. Two ranks (round robin shards, world
    size 2): the mean over ranks of each rank's sum (what averaging their gradients applies) is that loss too."""
    samples = _perturbed(policy, token_samples if target == "vlm" else flow_samples, target)
    norm = batch_normalisers(samples)
    whole, _ = _loss(policy, samples, target, norm)
    # Tolerance: a sub-batch pads its prompts differently, which moves the recomputed log-probs by float32
    # rounding (flow log-densities are ~50, so ~1e-5 in the ratio); the shares themselves are exact.
    one_rank = sum(_loss(policy, samples[i:i + 2], target, norm)[0] for i in (0, 2))
    assert one_rank == pytest.approx(whole, rel=1e-4)
    per_rank = [_loss(policy, samples[r::2], target, norm, world_size=2)[0] for r in (0, 1)]
    assert np.mean(per_rank) == pytest.approx(whole, rel=1e-4)
    if target == "vlm":  # unequal shares: a plain mean of the ranks' own token means would differ
        own_means = [_loss(policy, samples[r::2], target)[0] for r in (0, 1)]
        assert abs(np.mean(own_means) - whole) > 1e-4


def test_the_gradients_of_two_ranks_average_to_the_whole_batch_gradient(policy, flow_samples):
    samples = _perturbed(policy, flow_samples, "expert")
    norm = batch_normalisers(samples)
    cfg = ObjectiveConfig(train_target="expert", cache_prefix=False)
    params = list(policy.expert.parameters())

    def grads(batch, world_size):
        loss, _ = micro_batch_loss(policy, batch, cfg, norm, world_size)
        return torch.autograd.grad(loss, params)

    whole = grads(samples, 1)
    ranks = [grads(samples[r::2], 2) for r in (0, 1)]
    scale = max(float(g.abs().max()) for g in whole)
    assert scale > 0
    for g, g0, g1 in zip(whole, *ranks):  # equal up to float32 rounding of the sub-batches' forwards
        torch.testing.assert_close((g0 + g1) / 2, g, rtol=1e-3, atol=1e-4 * scale)
