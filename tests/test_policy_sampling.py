"""Inference and the learner's recomputation: group sampling, planning, token and flow log-probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene, tiny_policy
from rl.policy.policy import SpanVLAPolicy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy() -> SpanVLAPolicy:
    return tiny_policy()


def _same_group(a, b) -> bool:
    return all(
        np.array_equal(x.completion.token_ids, y.completion.token_ids) and np.array_equal(x.trajectory, y.trajectory)
        and (x.chain is None or np.array_equal(x.chain.states, y.chain.states))
        for x, y in zip(a.samples, b.samples)
    )


def test_group_sampling_is_deterministic_under_a_seed(policy):
    scene = make_policy_scene(0)
    kwargs = dict(temperature=1.0, top_p=0.9, flow_noise=0.6)
    a = policy.sample_group(scene, 4, seed=11, **kwargs)
    b = policy.sample_group(scene, 4, seed=11, **kwargs)
    c = policy.sample_group(scene, 4, seed=12, **kwargs)
    assert _same_group(a, b)
    assert not _same_group(a, c)
    # Samples inside a group differ (sampled reasoning and flow noise).
    assert len({tuple(s.completion.token_ids) for s in a.samples}) > 1
    assert a.trajectories.shape == (4, policy.horizon, 3)


def test_group_result_holds_everything_a_rollout_needs(policy):
    group = policy.sample_group(make_policy_scene(1), 3, temperature=1.0, flow_noise=0.5, seed=0)
    assert set(group.timings.as_dict()) == {"prefill_s", "reasoning_s", "trajectory_s", "total_s"}
    for s in group.samples:
        c = s.completion
        assert c.token_ids[0] == policy.tokenizer.think_open_id and c.token_ids[-1] == policy.tokenizer.action_gen_id
        assert not c.sampled[0] and not c.sampled[-1] and c.sampled[1]
        assert c.logprobs.dtype == np.float32 and (c.logprobs[c.sampled] < 0).all()
        assert s.text.startswith("<think>") and s.text.endswith("<answer><action_gen>")
        assert s.chain.states.shape == (policy.config.expert.num_steps + 1, policy.horizon, 3)
        assert s.chain.logprobs.shape == (policy.config.expert.num_steps,)
        assert s.chain.stochastic.tolist() == [True, True, True, True, False]


def test_token_log_probabilities_recomputed_by_the_learner_equal_the_sampled_ones(policy):
    scene = make_policy_scene(2)
    group = policy.sample_group(scene, 4, temperature=0.8, top_p=0.95, flow_noise=0.5, seed=3)
    batch = policy.collate_completions([scene] * 4, [s.completion for s in group.samples])
    out = policy.token_logprobs(batch, temperature=0.8)
    assert out.logprobs.requires_grad
    for i, s in enumerate(group.samples):
        n = len(s.completion.token_ids)
        assert out.lengths[i] == n
        assert torch.equal(out.mask[i, :n], torch.from_numpy(s.completion.sampled))
        np.testing.assert_allclose(out.logprobs[i, :n].detach().numpy()[s.completion.sampled],
                                   s.completion.logprobs[s.completion.sampled], rtol=1e-5, atol=1e-5)
    # Forced tokens (log-probability -inf outside the reasoning vocabulary) must not poison the gradient.
    (out.logprobs * out.mask).sum().backward()
    grads = [p.grad for p in policy.vlm.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    policy.zero_grad()


def test_action_token_log_probabilities_are_recomputed_over_the_codebook(policy):
    scene = make_policy_scene(3)
    group = policy.sample_group(scene, 3, temperature=1.0, action_source="tokens", seed=4)
    batch = policy.collate_completions([scene] * 3, [s.completion for s in group.samples])
    out = policy.token_logprobs(batch)
    for i, s in enumerate(group.samples):
        c = s.completion
        assert c.action_slots.sum() == policy.num_action_tokens == len(s.action_tokens)
        np.testing.assert_allclose(out.logprobs[i, :len(c.token_ids)].detach().numpy()[c.sampled], c.logprobs[c.sampled],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.trajectory, policy.tokens_to_trajectory(s.action_tokens))


def test_flow_log_probabilities_recomputed_by_the_learner_equal_the_sampled_ones(policy):
    scenes = [make_policy_scene(4), make_policy_scene(5)]
    groups = [policy.sample_group(s, 2, temperature=1.0, flow_noise=0.7, seed=5 + i) for i, s in enumerate(scenes)]
    samples = [s for g in groups for s in g.samples]
    batch = policy.collate_completions([scenes[0]] * 2 + [scenes[1]] * 2, [s.completion for s in samples])
    out = policy.flow_step_logprobs(batch, [s.chain for s in samples])
    assert out.logprobs.requires_grad and out.means.shape == (4, 5, policy.horizon, 3)
    np.testing.assert_allclose(out.logprobs.detach().numpy(), np.stack([s.chain.logprobs for s in samples]),
                               rtol=1e-5, atol=1e-4)
    # The same from one joint forward.
    tokens, flow = policy.score_completions(batch, [s.chain for s in samples], kv_grad=False)
    torch.testing.assert_close(flow.logprobs, out.logprobs)


def test_zero_noise_greedy_group_equals_the_deterministic_plan(policy):
    scene = make_policy_scene(6)
    plan = policy.plan([scene])
    single = policy.sample_group(scene, 1, temperature=0.0, flow_noise=0.0, seed=0).samples[0]
    assert single.text == plan.texts[0] and np.array_equal(single.trajectory, plan.trajectories[0])
    assert not single.chain.stochastic.any()
    for s in policy.sample_group(scene, 3, temperature=0.0, flow_noise=0.0, seed=1).samples:
        assert s.text == plan.texts[0]
        np.testing.assert_allclose(s.trajectory, plan.trajectories[0], rtol=0, atol=1e-5)


def test_greedy_group_reasoning_shares_the_plans_trace_and_differs_only_in_the_flow(policy):
    scene = make_policy_scene(8, slow=True)
    plan = policy.plan([scene])
    group = policy.sample_group(scene, 4, temperature=1.0, flow_noise=0.5, seed=2, group_reasoning="greedy")
    assert {s.text for s in group.samples} == {plan.texts[0]}  # the trace evaluation decodes, for every sample
    assert len({s.trajectory.tobytes() for s in group.samples}) == 4  # four different flows
    # The learner's recomputation on the shared trace gives the recorded flow log-probabilities.
    batch = policy.collate_completions([scene] * 4, [s.completion for s in group.samples])
    out = policy.flow_step_logprobs(batch, [s.chain for s in group.samples])
    np.testing.assert_allclose(out.logprobs.detach().numpy(), np.stack([s.chain.logprobs for s in group.samples]),
                               rtol=1e-5, atol=1e-4)
    # At zero flow noise the shared-trace group is the deterministic plan, as with greedy sampling.
    for s in policy.sample_group(scene, 2, temperature=1.0, flow_noise=0.0, seed=3, group_reasoning="greedy").samples:
        np.testing.assert_allclose(s.trajectory, plan.trajectories[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="group_reasoning='beam'"):
        policy.sample_group(scene, 2, group_reasoning="beam")
    with pytest.raises(ValueError, match="G identical plans"):
        policy.sample_group(scene, 2, action_source="tokens", group_reasoning="greedy")


def test_prior_flow_start_starts_every_sample_where_the_plan_starts_and_scores_all_their_noise(policy):
    scene = make_policy_scene(8, slow=True)
    prior = policy.sample_group(scene, 4, flow_noise=0.5, seed=2, group_reasoning="greedy", flow_start="prior")
    noisy = policy.sample_group(scene, 4, flow_noise=0.5, seed=2, group_reasoning="greedy", flow_start="noisy")
    starts = np.stack([s.chain.states[0] for s in prior.samples])
    np.testing.assert_array_equal(starts, np.broadcast_to(starts[0], starts.shape))  # one start: a_his
    assert len({s.chain.states[0].tobytes() for s in noisy.samples}) == 4  # a_his + sigma0 eps, one draw each
    assert len({s.trajectory.tobytes() for s in prior.samples}) == 4  # the scored steps still differ
    batch = policy.collate_completions([scene] * 4, [s.completion for s in prior.samples])
    out = policy.flow_step_logprobs(batch, [s.chain for s in prior.samples])
    np.testing.assert_allclose(out.logprobs.detach().numpy(), np.stack([s.chain.logprobs for s in prior.samples]),
                               rtol=1e-5, atol=1e-4)
    # The prior start at zero noise is the deterministic plan.
    plan = policy.plan([scene])
    for s in policy.sample_group(scene, 2, flow_noise=0.0, seed=3, group_reasoning="greedy", flow_start="prior").samples:
        np.testing.assert_allclose(s.trajectory, plan.trajectories[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="flow_start='zero'"):
        policy.sample_group(scene, 2, flow_noise=0.5, flow_start="zero")


def test_a_scored_start_draws_as_the_noisy_one_and_adds_its_density_as_the_first_step(policy):
    import math

    import torch

    scene = make_policy_scene(8, slow=True)
    noisy = policy.sample_group(scene, 4, flow_noise=0.5, seed=2, group_reasoning="greedy", flow_start="noisy")
    scored = policy.sample_group(scene, 4, flow_noise=0.5, seed=2, group_reasoning="greedy", flow_start="scored")
    k = policy.config.expert.num_steps
    for n, s in zip(noisy.samples, scored.samples):
        np.testing.assert_array_equal(s.trajectory, n.trajectory)  # the same draws
        assert s.chain.start_scored and not n.chain.start_scored
        assert s.chain.logprobs.shape == (k + 1,) and n.chain.logprobs.shape == (k,)
        np.testing.assert_array_equal(s.chain.logprobs[1:], n.chain.logprobs)
        assert s.chain.stochastic[0]
    # The first column is log N(x_0; a_his, sigma0^2 I): the starts' deviations from a_his give it back.
    sigma0 = scored.samples[0].chain.sigma0
    starts = np.stack([s.chain.states[0] for s in scored.samples]).astype(np.float64)
    batch = policy.collate_completions([scene] * 4, [s.completion for s in scored.samples])
    out = policy.flow_step_logprobs(batch, [s.chain for s in scored.samples])
    recorded = np.stack([s.chain.logprobs for s in scored.samples])
    np.testing.assert_allclose(out.logprobs.detach().numpy(), recorded, rtol=1e-5, atol=1e-4)
    prior = out.means[:, 0].detach().numpy().astype(np.float64)  # the start column's mean: a_his
    dims = starts[0].size
    expected = (-0.5 * (((starts - prior) / sigma0) ** 2).reshape(4, -1).sum(1) - dims * math.log(sigma0)
                - 0.5 * dims * math.log(2 * math.pi))
    np.testing.assert_allclose(recorded[:, 0], expected, rtol=1e-5, atol=1e-3)
    assert torch.allclose(out.stds[0], torch.tensor(sigma0))
    # Its gradient reaches the expert's history prior (a_his), which the transitions alone move only at a > 0.
    policy.expert.zero_grad()
    out = policy.flow_step_logprobs(batch, [s.chain for s in scored.samples])
    out.logprobs[:, 0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in policy.expert.named_parameters()
               if n.startswith("history_prior"))


def test_batched_plan_equals_plans_one_by_one(policy):
    scenes = [make_policy_scene(7), make_policy_scene(8, slow=True), make_policy_scene(9)]
    collated = policy.collator().collate(scenes)
    assert len(set(collated.attention_mask.sum(1).tolist())) > 1, "prompts should differ in length (left padding)"
    batched = policy.plan(scenes)
    for i, scene in enumerate(scenes):
        single = policy.plan([scene])
        assert single.texts[0] == batched.texts[i]
        np.testing.assert_allclose(single.trajectories[0], batched.trajectories[i], atol=1e-4)


def test_plan_from_action_tokens(policy):
    result = policy.plan([make_policy_scene(10)], action_source="tokens")
    assert result.trajectories.shape == (1, policy.horizon, 3)
    assert result.texts[0].endswith("</answer>")


def test_bad_sampling_arguments_are_clear_errors(policy):
    scene = make_policy_scene(11)
    with pytest.raises(ValueError, match="flow_noise=1.5"):
        policy.sample_group(scene, 2, flow_noise=1.5)
    with pytest.raises(ValueError, match="group_size=0"):
        policy.sample_group(scene, 0)
    with pytest.raises(ValueError, match="action_source='beam'"):
        policy.sample_group(scene, 2, action_source="beam")
    bare = tiny_policy(with_codebook=False)
    with pytest.raises(ValueError, match="needs a codebook"):
        bare.plan([scene], action_source="tokens")
    scene.cameras = scene.cameras[:2]
    with pytest.raises(ValueError, match="no camera 'CAM_R0'"):
        policy.plan([scene])
