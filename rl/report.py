"""The report of an end-to-end run: result tables, training curves and before/after pictures."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rl.checkpoint import CheckpointDir
from rl.evaluate import V1_COLUMNS, V2_COLUMNS
from rl.tracking import read_metrics, strict_json


def _cell(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def planner_table(results: dict, version: str) -> str:
    """Markdown: one row per planner with the score and every sub-score (test split, positive scenes)."""
    columns = V1_COLUMNS if version == "v1" else V2_COLUMNS
    keys = [k for k in columns if k != "DDC_weight0"]
    lines = ["| planner | scenes | " + " | ".join(keys) + " | at-fault collisions |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for name, by_version in results.items():
        avg = by_version[version]["average"]
        cells = [_cell(avg[columns[k]]) for k in keys]
        lines.append(f"| {name} | {avg['num_scenes']} | " + " | ".join(cells) +
                     f" | {100 * avg['at_fault_collision_rate']:.1f}% |")
    return "\n".join(lines)


def family_table(results: dict, before: str, after: str, version: str = "v1") -> str:
    """Markdown: score and at-fault collision rate per family, before and after post-training."""
    score = "score"
    b, a = results[before][version], results[after][version]
    lines = [f"| family | scenes | {before} | {after} | change | collisions {before} | collisions {after} |",
             "|---|---|---|---|---|---|---|"]
    rows = [(f, b["by_family"][f], a["by_family"].get(f)) for f in b["by_family"]]
    rows.append(("**negative-prone families**", b["negative_prone_families"], a["negative_prone_families"]))
    rows.append(("**all**", b["average"], a["average"]))
    for family, mb, ma in rows:
        if ma is None:
            continue
        change = (ma[score] - mb[score]) / mb[score] * 100 if mb[score] else float("nan")
        lines.append(f"| {family} | {mb['num_scenes']} | {mb[score]:.3f} | {ma[score]:.3f} | {change:+.1f}% | "
                     f"{100 * mb['at_fault_collision_rate']:.1f}% | {100 * ma['at_fault_collision_rate']:.1f}% |")
    return "\n".join(lines)


COLLISION_TARGET_FAMILIES = ("cut_in", "lead_braking", "red_light")


def target_collision_rate(summary: dict) -> float:
    """At-fault collision rate over the scenes of the cut-in, lead-braking and red-light families of one
    evaluation summary (NaN when it has none of them)."""
    parts = [summary["by_family"][f] for f in COLLISION_TARGET_FAMILIES if f in summary["by_family"]]
    n = sum(p["num_scenes"] for p in parts)
    return sum(p["at_fault_collision_rate"] * p["num_scenes"] for p in parts) / n if n else float("nan")


def headline(results: dict, before: str, after: str, slowed: Optional[str] = None) -> dict:
    """The two targets: relative PDMS gain, and the change of at-fault collisions in cut-in, lead-braking and
    red-light scenes; with `slowed` (the name of the SFT plans driven at a val-chosen speed), that baseline's
    PDMS and the post-trained policy's ratio to it (above 1: more than driving slower)."""
    b, a = results[before]["v1"], results[after]["v1"]
    gain = a["average"]["score"] / b["average"]["score"] if b["average"]["score"] else float("nan")
    cb, ca = target_collision_rate(b), target_collision_rate(a)
    out = {"pdms_before": b["average"]["score"], "pdms_after": a["average"]["score"], "pdms_ratio": gain,
           "epdms_before": results[before]["v2"]["average"]["score"],
           "epdms_after": results[after]["v2"]["average"]["score"],
           "collision_rate_before": cb, "collision_rate_after": ca,
           "collision_reduction": 1.0 - ca / cb if cb else float("nan")}
    if slowed is not None and slowed in results:
        s = results[slowed]["v1"]["average"]["score"]
        out.update({"pdms_slowed_before": s, "pdms_ratio_to_slowed": a["average"]["score"] / s if s else float("nan")})
    return out


