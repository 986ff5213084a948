"""How close are the negatives to the expert, before and with the logged human driver? Per scenario family,
over seeds 0 .. N-1:

  mistake rate   the share of positive scenes whose human log is a mistake (`--mistake-rate`, default 0.3),
                 over seeds 0 .. `--rate-seeds` - 1 (default 100: 20 seeds leave a binomial spread of +-0.1)
  ADE            between the negative and the expert's plan (first 8 poses, the plan NAVSIM scores; the
                 distance `rewards.shaping` measures): median and share within 1.7 m (the shaping's
                 threshold), for the gross negatives (no human logs) and the graded ones (human logs on:
                 the neg scene's logged mistake at a severity drawn from Beta(a, b))
  PDMS           NAVSIM v1 PDMS of the expert's plan and of both negatives, and the share of negatives that
                 score below the expert's plan of the same scene (by more than 0.01)
  severity       median drawn severity of the graded negatives
  log quality    with `--log-rates R,...`: the PDMS and at-fault collision share (NC < 1) of the positive scenes'
                 logs at each mistake rate, over seeds 0 .. `--rate-seeds` - 1. A seed's decision draw u, its kind
                 and severity do not depend on the rate (`sim.scenarios.human.draw`), so its log at rate r is its
                 mistake when u < r, else the expert's plan: one scene per seed scores every rate.

    python benchmarks/human_logs.py --seeds 20 [--rate-seeds 100] [--log-rates 0,0.15,0.3,0.5]
                                    [--families lane_follow,curve] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from rewards.pdm.scorer import PDMScorer
from rewards.shaping import average_displacement
from sim import conventions as C
from sim.scenarios import FAMILIES, GenerationError, generate
from sim.scenarios.generator import logged_drive, stream
from sim.scenarios.human import HumanLogs, draw

WITHIN_M = 1.7
BELOW_EXPERT = 0.01


def _summary(ades: list[float], pdms: list[float], expert: list[float]) -> dict:
    a = np.asarray(ades, dtype=np.float64)
    return {"ade_median_m": float(np.median(a)) if a.size else None,
            "within_1_7m": float(np.mean(a <= WITHIN_M)) if a.size else None,
            "pdms_mean": float(np.mean(pdms)) if pdms else None,
            "pdms_below_expert": float(np.mean(np.asarray(pdms) < np.asarray(expert) - BELOW_EXPERT)) if pdms else None,
            "count": int(a.size)}


def evaluate(families: Sequence[str], seeds: Sequence[int], logs: HumanLogs, rate_seeds: Sequence[int]) -> dict:
    scorer = PDMScorer("v1")
    table: dict = {}
    pooled = {"gross": ([], []), "graded": ([], []), "expert": []}
    for family in families:
        started = time.perf_counter()
        gross_ade, gross_pdms, graded_ade, graded_pdms, expert_pdms, severities = [], [], [], [], [], []
        kinds: Counter = Counter()
        mistakes = sum(logged_drive(family, seed, logs).kind is not None for seed in rate_seeds)
        skipped = 0
        for seed in seeds:
            try:
                old = generate(family, seed, "neg")
                new = generate(family, seed, "neg", human=logs)
            except (GenerationError, ValueError):
                skipped += 1  # the seed offers no negative at all (the generator writes it as a positive)
                continue
            expert = new.future[: C.NAVSIM_PLAN_POSES]
            plans = np.stack([expert, old.negative_trajectory[: C.NAVSIM_PLAN_POSES], new.negative_trajectory[: C.NAVSIM_PLAN_POSES]])
            results = scorer.score(scorer.prepare(new), plans)
            expert_pdms.append(float(results[0]["PDMS"]))
            gross_ade.append(average_displacement(expert, plans[1]))
            gross_pdms.append(float(results[1]["PDMS"]))
            graded_ade.append(average_displacement(expert, plans[2]))
            graded_pdms.append(float(results[2]["PDMS"]))
            kinds[new.negative_kind] += 1
            severities.append(_severity(family, seed, logs))
        table[family] = {
            "mistake_rate": mistakes / len(rate_seeds),
            "gross": _summary(gross_ade, gross_pdms, expert_pdms),
            "graded": _summary(graded_ade, graded_pdms, expert_pdms),
            "expert_pdms_mean": float(np.mean(expert_pdms)) if expert_pdms else None,
            "severity_median": float(np.median(severities)) if severities else None,
            "graded_kinds": dict(sorted(kinds.items())),
            "seeds_without_negative": skipped,
            "seconds": round(time.perf_counter() - started, 1),
        }
        pooled["gross"][0].extend(gross_ade), pooled["gross"][1].extend(gross_pdms)
        pooled["graded"][0].extend(graded_ade), pooled["graded"][1].extend(graded_pdms)
        pooled["expert"].extend(expert_pdms)
        print(f"  {family}: {table[family]['seconds']} s", file=sys.stderr, flush=True)
    table["overall"] = {
        "mistake_rate": float(np.mean([table[f]["mistake_rate"] for f in families])),
        "gross": _summary(*pooled["gross"], pooled["expert"]),
        "graded": _summary(*pooled["graded"], pooled["expert"]),
        "expert_pdms_mean": float(np.mean(pooled["expert"])) if pooled["expert"] else None,
    }
    return table


def log_quality(families: Sequence[str], seeds: Sequence[int], logs: HumanLogs, rates: Sequence[float]) -> dict:
    """{family and "overall": {rate: {"pdms": mean PDMS of the positive logs, "collisions": share with NC < 1}}}."""
    scorer = PDMScorer("v1")
    pooled: dict[float, tuple[list, list]] = {r: ([], []) for r in rates}
    table: dict = {}
    always = HumanLogs(1.0, logs.severity_a, logs.severity_b)
    for family in families:
        per_rate: dict[float, tuple[list, list]] = {r: ([], []) for r in rates}
        for seed in seeds:
            u = float(stream(family, seed, "human").random())  # the draw `draw` compares with the rate
            # one scene: its future is the expert's plan whatever the logs; its log the mistake (or the plan
            # when the seed offers none)
            scene = generate(family, seed, "pos", human=always)
            expert = scene.future[: C.NAVSIM_PLAN_POSES]
            has_mistake = not np.array_equal(scene.human_trajectory, expert)
            plans = [expert, scene.human_trajectory] if has_mistake else [expert]
            results = scorer.score(scorer.prepare(scene), np.stack(plans))
            for r in rates:
                chosen = results[1] if has_mistake and u < r else results[0]
                for target in (per_rate[r], pooled[r]):
                    target[0].append(float(chosen["PDMS"]))
                    target[1].append(float(chosen["NC"] < 1.0))
        table[family] = {str(r): {"pdms": float(np.mean(p)), "collisions": float(np.mean(c))} for r, (p, c) in per_rate.items()}
        print(f"  log quality {family} done", file=sys.stderr, flush=True)
    table["overall"] = {str(r): {"pdms": float(np.mean(p)), "collisions": float(np.mean(c))} for r, (p, c) in pooled.items()}
    return table


def render_log_quality(table: dict) -> str:
    rates = list(next(iter(table.values())))
    lines = ["| family | " + " | ".join(f"logs at rate {r}: PDMS / collisions" for r in rates) + " |",
             "|---|" + "---|" * len(rates)]
    for family, row in table.items():
        name = f"**{family}**" if family == "overall" else family
        lines.append(f"| {name} | " + " | ".join(f"{row[r]['pdms']:.3f} / {row[r]['collisions']:.0%}" for r in rates) + " |")
    return "\n".join(lines)


def _severity(family: str, seed: int, logs: HumanLogs) -> float:
    """The severity the neg scene of (family, seed) drew (the generator's own draw, repeated)."""
    return draw(logs, stream(family, seed, "human"), family)[1]


def _fmt(value: Optional[float], pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def render(table: dict) -> str:
    lines = ["| family | log mistake rate | ADE median gross / graded (m) | within 1.7 m gross / graded | "
             "PDMS expert / gross / graded | below the expert gross / graded | severity median |",
             "|---|---|---|---|---|---|---|"]
    for family, row in table.items():
        g, n = row["gross"], row["graded"]
        name = f"**{family}**" if family == "overall" else family
        lines.append(
            f"| {name} | {row['mistake_rate']:.2f} | {_fmt(g['ade_median_m'])} / {_fmt(n['ade_median_m'])} | "
            f"{_fmt(g['within_1_7m'], '{:.0%}')} / {_fmt(n['within_1_7m'], '{:.0%}')} | "
            f"{_fmt(row['expert_pdms_mean'], '{:.3f}')} / {_fmt(g['pdms_mean'], '{:.3f}')} / {_fmt(n['pdms_mean'], '{:.3f}')} | "
            f"{_fmt(g['pdms_below_expert'], '{:.0%}')} / {_fmt(n['pdms_below_expert'], '{:.0%}')} | "
            f"{_fmt(row.get('severity_median'))} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1 per family (default 20)")
    p.add_argument("--rate-seeds", type=int, default=100, help="seeds 0 .. N-1 for the log mistake rate (default 100)")
    p.add_argument("--families", default=None, help="comma-separated families (default: all)")
    p.add_argument("--mistake-rate", type=float, default=HumanLogs.mistake_rate)
    p.add_argument("--severity-a", type=float, default=HumanLogs.severity_a)
    p.add_argument("--severity-b", type=float, default=HumanLogs.severity_b)
    p.add_argument("--log-rates", default=None, help="comma-separated mistake rates: the logs' PDMS at each (e.g. 0,0.15,0.3,0.5)")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)
    families = list(FAMILIES) if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or args.seeds < 1 or args.rate_seeds < 1:
        print(f"unknown families {unknown}; known: {', '.join(FAMILIES)}" if unknown else "--seeds and --rate-seeds must be >= 1", file=sys.stderr)
        return 2
    try:
        logs = HumanLogs(args.mistake_rate, args.severity_a, args.severity_b)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        log_rates = [float(r) for r in args.log_rates.split(",")] if args.log_rates else []
    except ValueError:
        print(f"--log-rates {args.log_rates!r}: expected comma-separated numbers in [0, 1]", file=sys.stderr)
        return 2
    if any(not 0.0 <= r <= 1.0 for r in log_rates):
        print(f"--log-rates {args.log_rates!r}: every rate must lie in [0, 1]", file=sys.stderr)
        return 2
    started = time.perf_counter()
    table = evaluate(families, range(args.seeds), logs, range(args.rate_seeds))
    print(render(table))
    quality = log_quality(families, range(args.rate_seeds), logs, log_rates) if log_rates else None
    if quality:
        print(render_log_quality(quality))
    if args.out:
        payload = {"benchmark": "human_logs", "seeds": args.seeds, "rate_seeds": args.rate_seeds, "human_logs": logs.to_json(),
                   "within_m": WITHIN_M, "pdms_version": "v1", "seconds": round(time.perf_counter() - started, 1),
                   "families": table, **({"log_quality": quality} if quality else {})}
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
