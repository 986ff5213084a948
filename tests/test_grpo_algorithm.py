"""GRPO's pure functions: advantages, filtering, clipped losses, KL estimators, flow-step losses."""
import math

import numpy as np
import pytest
import torch

from rl.grpo.advantages import batch_advantages, group_advantages, group_has_spread
from rl.grpo.losses import (
    clipped_policy_loss,
    flow_grpo_loss,
    gaussian_step_kl,
    grpo_loss,
    kl_estimate,
    masked_mean,
)


def test_group_advantages_are_standardised_over_the_group():
    adv = group_advantages(np.array([1.0, 0.0, 0.5, 0.5]))
    # mean 0.5, population std sqrt(0.125)
    expected = np.array([0.5, -0.5, 0.0, 0.0]) / (math.sqrt(0.125) + 1e-6)
    np.testing.assert_allclose(adv, expected)


def test_group_advantages_without_std_normalisation_are_centred_rewards():
    np.testing.assert_allclose(group_advantages(np.array([1.0, 0.0, 0.5]), normalize_std=False), [0.5, -0.5, 0.0])


def test_unscorable_samples_get_zero_advantage_and_leave_the_baseline_alone():
    adv = group_advantages(np.array([1.0, np.nan, 0.0]), normalize_std=False)
    np.testing.assert_allclose(adv, [0.5, 0.0, -0.5])


def test_a_group_with_a_single_scorable_sample_has_no_signal():
    np.testing.assert_array_equal(group_advantages(np.array([np.nan, 0.7, np.nan])), [0.0, 0.0, 0.0])


def test_groups_without_spread_in_the_main_reward_are_filtered():
    assert not group_has_spread(np.array([0.9, 0.9, 0.9]))
    assert group_has_spread(np.array([0.9, 0.8, np.nan]))
    total = [np.array([1.0, 1.2]), np.array([0.3, 0.9])]
    main = [np.array([1.0, 1.0]), np.array([0.3, 0.9])]  # group 0 differs only by shaping terms
    adv, kept = batch_advantages(total, main)
    np.testing.assert_array_equal(kept, [False, True])
    np.testing.assert_array_equal(adv[0], [0.0, 0.0])
    assert adv[1][1] > 0 > adv[1][0]
    _, kept_all = batch_advantages(total, main, filter_no_spread=False)
    np.testing.assert_array_equal(kept_all, [True, True])


def test_token_mean_counts_every_token_of_the_batch_once():
    values = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx(7.0 / 4.0)


def test_clipped_loss_uses_the_asymmetric_bounds():
    old = torch.zeros(2, 1)
    logp = torch.log(torch.tensor([[1.5], [0.5]]))  # ratios 1.5 and 0.5
    mask = torch.ones(2, 1)
    # positive advantage: ratio clipped at 1 + 0.28; negative advantage: ratio clipped at 1 - 0.2
    loss, stats = clipped_policy_loss(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2, 0.28)
    assert loss.item() == pytest.approx(-(1.28 * 1.0 + 0.8 * -1.0) / 2.0)
    assert stats["clip_fraction"].item() == pytest.approx(1.0)


def test_clipped_loss_gradient_at_ratio_one_is_minus_the_advantage():
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = clipped_policy_loss(logp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2))
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [[-1.0, -1.0]])


def test_kl_estimators_on_known_values():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(math.exp(-1.0) + 1.0 - 1.0)
    assert kl_estimate(logp, logp, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(logp, ref, "k2")


def test_grpo_loss_adds_beta_times_kl_and_allows_beta_zero_without_reference():
    logp, old = torch.tensor([[-1.0]]), torch.tensor([[-1.0]])
    adv, mask = torch.tensor([0.0]), torch.ones(1, 1)
    loss0, _ = grpo_loss(logp, old, adv, mask, kl_beta=0.0)
    assert loss0.item() == 0.0
    loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=torch.tensor([[-2.0]]), kl_beta=0.04, kl_estimator="k1")
    assert loss.item() == pytest.approx(0.04)
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logp, old, adv, mask, kl_beta=0.1)


def test_gaussian_step_kl_closed_form():
    mean = torch.tensor([[[1.0, 2.0]]])
    ref = torch.tensor([[[0.0, 0.0]]])
    kl = gaussian_step_kl(mean, ref, torch.tensor([0.5]))
    assert kl.item() == pytest.approx((1.0 + 4.0) / (2 * 0.25))


def test_flow_loss_ignores_masked_deterministic_steps():
    step_logp = torch.tensor([[0.1, 0.0]], requires_grad=True)
    loss, _ = flow_grpo_loss(step_logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert step_logp.grad[0, 1].item() == 0.0
    assert step_logp.grad[0, 0].item() < 0.0


def test_a_std_floor_keeps_crumb_differences_small():
    rewards = np.array([0.900, 0.901, 0.899, 0.900])
    assert np.abs(group_advantages(rewards)).max() > 1.0  # plain std normalisation blows crumbs up
    floored = group_advantages(rewards, std_floor=0.05)
    np.testing.assert_allclose(floored, (rewards - rewards.mean()) / (0.05 + 1e-6))
    spread = np.array([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(group_advantages(spread, std_floor=0.05), group_advantages(spread))
