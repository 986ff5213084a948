"""Flow matching with a history-initialised prior, and its samplers. Pure functions of a velocity field.

Conventions: flow time t = 0 is the prior, t = 1 the data; x lives in the expert's normalised trajectory
space; the prior is x_0 = a_his + sigma0 * eps (a_his = 0, sigma0 = 1 for `init: noise`).

Training (spanvla.md 1.3): x_t = t a + (1 - t) x_0, target velocity v = a - x_0, loss = MSE(f(x_t, t), v).

Stochastic sampler (spanvla.md 2.4) with noise level `a` in [0, 1], steps t_k = k / K:
    x1_hat = x_k + (1 - t_k) v,   x0_hat = x_k - t_k v,        v = f(x_k, t_k)
    mean_k = t_{k+1} x1_hat + (1 - t_{k+1}) (a_his + cos(pi a / 2) (x0_hat - a_his))
    std_k  = (1 - t_{k+1}) sin(pi a / 2) sigma0,   x_{k+1} = mean_k + std_k xi
The last step (t_K = 1) is deterministic; with a = 0 every step is, and mean_k is the Euler step
x_k + (t_{k+1} - t_k) v. Log-probabilities are Gaussian densities of x_{k+1}, in fp32, summed over
the trajectory's dimensions; deterministic steps get log-probability 0 and `stochastic[k] = False`.

The start x_0 = a_his + sigma0 * eps is not scored: a chain's log-probability is that of its K transitions
given x_0 (the per-step objective of spanvla.md 2.4). The consequence for GRPO: the history prior a_his gets
the gradient that flows through the transition means (a_his enters mean_k when a > 0), not the score of the
x_0 it drew, so the reward variance due to eps is credited to the velocity field only, and a_his is anchored
by SFT's prior loss rather than moved by GRPO. Scoring it would add log N(x_0; a_his, sigma0^2 I) as a
step 0 of every chain (the rollout's recorded log-probs, the learner's, and the KL would all gain that
column); at a = 0 from `init: history` the start is a_his itself and there is nothing to score.
`score_start` (`rollout.flow_start: scored`) does exactly that: the chain's first column is then the start's
log N(x_0; a_his, sigma0^2 I), with mean a_his and std sigma0, and the K transitions follow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, N, 3), t (B,)) -> v (B, N, 3)

_LOG_2PI = math.log(2.0 * math.pi)


def flow_times(num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The K + 1 flow times 0, 1/K, ..., 1 (float32)."""
    return torch.linspace(0.0, 1.0, num_steps + 1, device=device, dtype=torch.float32)


def step_std(t_next: float, noise_level: float, sigma0: float) -> float:
    """Standard deviation of the transition into time t_next."""
    return float((1.0 - t_next) * math.sin(math.pi * noise_level / 2.0) * sigma0)


