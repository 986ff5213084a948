"""The pace action (rl.policy.pace): a new head drives plans as they are; drawn paces are recorded, recomputed by
the learner, trained at their own learning rate and saved with the policy."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene, tiny_policy
from rl.evaluate import slowed
from rl.grpo.losses import flow_grpo_loss
from rl.policy.pace import drive_at_pace, pace_logprob, pace_scales
from rl.policy.policy import SpanVLAPolicy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def plain() -> SpanVLAPolicy:
    return tiny_policy()


@pytest.fixture(scope="module")
def paced(plain) -> SpanVLAPolicy:
    return copy.deepcopy(plain).add_pace_head()


def _set_pace_bias(policy: SpanVLAPolicy, z: float) -> None:
    with torch.no_grad():
        policy.expert.pace_head[-1].bias.fill_(z)


def test_pace_scales_clip_to_the_plan_and_the_minimum():
    np.testing.assert_allclose(pace_scales(np.array([0.5, 0.0, math.log(0.6), -5.0]), 0.3), [1.0, 1.0, 0.6, 0.3])


def test_driving_at_a_pace_equals_the_evaluations_slowed_plan_row_by_row():
    rng = np.random.default_rng(0)
    plans = np.cumsum(rng.uniform(0.5, 2.0, size=(3, 8, 3)), axis=1) * np.array([1.0, 0.1, 0.01])
    moved = drive_at_pace(plans, np.array([1.0, 0.7, 0.4]), 0.5)
    np.testing.assert_array_equal(moved[0], plans[0])
    np.testing.assert_allclose(moved[1], slowed(plans[1:2], 0.7, 0.5)[0])
    np.testing.assert_allclose(moved[2], slowed(plans[2:3], 0.4, 0.5)[0])
    # Half speed: pose 2 (t = 1 s) is where the plan was at 0.5 s.
    np.testing.assert_allclose(drive_at_pace(plans[:1], np.array([0.5]), 0.5)[0, 1], plans[0, 0])


def test_pace_logprob_is_the_gaussian_density():
    out = pace_logprob(torch.tensor([0.1, -0.3]), torch.tensor([0.0, -0.5]), 0.2)
    expected = [-0.5 * (0.1 / 0.2) ** 2 - math.log(0.2) - 0.5 * math.log(2 * math.pi),
                -0.5 * (0.2 / 0.2) ** 2 - math.log(0.2) - 0.5 * math.log(2 * math.pi)]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_a_new_pace_head_drives_the_plan_as_it_is(plain, paced):
    scene = make_policy_scene(0)
    assert paced.config.expert.pace and not plain.config.expert.pace
    np.testing.assert_array_equal(paced.plan([scene]).trajectories, plain.plan([scene]).trajectories)
    # Every copy made from the same policy gets the same head.
    again = copy.deepcopy(plain).add_pace_head()
    for a, b in zip(again.expert.pace_head.parameters(), paced.expert.pace_head.parameters()):
        assert torch.equal(a, b)


def test_a_trained_pace_slows_the_deterministic_plan(plain):
    policy = copy.deepcopy(plain).add_pace_head()
    _set_pace_bias(policy, math.log(0.5))
    scene = make_policy_scene(1)
    expected = slowed(plain.plan([scene]).trajectories, 0.5, policy.config.expert.interval_s)
    np.testing.assert_allclose(policy.plan([scene]).trajectories, expected, rtol=0, atol=1e-6)  # z in fp32


def test_a_drawn_pace_is_the_chains_last_column_and_the_learner_recomputes_it(paced):
    scene = make_policy_scene(2, slow=True)
    k = paced.config.expert.num_steps
    group = paced.sample_group(scene, 6, flow_noise=0.5, seed=4, group_reasoning="greedy", pace_std=0.3)
    same_flow = paced.sample_group(scene, 6, flow_noise=0.5, seed=4, group_reasoning="greedy")
    paces = np.array([s.chain.pace for s in group.samples])
    assert len(set(paces.round(6))) == 6 and all(s.chain.pace_std == 0.3 for s in group.samples)
    for s, d in zip(group.samples, same_flow.samples):
        assert s.chain.logprobs.shape == (k + 1,) and s.chain.stochastic[-1] and d.chain.pace is None
        np.testing.assert_array_equal(s.chain.states, d.chain.states)  # the pace is drawn after the flow
        # The head is new (mean 0): the column is log N(z; 0, 0.3^2), and the plan is driven at exp(min(z, 0)).
        expected = -0.5 * (s.chain.pace / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)
        assert s.chain.logprobs[-1] == pytest.approx(expected, rel=1e-5)
        scale = pace_scales(np.array([s.chain.pace]), paced.config.expert.pace_min_scale)
        np.testing.assert_allclose(s.trajectory, drive_at_pace(d.trajectory[None], scale, 0.5)[0], atol=1e-9)
        np.testing.assert_array_equal(s.plan, d.trajectory)  # the plan before its pace travels beside it
        np.testing.assert_array_equal(d.plan, d.trajectory)  # at the new head's mean pace (z = 0) the plan is driven as is
    np.testing.assert_array_equal(group.plans, same_flow.trajectories)
    batch = paced.collate_completions([scene] * 6, [s.completion for s in group.samples])
    out = paced.flow_step_logprobs(batch, [s.chain for s in group.samples])
    recorded = np.stack([s.chain.logprobs for s in group.samples])
    np.testing.assert_allclose(out.logprobs.detach().numpy(), recorded, rtol=1e-5, atol=1e-4)
    # The column's mean is stored at element [0, 0] of a zero transition mean, its std is pace_std.
    assert out.means[:, -1].abs().sum() == 0 and out.stds[-1] == pytest.approx(0.3)
    # The pace's gradient reaches its head alone.
    out.logprobs[:, -1].sum().backward()
    assert float(paced.expert.pace_head[-1].bias.grad.abs().sum()) > 0
    assert all(p.grad is None or not p.grad.any() for n, p in paced.expert.named_parameters()
               if not n.startswith("pace_head"))
    paced.zero_grad(set_to_none=True)


def test_the_pace_columns_kl_is_the_one_dimensional_gaussian_kl(paced):
    scene = make_policy_scene(3)
    group = paced.sample_group(scene, 3, flow_noise=0.5, seed=1, group_reasoning="greedy", pace_std=0.25)
    batch = paced.collate_completions([scene] * 3, [s.completion for s in group.samples])
    moved = copy.deepcopy(paced)
    _set_pace_bias(moved, -0.2)
    new = moved.flow_step_logprobs(batch, [s.chain for s in group.samples])
    ref = paced.flow_step_logprobs(batch, [s.chain for s in group.samples])
    mask = torch.zeros_like(new.logprobs)
    mask[:, -1] = 1.0  # the pace column alone
    _, stats = flow_grpo_loss(new.logprobs.detach(), new.logprobs.detach(), torch.zeros(3), mask,
                              means=new.means.flatten(2).detach(), ref_means=ref.means.flatten(2),
                              step_std=new.stds, kl_beta=1.0)
    assert float(stats["kl"]) == pytest.approx(0.2 ** 2 / (2 * 0.25 ** 2), rel=1e-5)


def test_a_pace_is_refused_without_a_head(plain):
    with pytest.raises(ValueError, match="pace_std=0.3: a pace is drawn"):
        plain.sample_group(make_policy_scene(0), 2, flow_noise=0.5, pace_std=0.3)


def test_a_paced_policy_saves_and_loads_with_its_head(paced, tmp_path):
    policy = copy.deepcopy(paced)
    _set_pace_bias(policy, math.log(0.7))
    policy.save(tmp_path / "paced")
    loaded = SpanVLAPolicy.load(tmp_path / "paced")
    assert loaded.config.expert.pace
    scene = make_policy_scene(4)
    np.testing.assert_allclose(loaded.plan([scene]).trajectories, policy.plan([scene]).trajectories, atol=1e-9)


def test_planning_without_driving_the_pace_gives_the_flows_plan_and_the_chosen_paces(plain):
    policy = copy.deepcopy(plain).add_pace_head()
    _set_pace_bias(policy, math.log(0.6))
    scene = make_policy_scene(5)
    driven, undriven = policy.plan([scene]), policy.plan([scene], drive_pace=False)
    assert driven.paces[0] == pytest.approx(math.log(0.6), rel=1e-6)
    np.testing.assert_array_equal(undriven.paces, driven.paces)
    np.testing.assert_array_equal(driven.plans, undriven.trajectories)  # the flow's plan travels beside the driven one
    assert undriven.plans is None
    assert plain.plan([scene]).paces is None
    np.testing.assert_array_equal(undriven.trajectories, plain.plan([scene]).trajectories)


def test_the_rollout_metrics_give_the_mean_pace_and_its_spread_over_groups():
    from types import SimpleNamespace

    from rl.grpo.metrics import pace_metrics

    def group(*paces):
        samples = [SimpleNamespace(chain=SimpleNamespace(pace=z)) for z in paces]
        return SimpleNamespace(group=SimpleNamespace(samples=samples))

    out = pace_metrics([group(-0.2, 0.0), group(-0.6, -0.4)])
    assert out["rollout/pace_log_speed"] == pytest.approx(-0.3)
    assert out["rollout/pace_scene_std"] == pytest.approx(np.std([-0.1, -0.5], ddof=1))
    assert pace_metrics([group(None, None)]) == {}


def test_an_evaluation_planner_scores_the_flows_plan_before_the_pace_only_when_asked(plain):
    from rl.evaluate import Planner

    policy = copy.deepcopy(plain).add_pace_head()
    _set_pace_bias(policy, math.log(0.6))
    scene = make_policy_scene(5)
    driven = Planner("policy[expert]", policy, "expert")([scene])
    before = Planner("policy[expert]", policy, "expert", drive_pace=False)([scene])
    np.testing.assert_array_equal(before, plain.plan([scene]).trajectories)  # the flow's plan, as without a head
    np.testing.assert_allclose(driven, drive_at_pace(before, np.array([0.6]), 0.5), atol=1e-5)
