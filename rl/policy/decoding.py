"""Token generation with the KV cache, following the completion format of `rl.policy.prompt`.

Each row walks through phases: `<think>` (forced) -> reasoning (sampled from the text vocabulary, i.e.
without the structural, vision and action tokens, until the model writes `</think>`, which is forced after
`max_reasoning_tokens`) -> `<answer>` (forced) ->
either `<action_gen>` (forced; the expert takes over) or `num_action_tokens` action tokens (sampled from
the action vocabulary only) and `</answer>` (forced). Every emitted token is fed back, so the cache ends
up holding the whole completion (what the expert reads and what the learner recomputes).

Log-probabilities are those of the temperature-scaled distribution before top-p truncation (the quantity
the learner recomputes; top-p only shapes exploration), over the reasoning vocabulary in reasoning slots
and over the codebook's action tokens in action slots.
Forced tokens get log-probability 0 and `sampled = False`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from rl.policy.backbone import decode_step
from rl.policy.config import ACTION_SOURCES
from rl.policy.inputs import Completion
from rl.policy.tokenizer import PolicyTokenizer

THINK_OPEN, REASON, ANSWER_OPEN, ACTION_GEN, ACTIONS, ANSWER_CLOSE, DONE = range(7)


@dataclass
class DecodeOptions:
    """mode: "expert" or "tokens"; temperature 0 = greedy; `reasoning_tokens` forces exactly that many
    reasoning tokens (`</think>` is masked before, forced after: the latency benchmark's fixed counts)."""

    mode: str = "expert"
    action_vocab: int = 0  # action slots sample among the first `action_vocab` action tokens (the codebook's)
    temperature: float = 1.0
    top_p: float = 1.0
    max_reasoning_tokens: int = 48
    num_action_tokens: int = 8
    reasoning_tokens: Optional[int] = None


@dataclass
class DecodeResult:
    """tokens/logprobs/sampled/action_slots: (B, T) (rows padded after their end); lengths (B,);
    key_mask (B, cached) bool over the cache's positions; next_position (B,): one past each row's last
    text position; seconds spent while some row was still reasoning, and in action tokens only."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    sampled: torch.Tensor
    action_slots: torch.Tensor
    lengths: torch.Tensor
    key_mask: torch.Tensor
    next_position: torch.Tensor
    reasoning_s: float
    actions_s: float

    def completion(self, row: int) -> Completion:
        n = int(self.lengths[row])
        return Completion(
            token_ids=self.tokens[row, :n].cpu().numpy(),
            logprobs=self.logprobs[row, :n].cpu().numpy(),
            sampled=self.sampled[row, :n].cpu().numpy(),
            action_slots=self.action_slots[row, :n].cpu().numpy(),
        )


def sample_from_logits(logits: torch.Tensor, temperature: float, top_p: float,
                       generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) fp32 -> (token index (B,), its log-probability under softmax(logits / temperature)).
    temperature 0: argmax, log-probability at temperature 1. top_p < 1 samples from the nucleus."""
    if temperature <= 0.0:
        logp = torch.log_softmax(logits, dim=-1)
        index = logits.argmax(-1)
        return index, logp.gather(-1, index[:, None])[:, 0]
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keeps at least the most likely token
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    index = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return index, logp.gather(-1, index[:, None])[:, 0]


@torch.no_grad()
def generate(vlm, tokenizer: PolicyTokenizer, cache, first_logits: torch.Tensor, key_mask: torch.Tensor,
             next_position: torch.Tensor, options: DecodeOptions,
             generator: Optional[torch.Generator] = None) -> DecodeResult:
    """Decode completions for every row of a prefilled cache. first_logits (B, V): the prompt's last logits;
    key_mask (B, P): the prompt's attention mask; next_position (B,): the prompt's next text position."""
    if options.mode not in ACTION_SOURCES:
        raise ValueError(f"decode mode {options.mode!r}: expected one of {ACTION_SOURCES}")
    tok = tokenizer
    device = first_logits.device
    b = first_logits.shape[0]
    phase = torch.full((b,), THINK_OPEN, dtype=torch.long, device=device)
    reasoned = torch.zeros(b, dtype=torch.long, device=device)
    acted = torch.zeros(b, dtype=torch.long, device=device)
    key_mask = key_mask.bool()
    position = next_position.clone()
    rows = {k: [] for k in ("tokens", "logprobs", "sampled", "slots")}
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    action_lo = tok.action_offset
    action_hi = action_lo + (options.action_vocab or tok.num_action_tokens)
    budget = options.reasoning_tokens if options.reasoning_tokens is not None else options.max_reasoning_tokens
    logits = first_logits
    banned = tok.reasoning_banned(logits.shape[-1], device)
    reasoning_s = actions_s = 0.0
    while bool((phase != DONE).any()):
        started = time.perf_counter()
        was_reasoning = bool((phase <= ACTION_GEN).any())
        active = phase != DONE
        # Candidates: a free token, an action token, and the forced token of each phase.
        free_logits = logits.masked_fill(banned, float("-inf"))
        if options.reasoning_tokens is not None:
            free_logits[:, tok.think_close_id] = float("-inf")
        free_id, free_lp = sample_from_logits(free_logits, options.temperature, options.top_p, generator)
        act_idx, act_lp = sample_from_logits(logits[:, action_lo:action_hi], options.temperature, options.top_p, generator)
        forced = torch.full_like(phase, tok.pad_id)
        forced[phase == THINK_OPEN] = tok.think_open_id
        forced[phase == ANSWER_OPEN] = tok.answer_open_id
        forced[phase == ACTION_GEN] = tok.action_gen_id
        forced[phase == ANSWER_CLOSE] = tok.answer_close_id
        reason_out = (phase == REASON) & (reasoned >= budget)
        forced[reason_out] = tok.think_close_id
        is_free = (phase == REASON) & ~reason_out
        is_action = phase == ACTIONS
        token = torch.where(is_free, free_id, torch.where(is_action, act_idx + action_lo, forced))
        logprob = torch.where(is_free, free_lp, torch.where(is_action, act_lp, torch.zeros_like(free_lp)))
        rows["tokens"].append(torch.where(active, token, torch.full_like(token, tok.pad_id)))
        rows["logprobs"].append(torch.where(active, logprob, torch.zeros_like(logprob)))
        rows["sampled"].append(active & (is_free | is_action))
        rows["slots"].append(active & is_action)
        lengths += active.long()
        # Phase transitions.
        closed = (phase == REASON) & (token == tok.think_close_id)
        reasoned += is_free.long()
        acted += is_action.long()
        nxt = phase.clone()
        nxt[phase == THINK_OPEN] = REASON
        nxt[closed] = ANSWER_OPEN
        nxt[phase == ANSWER_OPEN] = ACTION_GEN if options.mode == "expert" else ACTIONS
        nxt[phase == ACTION_GEN] = DONE
        nxt[is_action & (acted >= options.num_action_tokens)] = ANSWER_CLOSE
        nxt[phase == ANSWER_CLOSE] = DONE
        phase = torch.where(active, nxt, phase)
        # Feed the emitted tokens (finished rows feed a masked pad).
        key_mask = torch.cat([key_mask, active[:, None]], dim=1)
        fed = torch.where(active, token, torch.full_like(token, tok.pad_id))
        logits = decode_step(vlm, fed, position, key_mask.long(), cache)
        position = position + active.long()
        elapsed = time.perf_counter() - started
        if was_reasoning:
            reasoning_s += elapsed
        else:
            actions_s += elapsed
    stack = lambda name: torch.stack(rows[name], dim=1)  # noqa: E731
    return DecodeResult(stack("tokens"), stack("logprobs").float(), stack("sampled"), stack("slots"), lengths,
                        key_mask, position, reasoning_s, actions_s)
