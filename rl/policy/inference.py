"""Inference: batched deterministic planning, and group sampling for RL rollouts (one prefill, G samples
of reasoning and of the flow). Functions of a `SpanVLAPolicy`; its methods call them."""
from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from rl.policy import prompt as P
from rl.policy.backbone import cache_layer_kv, prefix_positions, run_prefix
from rl.policy.config import ACTION_SOURCES, FLOW_STARTS, GROUP_REASONING
from rl.policy.decoding import DecodeOptions, DecodeResult, generate
from rl.policy.expert import ActionExpert
from rl.policy.flow import FlowSample, draw_start, sample_flow
from rl.policy.pace import drive_at_pace, draw_pace, pace_scales, with_pace_column
from rl.policy.outputs import FlowChain, GroupSample, PlanResult, PolicySample, StageTimings
from sim.scene import Scene

if TYPE_CHECKING:
    from rl.policy.policy import SpanVLAPolicy


def _generator(device: torch.device, seed: Optional[int], generator: Optional[torch.Generator]) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _check_source(policy: "SpanVLAPolicy", action_source: str) -> None:
    if action_source not in ACTION_SOURCES:
        raise ValueError(f"action_source={action_source!r}: expected one of {ACTION_SOURCES}")
    if action_source == "tokens" and policy.codebook is None:
        raise ValueError("action_source 'tokens' needs a codebook: set one with SpanVLAPolicy.set_codebook")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def prefill(policy: "SpanVLAPolicy", scenes: Sequence[Scene]):
    """Collate and run the prompt: -> (inputs, positions, cache, last-token logits (B, V) fp32)."""
    inputs = policy.collator().collate(scenes).to(policy.device, policy.dtype)
    positions = prefix_positions(policy.vlm, inputs.input_ids, inputs.attention_mask, inputs.mm_token_type_ids,
                                 inputs.video_grid_thw, inputs.second_per_grid_ts)
    hidden, cache = run_prefix(policy.vlm, inputs, positions)
    logits = policy.vlm.lm_head(hidden[:, -1]).float()
    return inputs, positions, cache, logits


def _decode(policy, cache, logits, key_mask, next_position, action_source, temperature, top_p, max_reasoning_tokens,
            generator) -> DecodeResult:
    options = DecodeOptions(mode=action_source, action_vocab=policy.action_vocab, temperature=temperature, top_p=top_p,
                            max_reasoning_tokens=max_reasoning_tokens, num_action_tokens=policy.num_action_tokens)
    return generate(policy.vlm, policy.tokenizer, cache, logits, key_mask, next_position, options, generator)


@dataclass
class ExpertRun:
    """What `run_expert` returns. trajectories: (B, N, 3) numpy, ego frame (driven at their pace when the expert
    has a pace head); flow: the chain (with the pace's column last when the pace was drawn); sigma0: the prior's
    std; start_scored: the chain's first column is the start's density; pace: the paces z (B,) numpy the head chose
    (whether or not the plans were driven at them), or None without a pace head; plans: (B, N, 3) the flow's plans
    before they were driven at their pace, or None when `trajectories` are those plans."""

    trajectories: np.ndarray
    flow: FlowSample
    sigma0: float
    start_scored: bool
    pace: Optional[np.ndarray] = None
    plans: Optional[np.ndarray] = None


