"""Inference latency: SpanVLA's flow expert on the KV cache against autoregressive action tokens (AutoVLA),
on the same VLM, in one run.

    python benchmarks/latency.py [--preset tiny|small|3b] [--device cpu|cuda] [--scenes 10] [--repeats 3] [--out FILE]

Per scene: prefill; reasoning decode; trajectory generation by (a) action tokens decoded with the KV cache
and (b) the flow expert (5 Euler steps) reading every second VLM layer, at 10 points (0.5 s) and at 50
points (0.1 s); then the expert alone reading every layer, every second, every fourth, the last only.

The expert's suffix layout: SpanVLA's rows use one expert token per 0.5 s of plan
(`policy.expert.waypoints_per_token` = 1 at 10 points, 5 at 50 points: 10 waypoint tokens either way); the
same run also times the one-token-per-point layout (k = 1: 50 tokens at 50 points) and k = 2 / 10 (5 tokens),
and reports the ratios of both layouts. The bound on the total: with prefill p and per-token decode d (measured
on the AR side, 23 + 52 steps), AR / SpanVLA <= (p + 75 d) / (p + 15 d) at 50 points (and (p + 35 d) /
(p + 15 d) at 10) even for an expert that takes no time; both are reported.

Token counts are the paper's (Table 4), counted as decode steps including the format's structural tokens:
AR reasoning 23 steps (`<think>`, 20 text tokens, `</think>`, `<answer>`), AR trajectory 12 / 52 steps
(action tokens and `</answer>`); SpanVLA reasoning 15 steps (`<think>`, 11 text tokens, `</think>`,
`<answer>`, `<action_gen>`). Each stage of each scene is run `--repeats` times and its fastest run kept (robust
to other processes on a shared machine); reported: medians over scenes, and ratios AR / SpanVLA beside the paper's
(trajectory 5x at 10 points and 21x at 50; total 1.9x and 3.8x). Weights are random: latency does not
depend on them, and every count is forced.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import replace

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rl.policy.backbone import attention_geometry  # noqa: E402
from rl.policy.codebook import build_codebook  # noqa: E402
from rl.policy.config import BackboneConfig, ExpertConfig, PolicyConfig  # noqa: E402
from rl.policy.decoding import DecodeOptions, generate  # noqa: E402
from rl.policy.expert import ActionExpert  # noqa: E402
from rl.policy.inference import prefill, run_expert  # noqa: E402
from rl.policy.policy import SpanVLAPolicy  # noqa: E402
from sim import conventions as C  # noqa: E402
from sim.scene import Camera, EgoState, MapData, Scene  # noqa: E402

PAPER_SECONDS = {  # Table 4
    "ar_10": {"prefill": 0.09, "reasoning": 0.76, "trajectory": 0.40, "total": 1.25},
    "ar_50": {"prefill": 0.09, "reasoning": 0.76, "trajectory": 1.72, "total": 2.57},
    "span": {"prefill": 0.09, "reasoning": 0.50, "trajectory": 0.08, "total": 0.67},
}
PAPER_RATIOS = {"trajectory_10": 5.0, "trajectory_50": 21.0, "total_10": 1.9, "total_50": 3.8}
AR_REASONING_STEPS, SPAN_REASONING_STEPS = 23, 15
AR_TRAJECTORY_STEPS = {10: 12, 50: 52}
HORIZONS = {10: 0.5, 50: 0.1}
TOKEN_SPAN_S = 0.5  # SpanVLA's layout: one expert token per 0.5 s of plan, whatever the point spacing
LAYOUTS = {10: (1, 2), 50: (1, 5, 10)}  # waypoints per expert token timed at each horizon
KV_VARIANTS = {"every layer": (1, 0), "interval 2": (2, 1), "interval 4": (4, 3), "last layer": None}


def make_scene(index: int, size=(64, 128)) -> Scene:
    rng = np.random.default_rng(index)
    v = float(rng.uniform(3, 12))
    history = [EgoState(-v * t, 0.0, 0.0, v, 0.0) for t in (1.5, 1.0, 0.5)] + [EgoState(0.0, 0.0, 0.0, v, 0.0, 0.2, 0.0)]
    cameras = [Camera(n, np.eye(3), np.eye(3), np.zeros(3), rng.integers(0, 256, (4, *size, 3), dtype=np.uint8))
               for n in C.CAMERA_NAMES]
    return Scene(f"bench-{index}", history, 1, MapData(), cameras=cameras)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def design_k(horizon: int) -> int:
    """Waypoints per expert token of SpanVLA's rows: 0.5 s of plan per token (1 at 10 points, 5 at 50)."""
    return max(1, round(TOKEN_SPAN_S / HORIZONS[horizon]))


