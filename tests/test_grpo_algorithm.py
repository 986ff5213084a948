"""GRPO's pure functions: advantages, the group filter, clipped losses, KL estimators, flow-step losses."""
import math

import numpy as np
import pytest
import torch

from rl.grpo.advantages import NEAR_TIE, UNSCORABLE, batch_advantages, drop_reason, group_advantages
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


def test_batch_std_scope_weighs_each_group_by_its_spread_with_one_divisor():
    """A group of collisions (rewards 0 / 1) and one that differs by centimetres (0.90 / 0.91): per group both get
    +-1; over the batch they share one divisor, the RMS of every centred reward, so the first weighs 100 x more."""
    groups = [np.array([1.0, 0.0]), np.array([0.91, 0.90]), np.array([0.5, np.nan, 0.5])]  # the last: a tie
    per_group = batch_advantages(groups)
    np.testing.assert_allclose(per_group.advantages[0], [1.0, -1.0], atol=1e-4)
    np.testing.assert_allclose(per_group.advantages[1], [1.0, -1.0], atol=1e-3)
    batch = batch_advantages(groups, std_scope="batch")
    spread = math.sqrt((0.5 ** 2 * 2 + 0.005 ** 2 * 2) / 4)  # the dropped tie adds nothing
    np.testing.assert_allclose(batch.advantages[0], np.array([0.5, -0.5]) / (spread + 1e-6))
    np.testing.assert_allclose(batch.advantages[1], np.array([0.005, -0.005]) / (spread + 1e-6))
    np.testing.assert_array_equal(batch.advantages[2], [0.0, 0.0, 0.0])
    assert batch.kept.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="grpo.std_scope must be one of"):
        batch_advantages(groups, std_scope="scene")


def test_unscorable_samples_get_zero_advantage_and_leave_the_baseline_alone():
    adv = group_advantages(np.array([1.0, np.nan, 0.0]), normalize_std=False)
    np.testing.assert_allclose(adv, [0.5, 0.0, -0.5])


def test_a_group_with_a_single_scorable_sample_has_no_signal():
    np.testing.assert_array_equal(group_advantages(np.array([np.nan, 0.7, np.nan])), [0.0, 0.0, 0.0])


def test_the_filter_judges_the_total_reward_and_counts_dropped_groups_per_reason():
    totals = [
        np.array([1.0, 1.2, 1.0, 1.0]),        # PDMS ties, a shaping term makes the difference: kept
        np.array([0.9, 0.9004, 0.9009, np.nan]),  # scorable totals span 0.0009 <= 1e-3: near tie
        np.array([0.5, np.nan, np.nan, np.nan]),  # one scorable sample: nobody to compare with
        np.array([np.nan] * 4),                # nothing scorable
        np.array([0.2, np.nan, 0.8, 0.5]),     # kept; the unscorable sample keeps advantage 0
    ]
    selection = batch_advantages(totals, tie_tolerance=1e-3)
    assert selection.reasons == [None, NEAR_TIE, UNSCORABLE, UNSCORABLE, None]
    np.testing.assert_array_equal(selection.kept, [True, False, False, False, True])
    assert selection.dropped() == {UNSCORABLE: 2, NEAR_TIE: 1}
    for dropped in (1, 2, 3):
        np.testing.assert_array_equal(selection.advantages[dropped], np.zeros(4))
    np.testing.assert_allclose(selection.advantages[0], group_advantages(totals[0]))
    assert selection.advantages[4][1] == 0.0 and selection.advantages[4][2] > 0 > selection.advantages[4][0]


def test_the_tie_tolerance_is_a_bound_on_the_span_of_scorable_totals():
    assert drop_reason(np.array([0.25, 0.375, 0.3]), tie_tolerance=0.125) == NEAR_TIE  # span == tolerance: a tie
    assert drop_reason(np.array([0.25, 0.376, 0.3]), tie_tolerance=0.125) is None
    assert drop_reason(np.array([0.3, 0.3]), tie_tolerance=0.0) == NEAR_TIE  # 0: exact ties only
    assert drop_reason(np.array([0.3, 0.3000001]), tie_tolerance=0.0) is None
    assert drop_reason(np.array([np.nan, 0.3]), tie_tolerance=0.0) == UNSCORABLE


def test_without_the_tie_filter_near_ties_are_kept_but_unscorable_groups_are_still_dropped():
    selection = batch_advantages([np.array([0.9, 0.9002]), np.array([np.nan, 0.4])], filter_ties=False)
    np.testing.assert_array_equal(selection.kept, [True, False])
    assert selection.dropped() == {UNSCORABLE: 1, NEAR_TIE: 0}


def test_selection_metrics_count_every_reason():
    from rl.grpo.metrics import selection_metrics

    out = selection_metrics({UNSCORABLE: 2, NEAR_TIE: 1}, 8)
    assert out == {"train/groups_dropped/unscorable": 2.0, "train/groups_dropped/near_tie": 1.0,
                   "train/groups_kept_fraction": 5 / 8}