def plot_curves(out: Path, series: dict[str, tuple[Path, list[str]]]) -> list[Path]:
    """One PNG per run: the named metrics of its metrics.jsonl against the step."""
    written = []
    for title, (metrics_file, keys) in series.items():
        if not metrics_file.is_file():
            continue
        records = read_metrics(metrics_file)
        fig = Figure(figsize=(4.0 * len(keys), 3.0))
        for i, key in enumerate(keys):
            ax = fig.add_subplot(1, len(keys), i + 1)
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                steps, values = (np.asarray(v, dtype=float) for v in zip(*points))
                ax.plot(steps, values, marker="." if len(points) < 40 else None, alpha=0.5 if len(points) >= 10 else 1.0)
                if len(points) >= 10:  # noisy per-step metrics: a moving average shows the trend
                    window = max(3, len(points) // 8)
                    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                    ax.plot(steps[window - 1:], smooth, color="black", linewidth=1.5, label=f"mean of {window}")
                    ax.legend(fontsize=7)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = out / f"curve_{title}.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


def pick_scenes(eval_dir: Path, before: str, after: str, count: int) -> list[str]:
    """Tokens of test scenes worth picturing: those whose PDMS post-training changed most, the largest gains
    first, then the largest losses (half each when both exist)."""
    def scores(name: str) -> pd.Series:
        frame = pd.read_csv(eval_dir / name / "v1" / "results.csv")
        frame = frame[(frame["token"] != "average") & frame["valid"].astype(bool)]
        return frame.set_index("token")["score"]

    change = (scores(after) - scores(before)).dropna()
    gains = change[change > 0].sort_values(ascending=False)
    losses = change[change < 0].sort_values()
    n_gains = min(len(gains), max(count - min(len(losses), count // 2), 0))
    picked = list(gains.index[:n_gains]) + list(losses.index[: count - n_gains])
    return picked or list(change.index[:count])


def before_after_pictures(paths, before_policy: str, after_policy: str, tokens: list[str], source: str) -> list[Path]:
    """BEV pictures of the same scenes with the SFT plan, the post-trained plan and the ground truth."""
    from rewards.pdm import PDMScorer
    from rl.policy import SpanVLAPolicy
    from rl.scene_store import SceneStore
    from sim.bev import save_scene_picture

    store = SceneStore(paths.split("test"))
    rows = [store.tokens.index(t) for t in tokens]
    scenes = store.scenes(rows)
    if not scenes:
        return []
    plans = {}
    intervals = {}
    for label, policy_dir in (("SFT", before_policy), ("GRPO", after_policy)):
        policy = SpanVLAPolicy.load(policy_dir).eval()
        result = policy.plan(scenes, action_source=source)
        plans[label] = (result.trajectories, result.reasoning)
        intervals[label] = policy.config.expert.interval_s  # plans are scored at the policy's own pose interval
    scorer = PDMScorer("v1")
    written = []
    for i, scene in enumerate(scenes):
        prepared = scorer.prepare(scene)
        lines = [f"{scene.token}  ({scene.family}, {scene.sample_type})"]
        for label in plans:
            score = scorer.score(prepared, plans[label][0][i][None], interval_s=intervals[label])[0]
            lines.append(f"{label}: PDMS {score['PDMS']:.3f} (NC {score['NC']:.1f} DAC {score['DAC']:.0f} "
                         f"TTC {score['TTC']:.0f} EP {score['EP']:.2f}) - {plans[label][1][i][:160]}")
        path = paths.report / f"before_after_{i}_{scene.family}.png"
        save_scene_picture(path, scene, plans=[plans["SFT"][0][i], plans["GRPO"][0][i]], plan_labels=["SFT", "GRPO"],
                           plan_colors=["tab:orange", "tab:blue"], text="\n".join(lines))
        written.append(path)
    return written


def group_picture(path: Path, step: int, scene, group, totals: np.ndarray, components: list[dict]) -> Path:
    """The picture of one sampled group during training: the scene from above with the group's G trajectories
    coloured by total reward, the best sample's reasoning and its reward breakdown.

    step: the step as logged (1-based); group: an `rl.policy.GroupSample`; totals: (G,) total rewards (NaN for an
    unscorable sample); components: per sample, the reward components of `actors.scorer.GroupScores`."""
    from sim.bev import save_scene_picture

    totals = np.asarray(totals, dtype=float)
    scorable = np.isfinite(totals).any()
    values = np.nan_to_num(totals, nan=np.nanmin(totals) if scorable else 0.0)
    best = int(np.nanargmax(totals)) if scorable else 0
    sample = group.samples[best]
    reasoning = "".join(ch if ch.isprintable() else "?" for ch in sample.reasoning)
    text = (f"step {step}  scene {scene.token} ({scene.sample_type})\n"
            f"rewards: " + " ".join(f"{v:.2f}" for v in totals) + "\n"
            f"best sample ({sample.mode}): {reasoning}\n"
            + "\n".join(f"{k}: {v:.3f}" for k, v in sorted(components[best].items())))
    return save_scene_picture(path, scene, plans=list(group.trajectories), plan_values=list(values), text=text)


def write_report(paths, results: dict, codebook: dict, cfg, before: str, after: str,
                 slowed: Optional[str] = None) -> Path:
    """Write <out>/report: results.md, results.json, curves and pictures. Returns results.md. `slowed`: the
    planner name of the scene-blind baseline (SFT's plans at a val-chosen speed), read beside the headline."""
    out = paths.report
    out.mkdir(parents=True, exist_ok=True)
    summary = headline(results, before, after, slowed)
    curves = plot_curves(out, {
        "sft_vlm": (paths.sft_vlm / "metrics.jsonl", ["sft/loss", "sft/action_accuracy"]),
        "sft_expert": (paths.sft_expert / "metrics.jsonl", ["sft/loss"]),
        "grpo": (paths.grpo / "metrics.jsonl", ["reward/total", "reward/pdms", "eval/PDMS", "train/grad_norm"]),
    })
    source = "tokens" if after.endswith("tokens") else "expert"
    tokens = pick_scenes(paths.eval, before, after, cfg.pipeline.pictures)
    pictures = []
    latest = CheckpointDir(paths.grpo / "ckpt").latest()
    if latest is not None and tokens:
        pictures = before_after_pictures(paths, str(paths.sft_expert / "policy"), str(latest / "policy"), tokens, source)
    text = [
        "# Results of the end-to-end run",
        "",
        f"Test split: {results[before]['v1']['average']['num_scenes']} positive scenes. "
        f"Post-training: GRPO on `{cfg.grpo.train_target}`, {cfg.grpo.steps} steps x {cfg.grpo.groups_per_step} "
        f"scenes x {cfg.grpo.group_size} samples, trajectories from `{cfg.rollout.action_source}`.",
        "",
        f"**PDMS {summary['pdms_before']:.3f} -> {summary['pdms_after']:.3f} (x{summary['pdms_ratio']:.3f}); "
        f"EPDMS {summary['epdms_before']:.3f} -> {summary['epdms_after']:.3f}; at-fault collisions in cut-in, "
        f"lead-braking and red-light scenes {100 * summary['collision_rate_before']:.1f}% -> "
        f"{100 * summary['collision_rate_after']:.1f}%.**",
        "",
        *([f"Against the scene-blind baseline, {slowed} ({results[slowed]['v1']['planner']}, the speed scale "
           f"that scores best on the validation split): PDMS {summary['pdms_slowed_before']:.3f}; post-trained / "
           f"baseline x{summary['pdms_ratio_to_slowed']:.3f} (above 1: the gain is more than driving slower).", ""]
          if "pdms_slowed_before" in summary else []),
        "## NAVSIM v1 (PDMS)", "", planner_table(results, "v1"), "",
        "## NAVSIM v2 (EPDMS, one stage, log-replay traffic, no previous frame: EC not scored)", "",
        planner_table(results, "v2"), "",
        "## Per scenario family (PDMS)", "", family_table(results, before, after), "",
        f"Action codebook: {codebook['num_tokens']} tokens, round trip ADE {codebook['round_trip_ade_m']:.3f} m, "
        f"FDE {codebook['round_trip_fde_m']:.3f} m on the training split's ground truths.",
        "",
        "Curves: " + ", ".join(p.name for p in curves) + ". Pictures: " + ", ".join(p.name for p in pictures) + ".",
    ]
    md = out / "results.md"
    md.write_text("\n".join(text) + "\n")
    (out / "results.json").write_text(strict_json({"headline": summary, "results": results, "codebook": codebook}))
    return md
