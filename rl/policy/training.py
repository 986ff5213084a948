"""The learner's side: log-probabilities of given completions and flow chains (with gradients), and the
two SFT losses. Functions of a `SpanVLAPolicy`; its methods call them.

Every function recomputes the VLM over [prompt ; completion] in one forward. For the same weights the
token log-probabilities equal those returned at sampling time, and the flow log-probabilities too: the
prefix K/V are the same tokens at the same positions (left padding and finished rows are masked).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from rl.policy.backbone import cache_layer_kv, prefix_positions, run_prefix
from rl.policy.flow import chain_logprobs, flow_matching_loss, sample_training_time
from rl.policy.inputs import LABEL_ACTION, LABEL_TEXT, PolicyInputs
from rl.policy.outputs import FlowChain, FlowLogprobs, LossOutput, TokenLogprobs

if TYPE_CHECKING:
    from rl.policy.policy import SpanVLAPolicy

Chains = Union[torch.Tensor, Sequence[FlowChain]]


def _forward(policy: "SpanVLAPolicy", batch: PolicyInputs, grad: bool, use_cache: bool):
    batch = batch.to(policy.device, policy.dtype)
    positions = prefix_positions(policy.vlm, batch.input_ids, batch.attention_mask, batch.mm_token_type_ids,
                                 batch.video_grid_thw, batch.second_per_grid_ts)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        hidden, cache = run_prefix(policy.vlm, batch, positions, use_cache=use_cache)
    return batch, positions, hidden, cache


def _completion_columns(batch: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Column of each completion token (B, T) (left-aligned per row), validity (B, T), lengths (B,)."""
    lengths = batch.completion_mask.sum(1)
    if int(lengths.min()) == 0:
        raise ValueError("every row of the batch needs a completion (collate with completions or SFT targets)")
    length = batch.input_ids.shape[1]
    steps = torch.arange(int(lengths.max()), device=lengths.device)
    valid = steps[None] < lengths[:, None]
    columns = (length - lengths[:, None] + steps[None]).clamp(max=length - 1)
    return columns, valid, lengths


