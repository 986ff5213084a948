"""Flow matching and its samplers on a known velocity field (no model)."""
from __future__ import annotations

import math

import pytest
import torch

from rl.policy.flow import (chain_logprobs, draw_start, flow_matching_loss, flow_times, sample_flow,
                            sample_training_time, step_std, transition_mean)

TARGET_MEAN, TARGET_STD, PRIOR_STD = 2.0, 0.5, 0.4


def exact_velocity(prior_mean: float):
    """The exact field E[a - x0 | x_t] for a ~ N(2, 0.5^2) and x0 ~ N(prior_mean, 0.4^2), independent."""
    def velocity(x, t):
        t = t[:, None, None]
        mean_t = t * TARGET_MEAN + (1 - t) * prior_mean
        var_t = t * t * TARGET_STD**2 + (1 - t) ** 2 * PRIOR_STD**2
        return (TARGET_MEAN - prior_mean) + (t * TARGET_STD**2 - (1 - t) * PRIOR_STD**2) / var_t * (x - mean_t)
    return velocity


def test_noise_level_zero_is_the_deterministic_euler_sampler_bit_for_bit():
    velocity = exact_velocity(0.3)
    prior = torch.full((4, 8, 3), 0.3)
    x0 = draw_start(prior, PRIOR_STD, True, torch.Generator().manual_seed(0))
    out = sample_flow(velocity, x0, prior, PRIOR_STD, num_steps=5, noise_level=0.0)
    x = x0
    times = flow_times(5)
    for k in range(5):  # plain Euler, written independently
        x = x + (times[k + 1] - times[k]).item() * velocity(x, torch.full((4,), times[k].item()))
    assert torch.equal(out.final, x)
    assert not out.stochastic.any() and torch.equal(out.logprobs, torch.zeros(4, 5))


def test_stochastic_step_follows_the_sketch():
    x, v, prior = torch.randn(2, 8, 3), torch.randn(2, 8, 3), torch.randn(2, 8, 3)
    t, t_next, a = 0.4, 0.6, 0.5
    x1_hat, x0_hat = x + 0.6 * v, x - 0.4 * v
    expected = t_next * x1_hat + (1 - t_next) * (prior + math.cos(math.pi * a / 2) * (x0_hat - prior))
    torch.testing.assert_close(transition_mean(x, v, t, t_next, prior, a), expected)
    assert step_std(t_next, a, 0.1) == pytest.approx(0.4 * math.sin(math.pi / 4) * 0.1)
    assert step_std(1.0, a, 0.1) == 0.0


def test_log_probabilities_are_gaussian_densities_and_the_last_step_is_deterministic():
    velocity = exact_velocity(0.0)
    prior = torch.zeros(3, 8, 3)
    g = torch.Generator().manual_seed(1)
    out = sample_flow(velocity, draw_start(prior, PRIOR_STD, True, g), prior, PRIOR_STD, 5, noise_level=0.7, generator=g)
    assert out.chain.shape == (3, 6, 8, 3) and out.logprobs.dtype == torch.float32
    assert out.stochastic.tolist() == [True, True, True, True, False]
    assert torch.equal(out.chain[:, -1], out.means[:, -1]) and out.logprobs[:, -1].eq(0).all()
    for k in range(4):
        normal = torch.distributions.Normal(out.means[:, k], out.stds[k])
        torch.testing.assert_close(out.logprobs[:, k], normal.log_prob(out.chain[:, k + 1]).sum((1, 2)), rtol=1e-5, atol=1e-4)


def test_recomputed_log_probabilities_equal_the_sampled_ones():
    velocity = exact_velocity(0.3)
    prior = torch.full((5, 8, 3), 0.3)
    g = torch.Generator().manual_seed(2)
    out = sample_flow(velocity, draw_start(prior, PRIOR_STD, True, g), prior, PRIOR_STD, 5, noise_level=0.5, generator=g)
    again = chain_logprobs(velocity, out.chain, prior, PRIOR_STD, noise_level=0.5)
    assert torch.equal(again.logprobs, out.logprobs) and torch.equal(again.means, out.means)


def test_sampler_is_deterministic_under_a_seed():
    velocity = exact_velocity(0.3)
    prior = torch.full((2, 8, 3), 0.3)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        runs.append(sample_flow(velocity, draw_start(prior, PRIOR_STD, True, g), prior, PRIOR_STD, 5, 0.8, g).chain)
    assert torch.equal(runs[0], runs[1])


def test_exact_flow_reaches_the_data_distribution():
    velocity = exact_velocity(0.3)
    prior = torch.full((20000, 1, 1), 0.3)
    g = torch.Generator().manual_seed(3)
    final = sample_flow(velocity, draw_start(prior, PRIOR_STD, True, g), prior, PRIOR_STD, 50).final
    assert final.mean().item() == pytest.approx(TARGET_MEAN, abs=0.02)
    assert final.std().item() == pytest.approx(TARGET_STD, abs=0.03)


def test_flow_matching_loss_is_zero_for_the_exact_straight_field():
    target = torch.randn(6, 8, 3)
    prior = torch.randn(6, 8, 3)
    g = torch.Generator().manual_seed(4)
    t = sample_training_time(6, -0.5, 1.0, generator=g)
    # With sigma0 = 0 the path is the straight line prior -> target, whose velocity is target - prior.
    loss = flow_matching_loss(lambda x, tt: target - prior, target, prior, 0.0, t, g)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert flow_matching_loss(lambda x, tt: torch.zeros_like(x), target, prior, 0.0, t, g).item() > 0.5


def test_training_times_favour_the_start():
    t = sample_training_time(20000, -0.5, 1.0, generator=torch.Generator().manual_seed(5))
    assert 0.0 < t.min() and t.max() < 1.0
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(0.5)), abs=0.01)