@torch.no_grad()
def run_expert(expert: ActionExpert, cache, decoded: DecodeResult, history: torch.Tensor, velocity: torch.Tensor,
               flow_noise: float = 0.0, generator: Optional[torch.Generator] = None, flow_start: str = "noisy",
               pace_std: float = 0.0, drive_pace: bool = True) -> ExpertRun:
    """The expert on a decoded cache (after `<action_gen>`): context, flow from the prior (a_his itself, or
    a_his + sigma0 eps when `flow_noise` > 0 and `flow_start` is "noisy" or "scored", and always for init
    noise; "scored" adds the start's density as the chain's first step), denormalisation; then, with a pace head,
    the pace (`rl.policy.pace`): its mean, or a draw with std `pace_std` > 0 whose density is the chain's last
    column. `drive_pace` False: the plans as the flow gives them, with the paces the head chose beside them (for
    measuring the pace)."""
    ctx = expert.context(cache_layer_kv(cache), decoded.key_mask, decoded.next_position, history)
    noisy_start = (flow_noise > 0.0 and flow_start != "prior") or expert.cfg.init == "noise"
    start_scored = noisy_start and flow_start == "scored"
    x0 = draw_start(ctx.prior, ctx.sigma0, noisy_start, generator)
    flow = sample_flow(lambda x, t: expert.velocity(x, t, ctx), x0, ctx.prior, ctx.sigma0, expert.cfg.num_steps,
                       flow_noise, generator, score_start=start_scored)
    trajectories = expert.normalizer.denormalize(flow.final.float(), velocity.float()).cpu().double().numpy()
    if expert.pace_head is None:
        return ExpertRun(trajectories, flow, ctx.sigma0, start_scored)
    mean = expert.pace_mean(flow.final, ctx)
    z = draw_pace(mean, pace_std, generator)
    if pace_std > 0.0:
        flow = with_pace_column(flow, z, mean, pace_std)
    pace = z.cpu().numpy()
    if not drive_pace:
        return ExpertRun(trajectories, flow, ctx.sigma0, start_scored, pace)
    driven = drive_at_pace(trajectories, pace_scales(pace, expert.cfg.pace_min_scale), expert.cfg.interval_s)
    return ExpertRun(driven, flow, ctx.sigma0, start_scored, pace, plans=trajectories)


def _repeat_decoded(decoded: DecodeResult, times: int) -> DecodeResult:
    """Every row of `decoded` repeated `times` times (rows stay in order: r, r, ..., r + 1, ...)."""
    tensors = {f.name: getattr(decoded, f.name).repeat_interleave(times, dim=0) for f in fields(decoded)
               if isinstance(getattr(decoded, f.name), torch.Tensor)}
    return replace(decoded, **tensors)


def _parse(policy, completion_ids) -> tuple[str, P.ParsedOutput]:
    text = policy.tokenizer.decode(completion_ids)
    return text, P.parse_output(text)


def plan(policy: "SpanVLAPolicy", scenes: Sequence[Scene], action_source: str, seed: int = 0,
         drive_pace: bool = True) -> PlanResult:
    """Trajectories (B, N, 3) for a batch of scenes: greedy reasoning, then the expert's deterministic Euler
    flow from a_his (`init: noise` draws its start with `seed`), driven at the pace head's mean pace when the expert
    has one (and `drive_pace`), or the decoded action tokens."""
    _check_source(policy, action_source)
    device = policy.device
    generator = _generator(device, seed, None)
    timings = StageTimings()
    _sync(device)
    start = time.perf_counter()
    inputs, positions, cache, logits = prefill(policy, scenes)
    _sync(device)
    timings.prefill_s = time.perf_counter() - start
    decoded = _decode(policy, cache, logits, inputs.attention_mask, positions.next_position, action_source, 0.0, 1.0,
                      policy.config.max_reasoning_tokens, generator)
    timings.reasoning_s, timings.trajectory_s = decoded.reasoning_s, decoded.actions_s
    texts, modes, reasoning, parsed = [], [], [], []
    for b in range(len(scenes)):
        text, out = _parse(policy, decoded.completion(b).token_ids)
        texts.append(text), modes.append(out.mode), reasoning.append(out.reasoning), parsed.append(out)
    paces, plans = None, None
    if action_source == "expert":
        _sync(device)
        start = time.perf_counter()
        run = run_expert(policy.expert, cache, decoded, inputs.history, inputs.velocity, 0.0, generator,
                         drive_pace=drive_pace)
        trajectories, paces, plans = run.trajectories, run.pace, run.plans
        _sync(device)
        timings.trajectory_s = time.perf_counter() - start
    else:
        start = time.perf_counter()
        trajectories = np.stack([policy.tokens_to_trajectory(p.action_tokens) for p in parsed])
        timings.trajectory_s += time.perf_counter() - start
    return PlanResult(trajectories, texts, modes, reasoning, timings, paces, plans)


