"""The policy's training passes: log-probabilities of given completions and flow chains (with gradients) for
the GRPO learner, the frozen-VLM prefix cache, and the two SFT losses. Functions of a `SpanVLAPolicy`; its
methods call them.

Every function recomputes the VLM over [prompt ; completion] in one forward. For the same weights the
token log-probabilities equal those returned at sampling time, and the flow log-probabilities too: the
prefix K/V are the same tokens at the same positions (left padding and finished rows are masked).

While the VLM is frozen (GRPO with `train_target: expert`) its forward does not change within a step, so
`prefix_kv` runs it once per batch and keeps only the K/V of the layers the expert reads (`PrefixKV`);
`cached_flow_step_logprobs` then serves the policy's expert, the reference's expert and every update of the
step from it (bit-identical to `flow_step_logprobs`: same tensors, same expert code). The frozen reference
expert's output on the step's chains does not change either: the first update keeps it on the `PrefixKV`.

What the options for that reuse would move, for Qwen2.5-VL-3B (36 layers, 2 KV heads, head_dim 128, bf16;
the expert reads every 2nd layer: 18), a prompt of ~1,000 tokens (3 cameras x 4 frames at 224 x 448 as
video) + ~100 reasoning tokens = 1,100 tokens, G = 64 samples a group, 8 groups = 512 samples a step:

    K/V of one token in one layer: 2 (K, V) x 2 heads x 128 x 2 B           = 1,024 B
    one token, the 18 layers read: 18 x 1,024 B                              = 18,432 B
    one sample (1,100 tokens): 1,100 x 18,432 B                              = 20,275,200 B  (20.3 MB)

(a) rollout workers ship each sample's sparse K/V to the learner through the object store:
    512 x 20.3 MB = 10.4 GB a step (20.8 GB with all 36 layers), written to and read from shared memory,
    then copied to the learner's device - rejected: gigabytes a step through the object store.
(b) the learner recomputes once a step and keeps it (this module): what moves is the completions only,
    per sample ~1.6 kB (110 tokens x (8 B id + 4 B logprob + 2 x 1 B masks) = 1,540 B, plus the flow chain,
    (K + 1) x 8 x 3 x 4 B = 576 B for K = 5 steps) -> 512 x ~2.1 kB = ~1.1 MB a step; the scenes (camera
    frames) travel as they already did. The cost stays on the learner: one VLM forward per sample a step
    instead of 2 x updates_per_step, and up to 10.4 GB of K/V held for the step (divided by the learner
    ranks, each caching only its shard; dropped when the step ends).
(c) share one prompt's K/V per group (the G samples share the prompt, only the reasoning differs):
    prompt 1,000 x 18,432 B = 18.4 MB once + 64 x 100 x 18,432 B = 118.0 MB of reasoning K/V
    = 136.4 MB a group, 1.09 GB a step: 9.5x less than (a), still gigabyte size if shipped through the
    object store; kept on the learner it would cut (b)'s memory by the same 9.5x and its prefill compute
    by up to G, at the price of a grouped prefill and an expert attention over [shared prompt ; own
    reasoning]. Not implemented: (b) is what the learner does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from rl.policy.backbone import cache_layer_kv, prefix_positions, run_prefix
from rl.policy.flow import chain_logprobs, flow_matching_loss, sample_training_time
from rl.policy.inputs import LABEL_ACTION, LABEL_TEXT, PolicyInputs
from rl.policy.outputs import FlowChain, FlowLogprobs, LossOutput, TokenLogprobs
from rl.policy.pace import with_pace_column

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
    """(states (B, K + 1, N, 3), noise level, whether the chains' starts are scored, (paces z (B,), pace std) or
    None when no pace was drawn)."""
    if isinstance(chains, torch.Tensor):
        if noise_level is None:
            raise ValueError("noise_level is needed when chains are given as a tensor")
        return chains.to(device, dtype), float(noise_level), False, None
    levels = {c.noise_level for c in chains}
    if noise_level is None:
        if len(levels) != 1:
            raise ValueError(f"chains were sampled with different noise levels {sorted(levels)}")
        noise_level = levels.pop()
    for c in chains:
        if abs(c.sigma0 - sigma0) > 1e-9:
            raise ValueError(f"a chain was sampled with sigma0={c.sigma0}, the expert's is {sigma0}")
    scored = {c.start_scored for c in chains}
    if len(scored) != 1:
        raise ValueError("some chains score their start and some do not (rollout.flow_start changed mid-batch)")
    paced = {(c.pace is not None, c.pace_std) for c in chains}
    if len(paced) != 1:
        raise ValueError(f"the chains drew their paces differently (drawn, std): {sorted(paced)}")
    drawn, pace_std = paced.pop()
    pace = (torch.tensor([c.pace for c in chains], dtype=torch.float32, device=device), pace_std) if drawn else None
    # np.stack copies: chains arrive through the object store as read-only arrays torch would warn about.
    states = torch.from_numpy(np.stack([c.states for c in chains])).to(device, dtype)
    return states, float(noise_level), scored.pop(), pace


def _flow_logprobs(policy, batch, next_position, layer_kv, chains: Chains, noise_level, kv_grad: bool) -> FlowLogprobs:
    expert = policy.expert
    ctx = expert.context(layer_kv, batch.attention_mask, next_position, batch.history, detach=not kv_grad)
    chain, level, start_scored, pace = _chain_tensor(chains, noise_level, ctx.sigma0, policy.device, torch.float32)
    if chain.shape[0] != batch.batch_size:
        raise ValueError(f"{chain.shape[0]} chains for a batch of {batch.batch_size}")
    out = chain_logprobs(lambda x, t: expert.velocity(x, t, ctx), chain, ctx.prior, ctx.sigma0, level,
                         score_start=start_scored)
    if pace is not None:
        z, pace_std = pace
        out = with_pace_column(out, z, expert.pace_mean(chain[:, -1], ctx), pace_std)
    return FlowLogprobs(out.logprobs, out.means, out.stds, out.stochastic)


def flow_step_logprobs(policy: "SpanVLAPolicy", batch: PolicyInputs, chains: Chains,
                       noise_level: Optional[float] = None, kv_grad: bool = False) -> FlowLogprobs:
    """Per-step log-probabilities (B, K) of given denoising chains, with grad through the expert. The VLM
    prefix K/V (prompt + completion) are recomputed without grad, or with grad when `kv_grad` (joint
    training). `chains`: the `FlowChain`s of the samples, or a tensor (B, K + 1, N, 3) with `noise_level`."""
    batch, positions, _, cache = _forward(policy, batch, grad=kv_grad, use_cache=True)
    return _flow_logprobs(policy, batch, positions.next_position, cache_layer_kv(cache), chains, noise_level, kv_grad)


@dataclass
class PrefixKV:
    """The frozen VLM's part of the flow log-probabilities of one batch, computed once without grad.

    batch: the collated batch on the policy's device (its attention mask and history features are what the
    expert reads besides the K/V); layer_kv: one entry per VLM layer, (K, V) each (B, kv_heads, P, head_dim)
    in the VLM's dtype at the layers `layers` the expert reads, None at the others (never kept);
    next_position (B,): one past each row's last text position. reference_flow: the frozen reference
    expert's `FlowLogprobs` on these samples' chains, kept by the first update that computes them (the
    reference does not train, so every later update of the step reads them)."""

    batch: PolicyInputs
    layer_kv: list[Optional[tuple[torch.Tensor, torch.Tensor]]]
    next_position: torch.Tensor
    layers: tuple[int, ...]
    reference_flow: Optional[FlowLogprobs] = None

    @property
    def nbytes(self) -> int:
        """Bytes of the kept K/V."""
        return sum(t.numel() * t.element_size() for kv in self.layer_kv if kv is not None for t in kv)

    def rows(self, index: list[int], batch: PolicyInputs) -> "PrefixKV":
        """The prefix of `batch` (on the policy's device and dtype), whose row i is row index[i] of this prefix's
        batch (same prompt, same completion): the K/V are gathered, not recomputed. Raises ValueError if the
        padded rows disagree."""
        where = torch.as_tensor(index, dtype=torch.long, device=self.next_position.device)
        if not torch.equal(self.batch.attention_mask[where], batch.attention_mask):
            raise ValueError("the rows of the cached prefix are not those of the batch (their padding differs)")
        layer_kv = [None if kv is None else (kv[0][where], kv[1][where]) for kv in self.layer_kv]
        return PrefixKV(batch, layer_kv, self.next_position[where], self.layers)


def prefix_kv(policy: "SpanVLAPolicy", batch: PolicyInputs) -> PrefixKV:
    """Run the VLM once over [prompt ; completion] without grad and keep the sparse K/V the expert reads.
    Valid for as long as the VLM's weights do not change (reference experts reading the same VLM included);
    `batch` from `SpanVLAPolicy.collate_completions`."""
    with torch.no_grad():
        batch, positions, _, cache = _forward(policy, batch, grad=False, use_cache=True)
        layers = tuple(policy.expert.kv_layers)
        every = cache_layer_kv(cache)
        kept = [every[i] if i in layers else None for i in range(len(every))]
    del cache, every  # the layers the expert does not read are freed here
    return PrefixKV(batch, kept, positions.next_position, layers)


def cached_flow_step_logprobs(policy: "SpanVLAPolicy", prefix: PrefixKV, chains: Chains,
                              noise_level: Optional[float] = None) -> FlowLogprobs:
    """`flow_step_logprobs` (kv_grad False) of `policy`'s expert on a `PrefixKV` instead of a VLM forward:
    equal to it while the VLM that made `prefix` is the one `policy` would run. `policy` may be a reference
    policy (or the policy with its reference expert swapped in) reading the same frozen VLM."""
    missing = [i for i in policy.expert.kv_layers if prefix.layer_kv[i] is None]
    if missing:
        raise ValueError(f"the cached prefix holds VLM layers {list(prefix.layers)}; the expert reads {missing} too")
    return _flow_logprobs(policy, prefix.batch, prefix.next_position, prefix.layer_kv, chains, noise_level,
                          kv_grad=False)


def check_vlm_frozen(policy: "SpanVLAPolicy") -> None:
    """Raise ValueError unless the VLM computes what it computed when loaded: no VLM parameter trains, and
    every LoRA adapter is zero (peft's initialisation: B = 0; adapters injected for `train_target: expert`
    are frozen and never move). Then the policy's VLM, a frozen copy of it and the VLM with its adapters
    switched off all give the same K/V, and one cached prefix serves the policy and the reference."""
    training = [n for n, p in policy.vlm.named_parameters() if p.requires_grad]
    if training:
        raise ValueError(f"the VLM is not frozen ({len(training)} trainable tensors, e.g. {training[0]}): "
                         "its K/V change with every update and cannot be cached")
    moved = [n for n, p in policy.vlm.named_parameters() if ".lora_B" in n and p.numel() and bool(p.detach().any())]
    if moved:
        raise ValueError(f"LoRA adapter {moved[0]} is not zero: the VLM with adapters differs from the reference's")


def score_completions(policy: "SpanVLAPolicy", batch: PolicyInputs, chains: Optional[Chains] = None,
                      temperature: float = 1.0, noise_level: Optional[float] = None,
                      kv_grad: bool = True) -> tuple[TokenLogprobs, Optional[FlowLogprobs]]:
    """Token and (when chains are given) flow log-probabilities from ONE VLM forward with grad (joint training)."""
    batch, positions, hidden, cache = _forward(policy, batch, grad=True, use_cache=chains is not None)
    tokens = _token_logprobs(policy, batch, hidden, temperature)
    flow = None if chains is None else _flow_logprobs(policy, batch, positions.next_position, cache_layer_kv(cache),
                                                      chains, noise_level, kv_grad)
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