def step_tensors(stds: list[float], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(stds (K,) fp32, stochastic (K,) bool) on `device`: built where the chain lives, so nothing made on
    the CPU meets a chain on an accelerator in the losses."""
    return (torch.tensor(stds, dtype=torch.float32, device=device),
            torch.tensor([s > 0.0 for s in stds], dtype=torch.bool, device=device))


def transition_mean(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, prior: torch.Tensor,
                    noise_level: float) -> torch.Tensor:
    """Mean of x_{k+1} given x_k = x at time t, the velocity v there and the prior mean a_his. At noise level 0
    it is computed as the Euler step it equals algebraically, so a = 0 reproduces Euler bit for bit."""
    if noise_level == 0.0:
        return x + (t_next - t) * v
    x1_hat = x + (1.0 - t) * v
    x0_hat = x - t * v
    keep = math.cos(math.pi * noise_level / 2.0)
    return t_next * x1_hat + (1.0 - t_next) * (prior + keep * (x0_hat - prior))


def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over all but the batch dimension, in fp32: (B,)."""
    diff = (x.float() - mean.float()).flatten(1)
    dims = diff.shape[1]
    return -0.5 * (diff / std).pow(2).sum(-1) - dims * math.log(std) - 0.5 * dims * _LOG_2PI


def draw_start(prior: torch.Tensor, sigma0: float, noisy: bool, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x_0: the prior mean itself (`noisy` False: the deterministic start from a_his), or a_his + sigma0 eps."""
    if not noisy:
        return prior.clone()
    eps = torch.randn(prior.shape, generator=generator, device=prior.device, dtype=torch.float32).to(prior.dtype)
    return prior + sigma0 * eps


@dataclass
class FlowSample:
    """A denoising chain. chain: (B, K + 1, N, 3) x_0..x_K; logprobs: (B, K) fp32 of x_{k+1} | x_k;
    means: (B, K, N, 3); stds: (K,); stochastic: (K,) bool, False where the step is deterministic. With the
    start scored, every per-step tensor has K + 1 columns, the first the start's (x_0 | a_his). Every tensor
    lives on the chain's device."""

    chain: torch.Tensor
    logprobs: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    stochastic: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        return self.chain[:, -1]


def with_scored_start(flow: FlowSample, prior: torch.Tensor, sigma0: float) -> FlowSample:
    """`flow` with the start's log N(x_0; prior, sigma0^2 I) as its first step column (gradients flow through
    `prior`): the chain's log-probability then credits the start draw, and a ratio moves a_his."""
    start = gaussian_logprob(flow.chain[:, 0], prior, sigma0)[:, None]
    stds, stochastic = step_tensors([sigma0], flow.chain.device)
    return FlowSample(flow.chain, torch.cat([start, flow.logprobs], 1), torch.cat([prior[:, None], flow.means], 1),
                      torch.cat([stds, flow.stds]), torch.cat([stochastic, flow.stochastic]))


def sample_flow(velocity: VelocityFn, x0: torch.Tensor, prior: torch.Tensor, sigma0: float, num_steps: int,
                noise_level: float = 0.0, generator: Optional[torch.Generator] = None,
                score_start: bool = False) -> FlowSample:
    """Run the (stochastic) sampler from x0 (B, N, 3). noise_level 0 is the deterministic Euler sampler.
    `score_start`: x0 was drawn around `prior` with std sigma0, and its density is the chain's first column."""
    times = flow_times(num_steps).tolist()
    b = x0.shape[0]
    x = x0
    chain, logprobs, means, stds = [x0], [], [], []
    for k in range(num_steps):
        t, t_next = times[k], times[k + 1]
        v = velocity(x, torch.full((b,), t, device=x.device))
        mean = transition_mean(x, v, t, t_next, prior, noise_level)
        std = step_std(t_next, noise_level, sigma0)
        if std > 0.0:
            xi = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32).to(mean.dtype)
            x = mean + std * xi
            logprobs.append(gaussian_logprob(x, mean, std))
        else:
            x = mean
            logprobs.append(torch.zeros(b, device=x.device, dtype=torch.float32))
        chain.append(x)
        means.append(mean)
        stds.append(std)
    flow = FlowSample(torch.stack(chain, 1), torch.stack(logprobs, 1), torch.stack(means, 1),
                      *step_tensors(stds, x0.device))
    return with_scored_start(flow, prior, sigma0) if score_start else flow


def chain_logprobs(velocity: VelocityFn, chain: torch.Tensor, prior: torch.Tensor, sigma0: float,
                   noise_level: float, score_start: bool = False) -> FlowSample:
    """Recompute, for a given chain (B, K + 1, N, 3), each transition's mean and log-probability under the
    current velocity field (gradients flow through `velocity` and `prior`), and the start's with
    `score_start`. The learner's side of `sample_flow`: same chain, same weights -> the same log-probabilities."""
    num_steps = chain.shape[1] - 1
    times = flow_times(num_steps).tolist()
    b = chain.shape[0]
    logprobs, means, stds = [], [], []
    for k in range(num_steps):
        t, t_next = times[k], times[k + 1]
        x = chain[:, k]
        v = velocity(x, torch.full((b,), t, device=x.device))
        mean = transition_mean(x, v, t, t_next, prior, noise_level)
        std = step_std(t_next, noise_level, sigma0)
        logprobs.append(gaussian_logprob(chain[:, k + 1], mean, std) if std > 0.0
                        else torch.zeros(b, device=x.device, dtype=torch.float32))
        means.append(mean)
        stds.append(std)
    flow = FlowSample(chain, torch.stack(logprobs, 1), torch.stack(means, 1), *step_tensors(stds, chain.device))
    return with_scored_start(flow, prior, sigma0) if score_start else flow


def sample_training_time(batch: int, logit_mean: float, logit_std: float, device=None,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Flow times for training: sigmoid(N(logit_mean, logit_std)); logit_mean < 0 shifts mass to the start."""
    z = torch.randn(batch, generator=generator, device=device)
    return torch.sigmoid(z * logit_std + logit_mean)


def flow_matching_loss(velocity: VelocityFn, target: torch.Tensor, prior: torch.Tensor, sigma0: float,
                       t: torch.Tensor, generator: Optional[torch.Generator] = None,
                       sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE(f(x_t, t), a - x_0) with x_0 = prior + sigma0 eps and x_t = t a + (1 - t) x_0. target a, prior:
    (B, N, 3) normalised; t (B,); optional per-sample weights (B,). Returns the (weighted) mean."""
    eps = torch.randn(target.shape, generator=generator, device=target.device, dtype=torch.float32).to(target.dtype)
    x0 = prior + sigma0 * eps
    tt = t.to(target.dtype)[:, None, None]
    x_t = tt * target + (1.0 - tt) * x0
    per_sample = (velocity(x_t, t) - (target - x0)).pow(2).flatten(1).mean(-1)
    if sample_weight is None:
        return per_sample.mean()
    return (per_sample * sample_weight).sum() / sample_weight.sum().clamp_min(1e-8)