def test_score_metrics_average_components_over_scorable_samples_and_count_failures_per_term():
    from rl.records import GroupScores
    from rl.grpo.metrics import score_metrics

    group = GroupScores(
        totals=np.array([0.5, np.nan, -4.0]),
        components=[{"pdms": 0.5, "negative_l2": 0.0},
                    {"pdms": 0.9},  # failed in a later term: its pdms is not the run's reward
                    {"pdms": 1.0, "negative_l2": 1.0, "negative_l2/inside_share": 1.0}],
        errors=[None, "flaky: returned None (unscorable)", None],
        failures_by_term={"flaky": 1},
    )
    out = score_metrics([group])
    assert out["reward/pdms"] == pytest.approx(0.75)
    assert out["reward/negative_l2"] == pytest.approx(0.5)
    assert out["reward/negative_l2/inside_share"] == 1.0
    assert out["reward/unscorable"] == 1.0 and out["reward/unscorable/flaky"] == 1.0
    assert out["reward/total"] == pytest.approx(-1.75)


def test_the_unscorable_window_tolerates_one_bad_step_and_stops_a_persistent_failure_within_the_window():
    from collections import Counter

    from rl.grpo.unscorable import StepScoring, UnscorableShareError, UnscorableWindow

    window = UnscorableWindow(max_share=0.4, window_steps=3)
    window.record(StepScoring(1, 64, 64, Counter({"scorer worker": 64})))  # a whole step lost to a crash
    window.check()  # the window is not full yet
    for step in (2, 3, 4):
        window.record(StepScoring(step, 64, 0))
        window.check()  # 64 / 192 = 0.33, then 0
    assert window.share == 0.0
    window.record(StepScoring(5, 64, 64, Counter({"pdms": 64})))
    window.check()  # 64 / 192
    window.record(StepScoring(6, 64, 64, Counter({"pdms": 64})))
    with pytest.raises(UnscorableShareError, match=r"128 of 192 samples \(share 0.667\) .* steps 4-6"):
        window.check()


def test_the_unscorable_window_raises_with_the_share_and_the_terms():
    from collections import Counter

    from rl.grpo.unscorable import StepScoring, UnscorableShareError, UnscorableWindow

    window = UnscorableWindow(max_share=0.2, window_steps=2)
    window.record(StepScoring(1, 16, 16, Counter({"negative_l2": 12, "pdms": 4}),
                              {"negative_l2": "raised ValueError: region must be one of ('fixed', 'separation')"}))
    window.check()
    window.record(StepScoring(2, 16, 2, Counter({"negative_l2": 2})))
    with pytest.raises(UnscorableShareError) as err:
        window.check()
    message = str(err.value)
    assert "18 of 32 samples (share 0.562)" in message and "steps 1-2" in message
    assert "scorer.max_unscorable_share=0.2" in message
    assert "negative_l2 (14 samples, e.g. \"raised ValueError: region must be one of ('fixed', 'separation')\")" in message
    assert message.index("negative_l2") < message.index("pdms (4 samples)")
    never = UnscorableWindow(max_share=1.0, window_steps=1)
    never.record(StepScoring(1, 8, 8))
    never.check()
    exactly = UnscorableWindow(max_share=0.5, window_steps=1)
    exactly.record(StepScoring(1, 8, 4))
    exactly.check()  # a share equal to the limit passes


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


def test_the_per_dimension_flow_ratio_is_the_geometric_mean_of_the_dimensions_ratios():
    # one stochastic step over D = 4 dimensions, each dimension's log-ratio 0.1: the step's joint log-ratio is 0.4
    dims = 4
    means = torch.zeros(1, 1, dims)
    ref_means = torch.full((1, 1, dims), 0.5)
    std = torch.tensor([1.0])
    step_logp, old = torch.tensor([[0.4]]), torch.zeros(1, 1)
    adv, mask = torch.tensor([1.0]), torch.ones(1, 1)
    joint, joint_stats = flow_grpo_loss(step_logp, old, adv, mask, means, ref_means, std, kl_beta=0.1)
    per_dim, per_dim_stats = flow_grpo_loss(step_logp, old, adv, mask, means, ref_means, std, kl_beta=0.1,
                                            per_dimension=True)
    kl_joint = dims * 0.25 / 2.0  # sum over D of 0.5^2 / (2 * 1^2)
    # the joint ratio exp(0.4) = 1.49 is clipped at 1.28; the per-dimension ratio exp(0.1) = 1.105 is not
    assert joint.item() == pytest.approx(-1.28 + 0.1 * kl_joint)
    assert joint_stats["clip_fraction"].item() == 1.0
    assert per_dim.item() == pytest.approx(-math.exp(0.1) + 0.1 * kl_joint / dims)
    assert per_dim_stats["clip_fraction"].item() == 0.0
    assert per_dim_stats["kl"].item() == pytest.approx(kl_joint / dims)
    with pytest.raises(ValueError, match="means"):
        flow_grpo_loss(step_logp, old, adv, mask, per_dimension=True)


def test_a_std_floor_keeps_crumb_differences_small():
    rewards = np.array([0.900, 0.901, 0.899, 0.900])
    assert np.abs(group_advantages(rewards)).max() > 1.0  # plain std normalisation blows crumbs up
    floored = group_advantages(rewards, std_floor=0.05)
    np.testing.assert_allclose(floored, (rewards - rewards.mean()) / (0.05 + 1e-6))
    spread = np.array([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(group_advantages(spread, std_floor=0.05), group_advantages(spread))