def make_expert(policy: SpanVLAPolicy, horizon: int, kv: tuple | None, k: int | None = None) -> ActionExpert:
    cfg = replace(policy.config.expert, horizon=horizon, interval_s=HORIZONS[horizon],
                  waypoints_per_token=design_k(horizon) if k is None else k)
    if kv is None:
        cfg = replace(cfg, kv_layers=[-1])
    else:
        cfg = replace(cfg, kv_layers=None, kv_layer_interval=kv[0], kv_layer_offset=kv[1])
    return ActionExpert(cfg, attention_geometry(policy.vlm)).to(policy.device).eval()


def expert_trajectory(expert: ActionExpert, cache, decoded, inputs) -> np.ndarray:
    """What inference does after `<action_gen>`: context from the cache, 5 Euler steps, denormalise."""
    return run_expert(expert, cache, decoded, inputs.history, inputs.velocity).trajectories


def decode(policy, cache, logits, inputs, positions, mode: str, reasoning_text_tokens: int, action_tokens: int = 1):
    options = DecodeOptions(mode=mode, action_vocab=policy.action_vocab, temperature=0.0,
                            reasoning_tokens=reasoning_text_tokens, num_action_tokens=action_tokens)
    return generate(policy.vlm, policy.tokenizer, cache, logits, inputs.attention_mask, positions.next_position, options)


def run_scene(policy, scene, experts, variant_experts, layout_experts) -> dict:
    device = policy.device
    row: dict = {}
    (inputs, positions, cache, logits), row["prefill_s"] = timed(device, lambda: prefill(policy, [scene]))
    # (b) SpanVLA: 15 reasoning steps ending with <action_gen>, then the expert on the cache.
    span_cache = copy.deepcopy(cache)
    decoded = decode(policy, span_cache, logits, inputs, positions, "expert", SPAN_REASONING_STEPS - 4)
    assert int(decoded.lengths[0]) == SPAN_REASONING_STEPS
    row["span_reasoning_s"] = decoded.reasoning_s
    for n, expert in experts.items():
        _, row[f"span_trajectory_{n}_s"] = timed(device, lambda e=expert: expert_trajectory(e, span_cache, decoded, inputs))
    for (n, k), expert in layout_experts.items():
        _, row[f"span_trajectory_{n}_k{k}_s"] = timed(device, lambda e=expert: expert_trajectory(e, span_cache, decoded, inputs))
    for (name, n), expert in variant_experts.items():
        _, row[f"expert_{name}_{n}_s"] = timed(device, lambda e=expert: expert_trajectory(e, span_cache, decoded, inputs))
    # (a) AR tokens: 23 reasoning steps, then 12 / 52 action-token steps with the KV cache.
    for n, steps in AR_TRAJECTORY_STEPS.items():
        ar_cache = copy.deepcopy(cache)
        ar = decode(policy, ar_cache, logits, inputs, positions, "tokens", AR_REASONING_STEPS - 3, steps - 1)
        assert int(ar.lengths[0]) == AR_REASONING_STEPS + steps
        tokens = ar.tokens[0, AR_REASONING_STEPS:-1].cpu().numpy() - policy.tokenizer.action_offset
        _, decode_s = timed(device, lambda t=tokens: policy.codebook.decode(t))
        row[f"ar_reasoning_{n}_s"] = ar.reasoning_s
        row[f"ar_trajectory_{n}_s"] = ar.actions_s + decode_s
    return row