def sample_group(policy: "SpanVLAPolicy", scene: Scene, group_size: int, *, temperature: float, top_p: float,
                 flow_noise: float, action_source: str, seed: Optional[int], generator: Optional[torch.Generator],
                 max_reasoning_tokens: int, group_reasoning: str = "sampled", flow_start: str = "noisy",
                 pace_std: float = 0.0) -> GroupSample:
    """G samples of one scene: ONE prefill, the cache repeated G times, G reasoning traces sampled at
    `temperature` / `top_p`, then G flows with noise level `flow_noise` (a in spanvla.md 2.4; 0 =
    deterministic Euler from a_his) or the sampled action tokens decoded. With `group_reasoning` "greedy"
    the group shares ONE greedy trace (the one `plan` decodes), decoded before the cache is repeated, and
    its G flows differ only in their noise. `flow_start` "prior" starts each flow at a_his, as `plan` does,
    instead of a_his + sigma0 eps ("noisy"; with `init: noise` the start is always drawn), so that the G flows
    differ only through their scored transitions; "scored" draws the start as "noisy" does and records its
    density as the chain's first step. `pace_std` > 0 (an expert with a pace head) draws each sample's pace around
    the head's mean and records it and its density in the chain (`rl.policy.pace`); 0 drives each plan at the
    mean. The same seed (or generator state) gives the same samples."""
    _check_source(policy, action_source)
    if group_size < 1:
        raise ValueError(f"group_size={group_size}: must be >= 1")
    if group_reasoning not in GROUP_REASONING:
        raise ValueError(f"group_reasoning={group_reasoning!r}: expected one of {GROUP_REASONING}")
    if group_reasoning == "greedy" and action_source != "expert":
        raise ValueError("group_reasoning 'greedy' with action_source 'tokens' would give G identical plans")
    if not 0.0 <= flow_noise <= 1.0:
        raise ValueError(f"flow_noise={flow_noise}: the noise level a must lie in [0, 1]")
    if flow_start not in FLOW_STARTS:
        raise ValueError(f"flow_start={flow_start!r}: expected one of {FLOW_STARTS}")
    if pace_std < 0.0 or (pace_std > 0.0 and (policy.expert.pace_head is None or action_source != "expert")):
        raise ValueError(f"pace_std={pace_std}: a pace is drawn (> 0) only by an expert with a pace head "
                         "(policy.expert.pace) planning the group (action_source expert)")
    device = policy.device
    generator = _generator(device, seed, generator)
    timings = StageTimings()
    _sync(device)
    start = time.perf_counter()
    inputs, positions, cache, logits = prefill(policy, [scene])
    repeat = lambda x: x.repeat_interleave(group_size, dim=0)  # noqa: E731
    if group_reasoning == "greedy":
        _sync(device)
        timings.prefill_s = time.perf_counter() - start
        decoded = _repeat_decoded(_decode(policy, cache, logits, inputs.attention_mask, positions.next_position,
                                          action_source, 0.0, 1.0, max_reasoning_tokens, generator), group_size)
        cache.batch_repeat_interleave(group_size)
    else:
        cache.batch_repeat_interleave(group_size)
        _sync(device)
        timings.prefill_s = time.perf_counter() - start
        decoded = _decode(policy, cache, repeat(logits), repeat(inputs.attention_mask), repeat(positions.next_position),
                          action_source, temperature, top_p, max_reasoning_tokens, generator)
    timings.reasoning_s, timings.trajectory_s = decoded.reasoning_s, decoded.actions_s
    flow = None
    if action_source == "expert":
        _sync(device)
        start = time.perf_counter()
        run = run_expert(policy.expert, cache, decoded, repeat(inputs.history), repeat(inputs.velocity), flow_noise,
                         generator, flow_start, pace_std)
        trajectories, flow, sigma0 = run.trajectories, run.flow, run.sigma0
        _sync(device)
        timings.trajectory_s = time.perf_counter() - start
    samples = []
    for g in range(group_size):
        completion = decoded.completion(g)
        text, out = _parse(policy, completion.token_ids)
        chain, plan_g = None, None
        if flow is not None:
            paced = pace_std > 0.0  # checked above: only with a pace head
            chain = FlowChain(flow.chain[g].float().cpu().numpy(), flow.logprobs[g].cpu().numpy(),
                              flow.stochastic.cpu().numpy(), float(flow_noise), float(sigma0),
                              start_scored=run.start_scored, pace=float(run.pace[g]) if paced else None,
                              pace_std=float(pace_std))
            trajectory = trajectories[g]
            plan_g = None if run.plans is None else run.plans[g]
        else:
            trajectory = policy.tokens_to_trajectory(out.action_tokens)
        samples.append(PolicySample(completion, text, out.mode, out.reasoning,
                                    np.asarray(out.action_tokens, dtype=np.int64), trajectory, chain, plan_g))
    return GroupSample(scene.token, samples, action_source, float(temperature), float(top_p), float(flow_noise), timings)