def _completion_logits(policy, hidden: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """fp32 logits (B, T, V) predicting the tokens at `columns` (from the hidden state one column earlier)."""
    index = (columns - 1).clamp(min=0)
    h = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    return policy.vlm.lm_head(h).float()


def _token_logprobs(policy, batch: PolicyInputs, hidden: torch.Tensor, temperature: float) -> TokenLogprobs:
    columns, valid, lengths = _completion_columns(batch)
    logits = _completion_logits(policy, hidden, columns)
    if temperature > 0.0:
        logits = logits / temperature
    targets = batch.input_ids.gather(1, columns)
    tok = policy.tokenizer
    banned = tok.reasoning_banned(logits.shape[-1], logits.device)
    text = torch.log_softmax(logits.masked_fill(banned, float("-inf")), -1).gather(-1, targets[..., None])[..., 0]
    lo, k = tok.action_offset, policy.action_vocab
    action = torch.log_softmax(logits[..., lo:lo + k], -1).gather(-1, (targets - lo).clamp(0, k - 1)[..., None])[..., 0]
    slots = batch.action_slots.gather(1, columns) if batch.action_slots is not None else torch.zeros_like(valid)
    sampled = (batch.sampled.gather(1, columns) if batch.sampled is not None else valid) & valid
    logprobs = torch.where(sampled, torch.where(slots, action, text), torch.zeros_like(text))
    return TokenLogprobs(logprobs, sampled, lengths)


def token_logprobs(policy: "SpanVLAPolicy", batch: PolicyInputs, temperature: float = 1.0) -> TokenLogprobs:
    """Log-probabilities (B, T) with grad of each sampled completion token under softmax(logits / temperature)
    (temperature <= 0: 1, as greedy decoding records), normalised over the reasoning vocabulary in reasoning
    slots and over the codebook's action tokens in action slots; 0 at forced tokens and padding.
    `batch` from `SpanVLAPolicy.collate_completions`."""
    batch, _, hidden, _ = _forward(policy, batch, grad=True, use_cache=False)
    return _token_logprobs(policy, batch, hidden, temperature)


def _chain_tensor(chains: Chains, noise_level: Optional[float], sigma0: float, device, dtype):
    if isinstance(chains, torch.Tensor):
        if noise_level is None:
            raise ValueError("noise_level is needed when chains are given as a tensor")
        return chains.to(device, dtype), float(noise_level)
    levels = {c.noise_level for c in chains}
    if noise_level is None:
        if len(levels) != 1:
            raise ValueError(f"chains were sampled with different noise levels {sorted(levels)}")
        noise_level = levels.pop()
    for c in chains:
        if abs(c.sigma0 - sigma0) > 1e-9:
            raise ValueError(f"a chain was sampled with sigma0={c.sigma0}, the expert's is {sigma0}")
    # np.stack copies: chains arrive through the object store as read-only arrays torch would warn about.
    return torch.from_numpy(np.stack([c.states for c in chains])).to(device, dtype), float(noise_level)


def _flow_logprobs(policy, batch, positions, cache, chains: Chains, noise_level, kv_grad: bool) -> FlowLogprobs:
    expert = policy.expert
    ctx = expert.context(cache_layer_kv(cache), batch.attention_mask, positions.next_position,
                         batch.history, detach=not kv_grad)
    chain, level = _chain_tensor(chains, noise_level, ctx.sigma0, policy.device, torch.float32)
    if chain.shape[0] != batch.batch_size:
        raise ValueError(f"{chain.shape[0]} chains for a batch of {batch.batch_size}")
    out = chain_logprobs(lambda x, t: expert.velocity(x, t, ctx), chain, ctx.prior, ctx.sigma0, level)
    return FlowLogprobs(out.logprobs, out.means, out.stds, out.stochastic)


def flow_step_logprobs(policy: "SpanVLAPolicy", batch: PolicyInputs, chains: Chains,
                       noise_level: Optional[float] = None, kv_grad: bool = False) -> FlowLogprobs:
    """Per-step log-probabilities (B, K) of given denoising chains, with grad through the expert. The VLM
    prefix K/V (prompt + completion) are recomputed without grad, or with grad when `kv_grad` (joint
    training). `chains`: the `FlowChain`s of the samples, or a tensor (B, K + 1, N, 3) with `noise_level`."""
    batch, positions, _, cache = _forward(policy, batch, grad=kv_grad, use_cache=True)
    return _flow_logprobs(policy, batch, positions, cache, chains, noise_level, kv_grad)


def score_completions(policy: "SpanVLAPolicy", batch: PolicyInputs, chains: Optional[Chains] = None,
                      temperature: float = 1.0, noise_level: Optional[float] = None,
                      kv_grad: bool = True) -> tuple[TokenLogprobs, Optional[FlowLogprobs]]:
    """Token and (when chains are given) flow log-probabilities from ONE VLM forward with grad (joint training)."""
    batch, positions, hidden, cache = _forward(policy, batch, grad=True, use_cache=chains is not None)
    tokens = _token_logprobs(policy, batch, hidden, temperature)
    flow = None if chains is None else _flow_logprobs(policy, batch, positions, cache, chains, noise_level, kv_grad)
    return tokens, flow


def vlm_sft_loss(policy: "SpanVLAPolicy", batch: PolicyInputs) -> LossOutput:
    """SFT stage 1 (spanvla.md 2.1): L = sum_i w_i (L_text,i + L_action,i) / sum_i w_i, each part the mean
    cross-entropy of the sample's reasoning/structure tokens or of its action tokens; w_i =
    `reasoning_sample_weight` for slow-mode samples, 1 otherwise. `batch` from `collator("tokens")`."""
    if batch.labels is None or batch.label_kind is None:
        raise ValueError("vlm_sft_loss needs a batch collated with targets='tokens' (labels)")
    batch, _, hidden, _ = _forward(policy, batch, grad=True, use_cache=False)
    columns, valid, _ = _completion_columns(batch)
    logits = _completion_logits(policy, hidden, columns)
    targets = batch.labels.gather(1, columns)
    kind = batch.label_kind.gather(1, columns)
    ce = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    text = (kind == LABEL_TEXT) & valid
    action = (kind == LABEL_ACTION) & valid
    text_loss = (ce * text).sum(1) / text.sum(1).clamp(min=1)
    action_loss = (ce * action).sum(1) / action.sum(1).clamp(min=1)
    weight = batch.sample_weight if batch.sample_weight is not None else torch.ones_like(text_loss)
    weight = weight.to(text_loss)
    loss = (weight * (text_loss + action_loss)).sum() / weight.sum()
    with torch.no_grad():
        correct = (logits.argmax(-1) == targets) & action
        metrics = {
            "text_loss": ((ce * text).sum() / text.sum().clamp(min=1)).item(),
            "action_loss": ((ce * action).sum() / action.sum().clamp(min=1)).item(),
            "action_accuracy": (correct.sum() / action.sum().clamp(min=1)).item(),
        }
    return LossOutput(loss, metrics)


def expert_flow_matching_loss(policy: "SpanVLAPolicy", batch: PolicyInputs,
                              generator: Optional[torch.Generator] = None) -> LossOutput:
    """SFT stage 2 (spanvla.md 2.2): flow matching from the history prior on the VLM's (frozen, no-grad)
    K/V, plus `prior_loss_weight` * MSE(a_his, a). `batch` from `collator("expert")`."""
    if batch.trajectory is None:
        raise ValueError("expert_flow_matching_loss needs a batch collated with targets='expert' (trajectories)")
    with torch.no_grad():
        batch, positions, _, cache = _forward(policy, batch, grad=False, use_cache=True)
    expert, cfg = policy.expert, policy.config.expert
    ctx = expert.context(cache_layer_kv(cache), batch.attention_mask, positions.next_position,
                         batch.history, detach=True)
    target = expert.normalizer.normalize(batch.trajectory, batch.velocity)
    t = sample_training_time(batch.batch_size, cfg.time_logit_mean, cfg.time_logit_std, policy.device, generator)
    fm = flow_matching_loss(lambda x, tt: expert.velocity(x, tt, ctx), target, ctx.prior, ctx.sigma0, t, generator)
    loss, metrics = fm, {"flow_matching_loss": fm.item()}
    if cfg.init == "history" and cfg.prior_loss_weight > 0:
        prior_loss = (ctx.prior - target).pow(2).mean()
        loss = loss + cfg.prior_loss_weight * prior_loss
        metrics["prior_loss"] = prior_loss.item()
    return LossOutput(loss, metrics)