def summarise(rows: list[dict]) -> dict:
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    out = {"median_s": med, "ratios": {}, "totals_s": {}, "layouts": {}}
    ar_reasoning = statistics.median([med["ar_reasoning_10_s"], med["ar_reasoning_50_s"]])
    for n in (10, 50):
        ar_total = med["prefill_s"] + ar_reasoning + med[f"ar_trajectory_{n}_s"]
        span_total = med["prefill_s"] + med["span_reasoning_s"] + med[f"span_trajectory_{n}_s"]
        out["totals_s"][f"ar_{n}"], out["totals_s"][f"span_{n}"] = ar_total, span_total
        out["ratios"][f"trajectory_{n}"] = med[f"ar_trajectory_{n}_s"] / med[f"span_trajectory_{n}_s"]
        out["ratios"][f"total_{n}"] = ar_total / span_total
        # The one-token-per-point layout (the expert before `waypoints_per_token`), from the same run.
        out["ratios"][f"trajectory_{n}_one_token_per_point"] = med[f"ar_trajectory_{n}_s"] / med[f"span_trajectory_{n}_k1_s"]
        out["ratios"][f"total_{n}_one_token_per_point"] = ar_total / (
            med["prefill_s"] + med["span_reasoning_s"] + med[f"span_trajectory_{n}_k1_s"])
        for k in LAYOUTS[n]:  # every timed layout, the design's included (timed twice: the two agree)
            e = med[f"span_trajectory_{n}_k{k}_s"]
            span_k = med["prefill_s"] + med["span_reasoning_s"] + e
            out["layouts"][f"{n}_k{k}"] = {"points": n, "waypoints_per_token": k, "expert_tokens": -(-n // k),
                                           "trajectory_s": e, "total_s": span_k,
                                           "trajectory_ratio": med[f"ar_trajectory_{n}_s"] / e,
                                           "total_ratio": ar_total / span_k}
    out["ratios"]["reasoning"] = ar_reasoning / med["span_reasoning_s"]
    out["ar_reasoning_s"] = ar_reasoning
    out["bound"] = total_bound(med)
    return out


def total_bound(med: dict) -> dict:
    """The ceiling on AR / SpanVLA in total that the expert cannot lift: prefill p and per-token decode d
    (AR reasoning + action tokens at 50 points over their 75 steps), the expert's time e set to 0."""
    p = med["prefill_s"]
    d = (med["ar_reasoning_50_s"] + med["ar_trajectory_50_s"]) / (AR_REASONING_STEPS + AR_TRAJECTORY_STEPS[50])
    out = {"prefill_s": p, "decode_per_token_s": d,
           "span_decode_per_token_s": med["span_reasoning_s"] / SPAN_REASONING_STEPS}
    for n, steps in AR_TRAJECTORY_STEPS.items():
        ar, span = p + (AR_REASONING_STEPS + steps) * d, p + SPAN_REASONING_STEPS * d
        out[f"total_{n}_expert_free"] = ar / span  # (p + 75 d) / (p + 15 d) at 50 points
        out[f"total_{n}_measured_expert"] = ar / (span + med[f"span_trajectory_{n}_s"])
    # What d the paper's ratio would need at this prefill: (p + 75 d) / (p + 15 d) = 3.8 -> d = 2.8 p / 18.
    out["decode_per_token_s_for_3.8x"] = (PAPER_RATIOS["total_50"] - 1) * p / (75 - 15 * PAPER_RATIOS["total_50"])
    return out


def print_table(args, policy, summary, variant_layers) -> None:
    med, tot, ratio = summary["median_s"], summary["totals_s"], summary["ratios"]
    ms = lambda s: f"{1000 * s:8.2f} ms"  # noqa: E731
    params = sum(p.numel() for p in policy.vlm.parameters()) / 1e6
    print(f"\nlatency, preset {args.preset} ({params:.1f}M-parameter VLM), device {policy.device}, dtype {policy.dtype},"
          f" torch threads {torch.get_num_threads()}, median of {args.scenes} scenes (fastest of {args.repeats} runs each)")
    print(f"{'stage':34s} {'AR tokens':>11s} {'SpanVLA':>11s} {'ratio':>7s} {'paper':>7s}")
    print(f"{'prefill':34s} {ms(med['prefill_s'])} {ms(med['prefill_s'])} {1.0:6.2f}x {1.0:6.2f}x")
    print(f"{'reasoning (23 vs 15 steps)':34s} {ms(summary['ar_reasoning_s'])} {ms(med['span_reasoning_s'])}"
          f" {ratio['reasoning']:6.2f}x {0.76 / 0.50:6.2f}x")
    for n in (10, 50):
        k = design_k(n)
        label = f'trajectory {n} pts ({AR_TRAJECTORY_STEPS[n]} vs {-(-n // k)} tok x 5)'
        print(f"{label:34s} {ms(med[f'ar_trajectory_{n}_s'])}"
              f" {ms(med[f'span_trajectory_{n}_s'])} {ratio[f'trajectory_{n}']:6.2f}x {PAPER_RATIOS[f'trajectory_{n}']:6.2f}x")
        print(f"{f'total {n} pts':34s} {ms(tot[f'ar_{n}'])} {ms(tot[f'span_{n}'])} {ratio[f'total_{n}']:6.2f}x"
              f" {PAPER_RATIOS[f'total_{n}']:6.2f}x")
    print("\nsuffix layouts (5 Euler steps, interval 2): waypoints per expert token k -> expert tokens")
    print(f"{'layout':34s} {'trajectory':>11s} {'ratio':>7s} {'total':>11s} {'ratio':>7s}")
    for key, lay in summary["layouts"].items():
        label = f"{lay['points']} pts, k = {lay['waypoints_per_token']} ({lay['expert_tokens']} tokens)"
        print(f"{label:34s} {ms(lay['trajectory_s'])} {lay['trajectory_ratio']:6.2f}x {ms(lay['total_s'])}"
              f" {lay['total_ratio']:6.2f}x")
    b = summary["bound"]
    print(f"\nbound on the total: p = {ms(b['prefill_s'])}, d = {ms(b['decode_per_token_s'])} per token"
          f" (SpanVLA's reasoning: {ms(b['span_decode_per_token_s'])});"
          f" expert-free (p + 75 d) / (p + 15 d) = {b['total_50_expert_free']:.2f}x at 50 pts,"
          f" (p + 35 d) / (p + 15 d) = {b['total_10_expert_free']:.2f}x at 10 pts;"
          f" 3.8x needs d >= {ms(b['decode_per_token_s_for_3.8x'])} at this p")
    print(f"\nexpert alone (5 Euler steps, k = {design_k(10)} / {design_k(50)}), by the VLM layers it reads")
    print(f"{'layers read':34s} {'10 points':>11s} {'50 points':>11s}")
    for name, layers in variant_layers.items():
        print(f"{f'{name} ({len(layers)}: {layers})':34s} {ms(med[f'expert_{name}_10_s'])} {ms(med[f'expert_{name}_50_s'])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "3b"],
                        help="3b: Qwen2.5-VL-3B's layer shapes with random weights (a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on cpu, bfloat16 on cuda")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs per scene; the fastest of each stage is kept")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked, but torch sees no CUDA device", file=sys.stderr)
        return 2
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    config = PolicyConfig(backbone=BackboneConfig(preset=args.preset, dtype=dtype), expert=ExpertConfig(horizon=10))
    policy = SpanVLAPolicy.build(config).to(device).eval()
    rng = np.random.default_rng(0)
    speeds, curvature = rng.uniform(0, 15, (500, 1)), rng.uniform(-0.03, 0.03, (500, 1))
    t = np.arange(1, 11) * 0.5
    policy.set_codebook(build_codebook(np.stack([speeds * t, curvature * (speeds * t) ** 2 / 2, curvature * speeds * t], -1),
                                       policy.config.codebook.num_tokens))
    experts = {n: make_expert(policy, n, (2, 1)) for n in HORIZONS}
    variant_experts = {(name, n): make_expert(policy, n, kv) for name, kv in KV_VARIANTS.items() for n in HORIZONS}
    variant_layers = {name: variant_experts[(name, 10)].kv_layers for name in KV_VARIANTS}
    layout_experts = {(n, k): make_expert(policy, n, (2, 1), k) for n, ks in LAYOUTS.items() for k in ks}
    torch.set_num_threads(args.threads)  # after the build, which may use every core (the 3b preset's init)
    for i in range(args.warmup):
        run_scene(policy, make_scene(1000 + i), experts, variant_experts, layout_experts)
    rows = []
    for i in range(args.scenes):
        runs = [run_scene(policy, make_scene(i), experts, variant_experts, layout_experts) for _ in range(args.repeats)]
        rows.append({key: min(run[key] for run in runs) for key in runs[0]})
    summary = summarise(rows)
    print_table(args, policy, summary, variant_layers)
    if args.out:
        result = {"preset": args.preset, "device": str(device),
                  "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "dtype": dtype, "threads": torch.get_num_threads(),
                  "scenes": args.scenes, "repeats": args.repeats, "vlm_parameters": sum(p.numel() for p in policy.vlm.parameters()),
                  "steps": {"ar_reasoning": AR_REASONING_STEPS, "span_reasoning": SPAN_REASONING_STEPS,
                            "ar_trajectory": AR_TRAJECTORY_STEPS, "flow_steps": policy.config.expert.num_steps},
                  "waypoints_per_token": {n: design_k(n) for n in HORIZONS},
                  "expert_layers": variant_layers, **summary, "paper_seconds": PAPER_SECONDS, "paper_ratios": PAPER_RATIOS,
                  "per_scene_s": rows}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
