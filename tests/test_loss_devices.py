"""Device discipline of the GRPO losses: every tensor a training step builds lives on the policy's device.
Run on the `meta` device (no data, but devices are checked like on an accelerator), a CPU-only torch
exposes any tensor made on the CPU that meets the chain's tensors."""
from __future__ import annotations

import pytest
import torch

from rl.grpo.losses import flow_grpo_loss, gaussian_step_kl, grpo_loss
from rl.policy.flow import chain_logprobs, sample_flow

META = torch.device("meta")
B, K, N = 3, 4, 5


def velocity(x, t):
    return 0.5 * x + t[:, None, None]


def test_flow_log_probs_and_step_stds_are_built_on_the_chains_device():
    chain = torch.zeros(B, K + 1, N, 3, device=META)
    prior = torch.zeros(B, N, 3, device=META)
    out = chain_logprobs(velocity, chain, prior, 0.1, noise_level=0.5)
    for name in ("logprobs", "means", "stds", "stochastic"):
        assert getattr(out, name).device == META, name
    sampled = sample_flow(velocity, prior, prior, 0.1, K, noise_level=0.5)
    assert sampled.stds.device == META and sampled.stochastic.device == META


def test_the_flow_loss_with_kl_runs_entirely_on_the_chains_device():
    chain = torch.zeros(B, K + 1, N, 3, device=META)
    prior = torch.zeros(B, N, 3, device=META)
    policy = chain_logprobs(velocity, chain, prior, 0.1, noise_level=0.5)
    reference = chain_logprobs(lambda x, t: velocity(x, t) * 0.9, chain, prior, 0.1, noise_level=0.5)
    step_mask = policy.stochastic[None, :].float().expand(B, -1)
    loss, stats = flow_grpo_loss(policy.logprobs, policy.logprobs.detach(), torch.ones(B, device=META), step_mask,
                                 means=policy.means.flatten(2), ref_means=reference.means.flatten(2),
                                 step_std=policy.stds, kl_beta=0.1)
    assert loss.device == META and loss.shape == () and stats["kl"].device == META


def test_the_token_loss_with_kl_runs_entirely_on_the_inputs_device():
    logp = torch.zeros(B, 7, device=META)
    loss, stats = grpo_loss(logp, logp, torch.ones(B, device=META), torch.ones(B, 7, device=META), ref_logp=logp,
                            kl_beta=0.04)
    assert loss.device == META and stats["kl"].device == META


def test_a_step_std_from_another_device_is_an_error_naming_it():
    means = torch.zeros(B, K, 6, device=META)
    with pytest.raises(ValueError, match=r"std is on cpu, the means on meta"):
        gaussian_step_kl(means, means, torch.ones(K))
