"""The paper's claims measured on the synthetic world, reusing a finished `python -m rl.demo` run.

    python -m rl.ablations --study headline|sample_types|imitation|train_target|bridge --run runs/demo
                           [--config ...] [--seeds 0,1,2] [key=value ...]

Every study starts from the demo run's data, codebook and SFT policies and writes <run>/ablations/<study>.md
(a table) and .json; the test split's positive scenes are scored with NAVSIM v1 (PDMS) and v2 (EPDMS).
Pass the demo's own overrides (e.g. its `seed=`) so that the studies' runs are the demo's recipe.
- headline:     GRPO (the config's recipe) with several seeds against the SFT policy (relative PDMS gain), the
                shaping terms at the start of GRPO, at-fault collisions per negative-prone family, SFT on the
                perfect expert's plans when the imitation study has run, per family the share of SFT's gap to
                the logged human drive that GRPO closes (`family_gaps`), and the scene-blind baseline: SFT's
                and each GRPO seed's plans driven slower, at the speed scale chosen on the validation split,
                and SFT's at the scale chosen on 600 training scenes (`slowed_evaluation`; a gain that survives
                it is more than driving slower);
- sample_types: GRPO on positives only, positives + negatives, positives + negatives + recoveries, each with
                every seed; the ordering SFT < pos < pos+neg < pos+neg+rec against the pooled seed std, and
                each mix's PDMS and at-fault collisions in the negative-prone families (`negative_prone_by_mix`);
- imitation:    SFT on the logged human drives (the demo's, `sft.target: log`) against SFT on the expert's
                plans (the perfect-expert logs, the ceiling of imitation) on the same scenes, per family, with
                the share of training logs that are mistakes;
- train_target: GRPO on the flow expert (ours), on the VLM's tokens (the paper's; trajectories from the
                action tokens), and joint; the two VLM targets without the expert's pace (`rollout.pace_std` 0);
- bridge:       SFT stage 2 of the expert with history initialisation on / off, KV interval 1, 2, 4, last, and
                several poses per expert token (`BRIDGE_VARIANTS`).
A finished GRPO run is reused wherever it lies in the demo folder (the demo's own, another study's) when its
config is the variant's.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from rl.config import TrainConfig
from rl.config_io import ConfigError, load_config
from rl.demo import PipelinePaths, _done, _with
from rl.tracking import setup_console_logging, strict_json
from sim.conventions import VERSIONS

if TYPE_CHECKING:
    from rl.evaluate import PreparedScenes

logger = logging.getLogger(__name__)
STUDIES = ("headline", "sample_types", "imitation", "train_target", "bridge")
# The sample-type mixes (shares of the GRPO groups; the last is the config's default, the paper's best recipe).
SAMPLE_TYPE_MIXES: dict[str, dict[str, float]] = {
    "pos": {"pos": 1.0}, "pos+neg": {"pos": 0.57, "neg": 0.43}, "pos+neg+rec": {"pos": 0.5, "neg": 0.375, "rec": 0.125}}
# Shaping metrics read from a GRPO run (metrics.jsonl), averaged over its first and its last `SHAPING_WINDOW` steps.
SHAPING_KEYS = {"neg inside": "reward/negative_l2/inside_share", "neg term": "reward/negative_l2",
                "rec inside": "reward/recovery_l2/inside_share", "rec term": "reward/recovery_l2"}
# ... and the flow expert's trust region, read the same way: its KL to the SFT expert and the clipped share of steps.
TRUST_REGION_KEYS = {"flow kl": "train/flow_kl", "clip fraction": "train/flow_clip_fraction"}
# ... and the speed the samples drive their plans at (the pace action, `rl.policy.pace`): exp of the mean logged z,
# a fraction of the plan's speed (1 without pace; z above 0 is clipped when driven, so read values near 1 as 1).
PACE_KEYS = {"sample speed": "rollout/pace_log_speed"}
SHAPING_WINDOW = 5
# The bridge study's variants: name -> (folder under <run>/ablations/bridge, changes to the config's expert).
# The default (no changes) is the demo's own SFT expert. The last three vary the suffix layout: several poses
# per expert token at NAVSIM's 8 poses, and a dense 4 s plan (40 poses at 0.1 s, scored at 0.1 s) with one
# token per pose against 5 poses (0.5 s) per token.
BRIDGE_VARIANTS: dict[str, tuple[str, dict]] = {
    "history init, interval 2": ("history_init", {}),
    "noise init, interval 2": ("noise_init", {"policy.expert.init": "noise"}),
    "interval 1 (every layer)": ("interval_1_every_layer",
                                 {"policy.expert.kv_layer_interval": 1, "policy.expert.kv_layer_offset": 0}),
    "interval 4": ("interval_4", {"policy.expert.kv_layer_interval": 4, "policy.expert.kv_layer_offset": 3}),
    "last layer only": ("last_layer_only", {"policy.expert.kv_layers": [-1]}),
    "8 poses, 2 per token (4 tokens)": ("waypoints_per_token_2", {"policy.expert.waypoints_per_token": 2}),
    "40 poses at 0.1 s, 1 per token (40 tokens)": (
        "dense_40_poses_1_per_token", {"policy.expert.horizon": 40, "policy.expert.interval_s": 0.1}),
    "40 poses at 0.1 s, 5 per token (8 tokens)": (
        "dense_40_poses_5_per_token",
        {"policy.expert.horizon": 40, "policy.expert.interval_s": 0.1, "policy.expert.waypoints_per_token": 5}),
}


def _finished_evaluation(out: Path) -> Optional[dict]:
    """The evaluation summaries written into `out` (one per NAVSIM version), or None when one is missing."""
    done = [out / v / "summary.json" for v in VERSIONS]
    return {v: json.loads(f.read_text()) for v, f in zip(VERSIONS, done)} if all(f.is_file() for f in done) else None


@functools.cache
def _prepared_test_scenes(test_split: Path) -> "PreparedScenes":
    """One preparation of the test split's scenes for every evaluation of a study (they all score them)."""
    from rl.evaluate import PreparedScenes

    return PreparedScenes(test_split)


def _evaluate(paths: PipelinePaths, policy_dir: Path, out: Path, action_source: str, speed_scale: float = 1.0) -> dict:
    """The test evaluation of a policy in `out`, reused only while it is of this policy's files and this spec."""
    from rl.evaluate import cached_evaluation

    test = paths.split("test")
    spec = {"checkpoint": str(policy_dir.resolve()), "action_source": action_source, "speed_scale": speed_scale}
    return cached_evaluation(test, out, VERSIONS, spec, prepared=_prepared_test_scenes(test))


# The scene-blind baseline chosen on the training split reads this many of its positive scenes (a seeded draw):
# enough to tell 0.1 speed steps apart, where the validation split's ~70 positives can pick a neighbour.
TRAIN_CHOICE_SCENES = 600


def slowed_evaluation(paths: PipelinePaths, policy_dir: Path, out: Path, split: str = "val") -> tuple[dict, dict]:
    """The scene-blind slow-down baseline of a policy: the speed scale of `rl.evaluate.SPEED_SCALES` whose slowed
    plans score best on the positive scenes of `split` ("val", or "train": `TRAIN_CHOICE_SCENES` of them), and the
    test evaluation at that scale.
    -> (test results {version: summary}, {"speed scale": chosen, "val PDMS": {scale: mean}}); both kept in `out`."""
    from rl.evaluate import chosen_speed_scale

    max_scenes = TRAIN_CHOICE_SCENES if split == "train" else None
    chosen = chosen_speed_scale(str(policy_dir), paths.split(split), out / "speed_scale.json", action_source="expert",
                                max_scenes=max_scenes)
    return _evaluate(paths, policy_dir, out / "eval", "expert", chosen["speed scale"]), chosen


def _same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Would these configs train the same GRPO run (whatever their output folders and logging)?"""
    from rl.config_io import config_to_dict

    strip = lambda c: {k: v for k, v in config_to_dict(c).items() if k not in ("logging", "checkpoint", "eval")}  # noqa: E731
    return strip(a) == strip(b)


def _grpo_variant(cfg: TrainConfig, paths: PipelinePaths, out: Path, **changes) -> Path:
    """The GRPO run folder (its `ckpt/` and `metrics.jsonl`) of GRPO from the demo's SFT policy with `changes`:
    a finished run with the same config anywhere in the demo folder (the demo's own first) is reused, else it
    is trained into `out/grpo`."""
    from rl.checkpoint import CheckpointDir
    from rl.driver import GRPODriver

    variant = _with(cfg, **{"policy_init": str(paths.sft_expert / "policy"), "data.train": str(paths.split("train")),
                            "data.val": str(paths.split("val")), "policy.codebook.path": str(paths.codebook),
                            "logging.out_dir": str(out / "grpo"), "logging.picture_every": 0, **changes})
    for ckpt_dir in [paths.grpo / "ckpt", *sorted((paths.root / "ablations").glob("**/grpo/ckpt"))]:
        finished = CheckpointDir(ckpt_dir)
        if finished.latest_step() == variant.grpo.steps:
            if _same_run(load_config(TrainConfig, finished.latest() / "config.yaml"), variant):
                logger.info("reusing the finished GRPO run %s", ckpt_dir.parent)
                return ckpt_dir.parent
    if CheckpointDir(out / "grpo" / "ckpt").latest_step() >= variant.grpo.steps:
        # finished, yet not the same config (the loop above would have reused it): never report another run's result
        raise ConfigError(f"{out / 'grpo'} holds a finished GRPO run of another config than this study's variant "
                          f"(changed keys or overrides); study the new config in another --run folder, or remove it")
    GRPODriver(variant).run()
    return out / "grpo"


def _final_policy(grpo_dir: Path) -> Path:
    from rl.checkpoint import CheckpointDir

    return CheckpointDir(grpo_dir / "ckpt").latest() / "policy"


def shaping_metrics(metrics_file: Path, window: int = SHAPING_WINDOW) -> dict[str, float]:
    """The shaping terms, the trust region and the pace of a GRPO run: each of `SHAPING_KEYS`, `TRUST_REGION_KEYS`
    and `PACE_KEYS` averaged over the first `window` steps that log it ("... start") and the last `window`
    ("... end"), the pace as exp(mean z); NaN when no step logs it (e.g. no negative groups, no pace)."""
    steps = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] if metrics_file.is_file() else []
    out = {}
    for name, key in {**SHAPING_KEYS, **TRUST_REGION_KEYS, **PACE_KEYS}.items():
        values = [float(m[key]) for m in steps if key in m and np.isfinite(m[key])]
        for end, window_values in (("start", values[:window]), ("end", values[-window:])):
            mean = float(np.mean(window_values)) if values else float("nan")
            out[f"{name} {end}"] = float(np.exp(mean)) if name in PACE_KEYS else mean
    return out


def logged_mistake_rates(train_split: Path) -> dict[str, dict]:
    """Per family of a split's positive scenes: how many, and the share whose logged drive (`human_trajectory`)
    is not the expert's plan (differs by more than 1 cm at some pose; 0 without human logs, whose logs are the
    plans). Scenes without a log are skipped."""
    from rl.evaluate import iter_scenes

    counts: dict[str, list[int]] = {}
    for scene in iter_scenes(train_split, ["pos"])[1]:
        if scene.human_trajectory is None:
            continue
        plan = np.asarray(scene.future)[: len(scene.human_trajectory), :2]
        mistake = bool(np.abs(np.asarray(scene.human_trajectory)[:, :2] - plan).max() > 0.01)
        counts.setdefault(scene.family, [0, 0])
        counts[scene.family][0] += 1
        counts[scene.family][1] += mistake
    return {f: {"positive scenes": n, "logged mistake rate": m / n} for f, (n, m) in sorted(counts.items())}


def _mean_row(name: str, runs: list[dict], sft_score: float) -> dict:
    """Mean of `runs` (rows of one variant's seeds) with the sample std of PDMS (ddof 1; NaN for one seed, null
    in the JSON)."""
    keys = [k for k in runs[0] if isinstance(runs[0][k], float) and k != "vs SFT"]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    std = float(np.std([r["PDMS"] for r in runs], ddof=1)) if len(runs) > 1 else float("nan")
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    return {"variant": f"{name} mean +- std ({seeds})", **mean, "PDMS std": std, "vs SFT": mean["PDMS"] / sft_score}


def ordering(means: list[tuple[str, float, float]]) -> tuple[float, list[dict]]:
    """(pooled seed std, steps) for (name, mean PDMS, PDMS sample std over seeds) in the expected order. The pooled
    std is the root mean of the variances of the entries with a seed spread (same seed count each; a single
    policy such as SFT has none, its std NaN). A step holds when the later mean exceeds the earlier by more than
    the pooled std."""
    variances = [std * std for _, _, std in means if np.isfinite(std)]
    pooled = float(np.sqrt(np.mean(variances))) if variances else float("nan")
    steps = [{"step": f"{a} < {b}", "difference": mean_b - mean_a, "pooled std": pooled,
              "holds": bool(mean_b - mean_a > pooled)}
             for (a, mean_a, _), (b, mean_b, _) in zip(means, means[1:])]
    return pooled, steps


def _row(name: str, results: dict, sft_score: Optional[float] = None) -> dict:
    from rl.report import target_collision_rate

    v1, v2 = results["v1"]["average"], results["v2"]["average"]
    row = {"variant": name, "PDMS": v1["score"], "EPDMS": v2["score"], "NC": v1["no_at_fault_collisions"],
           "TTC": v1["time_to_collision_within_bound"], "EP": v1["ego_progress"],
           "collisions": v1["at_fault_collision_rate"],
           "collisions cut-in/lead/red": target_collision_rate(results["v1"]), "scenes": v1["num_scenes"]}
    if sft_score:
        row["vs SFT"] = v1["score"] / sft_score
    return row


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _by_family(results: dict, families) -> dict[str, dict]:
    """PDMS, at-fault collision rate and scene count of each of `families` in one evaluation (v1)."""
    by = results["v1"]["by_family"]
    return {f: {"PDMS": by[f]["score"], "collisions": by[f]["at_fault_collision_rate"], "scenes": by[f]["num_scenes"]}
            for f in families if f in by}


# A family's gap to the human log counts only when the log drives it better than SFT by more than this (PDMS):
# below it the share closed is a ratio of noise (and where SFT beats the log there is no gap to close).
MIN_GAP = 0.02


def family_gaps(sft: dict, grpo: list[dict], human_log: dict, perfect: Optional[dict] = None,
                min_gap: float = MIN_GAP) -> dict[str, dict]:
    """Per family (and "all"): how much of SFT's gap to the logged human drive GRPO closes.

    Each argument is an evaluation's v1 summary (`{"average": ..., "by_family": ...}`); `grpo` one per seed
    (their PDMS averaged). "gap closed" = (GRPO - SFT) / (log - SFT): 1 = GRPO drives the family as well as
    the human log, 0 = no better than SFT, < 0 worse; None where the log leads SFT by no more than `min_gap`.
    `perfect` (SFT on the expert's plans, the ceiling of imitation) adds its PDMS beside them.
    """
    def score(summary: dict, family: str) -> float:
        return summary["average"]["score"] if family == "all" else summary["by_family"][family]["score"]

    families = [f for f in sorted(sft["by_family"]) if f in human_log["by_family"]
                and all(f in g["by_family"] for g in grpo)] + ["all"]
    out = {}
    for f in families:
        before, log = score(sft, f), score(human_log, f)
        after = float(np.mean([score(g, f) for g in grpo]))
        row = {"scenes": (sft["average"] if f == "all" else sft["by_family"][f])["num_scenes"],
               "log PDMS": log, "SFT PDMS": before, "GRPO PDMS": after}
        if perfect is not None and (f == "all" or f in perfect["by_family"]):
            row["SFT on expert's plans PDMS"] = score(perfect, f)
        row["gap closed"] = (after - before) / (log - before) if log - before > min_gap else None
        out[f] = row
    return out


def negative_prone_by_mix(sft: dict, evals_by_mix: dict[str, list[dict]]) -> dict[str, dict]:
    """Where negatives are meant to act: per negative-prone family present in SFT's evaluation, and for all of them
    together ("negative-prone"), SFT's PDMS and at-fault collision rate, and for each mix the mean over its seeds of
    both, the sample std of the PDMS (ddof 1; NaN for one seed) and how many seeds leave an at-fault collision there.

    Each evaluation is a v1 summary (`{"by_family": ..., "negative_prone_families": ...}`); `evals_by_mix` maps a
    mix's name to its seeds' summaries."""
    from rl.evaluate import NEGATIVE_PRONE_FAMILIES

    def subset(summary: dict, family: str) -> tuple[float, float]:
        s = summary["negative_prone_families"] if family == "negative-prone" else summary["by_family"][family]
        return s["score"], s["at_fault_collision_rate"]

    families = [f for f in NEGATIVE_PRONE_FAMILIES if f in sft["by_family"]] + ["negative-prone"]
    table = {}
    for family in families:
        pdms, collisions = subset(sft, family)
        row = {"SFT PDMS": pdms, "SFT collisions": collisions}
        for name, evals in evals_by_mix.items():
            scores, rates = np.array([subset(e, family) for e in evals]).T
            row[f"{name} PDMS"] = float(scores.mean())
            row[f"{name} PDMS std"] = float(scores.std(ddof=1)) if len(scores) > 1 else float("nan")
            row[f"{name} collisions"] = float(rates.mean())
            row[f"{name} seeds colliding"] = int((rates > 0).sum())
        table[family] = row
    return table


def _sft_on_expert_plans(cfg: TrainConfig, paths: PipelinePaths, out: Path) -> Path:
    """Both SFT stages again on the same scenes with the expert's plans as targets (`sft.target: expert`, the
    perfect-expert logs); the flow expert's policy directory."""
    from rl.sft import run_sft

    common = {"data.train": str(paths.split("train")), "policy.codebook.path": str(paths.codebook), "sft.target": "expert"}
    if not _done(out / "sft_vlm" / "policy"):
        run_sft(_with(cfg, **common, **{"sft.stage": "vlm", "sft.out_dir": str(out / "sft_vlm"), "sft.init": None,
                                        "sft.steps": cfg.pipeline.vlm_steps}))
    if not _done(out / "sft_expert" / "policy"):
        run_sft(_with(cfg, **common, **{"sft.stage": "expert", "sft.out_dir": str(out / "sft_expert"),
                                        "sft.init": str(out / "sft_vlm" / "policy"), "sft.steps": cfg.pipeline.expert_steps}))
    return out / "sft_expert" / "policy"


def _headline(cfg, paths, out, seeds, sft, rows, extra) -> None:
    from rl.evaluate import NEGATIVE_PRONE_FAMILIES

    sft_score = sft["v1"]["average"]["score"]
    runs, evals, shaping, grpo_dirs = [], [], [], []
    for seed in seeds:
        grpo_dir = _grpo_variant(cfg, paths, out / f"seed_{seed}", seed=seed)
        grpo_dirs.append(grpo_dir)
        evals.append(_evaluate(paths, _final_policy(grpo_dir), out / f"seed_{seed}" / "eval", "expert"))
        shaping.append(shaping_metrics(grpo_dir / "metrics.jsonl"))
        runs.append({**_row(f"GRPO seed {seed}", evals[-1], sft_score), **shaping[-1]})
    rows.extend(runs)
    rows.append(_mean_row("GRPO", runs, sft_score))
    # the scene-blind baseline: each policy's plans driven slower, at the scale that scores best on val
    slowed_sft, chosen = slowed_evaluation(paths, paths.sft_expert / "policy", out / "sft_slowed")
    scales = {"SFT": chosen}
    rows.append(_row(f"SFT at {chosen['speed scale']:g} x speed (chosen on val)", slowed_sft, sft_score))
    slowed_sft_train, on_train = slowed_evaluation(paths, paths.sft_expert / "policy", out / "sft_slowed_train",
                                                   "train")
    scales["SFT (chosen on train)"] = on_train
    rows.append(_row(f"SFT at {on_train['speed scale']:g} x speed (chosen on {TRAIN_CHOICE_SCENES} training scenes)",
                     slowed_sft_train, sft_score))
    slowed_runs = []
    for seed, grpo_dir in zip(seeds, grpo_dirs):
        result, scales[f"GRPO seed {seed}"] = slowed_evaluation(paths, _final_policy(grpo_dir),
                                                                out / f"seed_{seed}" / "slowed")
        slowed_runs.append(_row(f"GRPO seed {seed} slowed", result, sft_score))
    rows.append(_mean_row("GRPO at each seed's speed (chosen on val)", slowed_runs, sft_score))
    extra["speed_scales"] = {name: {"speed scale": c["speed scale"], **{f"val PDMS x{s}": v for s, v in c["val PDMS"].items()}}
                             for name, c in scales.items()}
    perfect = _finished_evaluation(paths.root / "ablations" / "imitation" / "eval")  # when the imitation study has run
    if perfect is not None:
        rows.append(_row("SFT on the expert's plans (perfect-expert logs)", perfect, sft_score))
    families = {}
    for f, before in _by_family(sft, NEGATIVE_PRONE_FAMILIES).items():
        after = [_by_family(e, [f])[f] for e in evals]
        mean_after = float(np.mean([a["collisions"] for a in after]))
        families[f] = {"scenes": before["scenes"], "SFT PDMS": before["PDMS"],
                       "GRPO PDMS": float(np.mean([a["PDMS"] for a in after])), "SFT collisions": before["collisions"],
                       "GRPO collisions": mean_after, "no worse": bool(mean_after <= before["collisions"] + 1e-9)}
    extra["negative_prone_families"] = families
    human_log = _finished_evaluation(paths.eval / "human_log")  # the demo's baseline: what SFT imitates
    if human_log is not None:
        extra["families"] = family_gaps(sft["v1"], [e["v1"] for e in evals], human_log["v1"],
                                        perfect["v1"] if perfect is not None else None)


def _sample_types(cfg, paths, out, seeds, sft, rows, extra) -> None:
    sft_score = sft["v1"]["average"]["score"]
    means = [("SFT", sft_score, float("nan"))]
    evals_by_mix = {}
    for name, mix in SAMPLE_TYPE_MIXES.items():
        runs, evals_by_mix[name] = [], []
        for seed in seeds:
            folder = out / name.replace("+", "_") / f"seed_{seed}"
            grpo_dir = _grpo_variant(cfg, paths, folder, seed=seed, **{"grpo.schedule.mix": mix})
            result = _evaluate(paths, _final_policy(grpo_dir), folder / "eval", "expert")
            evals_by_mix[name].append(result["v1"])
            runs.append({**_row(f"GRPO {name} seed {seed}", result, sft_score), **shaping_metrics(grpo_dir / "metrics.jsonl")})
        rows.extend(runs)
        rows.append(_mean_row(f"GRPO {name}", runs, sft_score))
        means.append((name, rows[-1]["PDMS"], rows[-1]["PDMS std"]))
    extra["pooled_std"], extra["ordering"] = ordering(means)
    extra["negative_prone_families"] = negative_prone_by_mix(sft["v1"], evals_by_mix)


def _imitation(cfg, paths, out, sft, rows, extra) -> None:
    if cfg.sft.target != "log":
        raise ConfigError(f"the imitation study compares SFT on logs with SFT on the expert's plans: the demo's "
                          f"sft.target is {cfg.sft.target!r} (run it with sft.target=log and pipeline.human_logs=true)")
    sft_score = sft["v1"]["average"]["score"]
    perfect = _evaluate(paths, _sft_on_expert_plans(cfg, paths, out), out / "eval", "expert")
    rows.append(_row("SFT on the expert's plans (perfect-expert logs)", perfect, sft_score))
    logged = logged_mistake_rates(paths.split("train"))
    human_by, perfect_by = sft["v1"]["by_family"], perfect["v1"]["by_family"]
    extra["families"] = {
        f: {**logged.get(f, {}), "test scenes": human_by[f]["num_scenes"], "PDMS logs": human_by[f]["score"],
            "PDMS expert": perfect_by[f]["score"], "collisions logs": human_by[f]["at_fault_collision_rate"],
            "collisions expert": perfect_by[f]["at_fault_collision_rate"]}
        for f in sorted(human_by) if f in perfect_by}


def run_study(study: str, cfg: TrainConfig, run_dir: Path, seeds: list[int]) -> str:
    """Run (or reuse) one study's variants on a finished demo run; writes <run>/ablations/<study>.md and .json
    ({"study", "sft_target", "seeds", "rows", and the study's own tables}) and returns the markdown."""
    paths = PipelinePaths(run_dir)
    if not _done(paths.sft_expert / "policy"):
        raise FileNotFoundError(f"{run_dir}: no finished SFT policy (run `python -m rl.demo --out {run_dir}` first)")
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {STUDIES}")
    out = run_dir / "ablations" / study
    sft = _evaluate(paths, paths.sft_expert / "policy", run_dir / "ablations" / "sft_expert", "expert")
    sft_score = sft["v1"]["average"]["score"]
    rows = [_row(f"SFT (sft.target {cfg.sft.target})", sft)]
    extra: dict = {}
    if study == "headline":
        _headline(cfg, paths, out, seeds, sft, rows, extra)
    elif study == "sample_types":
        _sample_types(cfg, paths, out, seeds, sft, rows, extra)
    elif study == "imitation":
        _imitation(cfg, paths, out, sft, rows, extra)
    elif study == "train_target":
        sft_tokens = _evaluate(paths, paths.sft_expert / "policy", run_dir / "ablations" / "sft_tokens", "tokens")
        rows.append(_row("SFT (tokens)", sft_tokens))
        for target, source in (("expert", "expert"), ("vlm", "tokens"), ("joint", "expert")):
            # the pace is the flow expert's: the VLM targets train without one
            pace = {} if target == "expert" else {"rollout.pace_std": 0.0}
            grpo_dir = _grpo_variant(cfg, paths, out / target,
                                     **{"grpo.train_target": target, "rollout.action_source": source, **pace})
            result = _evaluate(paths, _final_policy(grpo_dir), out / target / "eval", source)
            base = sft_tokens if source == "tokens" else sft
            rows.append(_row(f"GRPO {target} (trajectories from {source})", result, base["v1"]["average"]["score"]))
    elif study == "bridge":
        from rl.sft import run_sft

        for name, (folder_name, changes) in BRIDGE_VARIANTS.items():
            folder = out / folder_name
            if not changes:
                policy_dir = paths.sft_expert / "policy"
            else:
                policy_dir = folder / "policy"
                if not _done(policy_dir):
                    run_sft(_with(cfg, **{"data.train": str(paths.split("train")), "policy.codebook.path": str(paths.codebook),
                                          "sft.stage": "expert", "sft.init": str(paths.sft_vlm / "policy"),
                                          "sft.out_dir": str(folder), "sft.steps": cfg.pipeline.expert_steps,
                                          **changes}))
            rows.append(_row(name, _evaluate(paths, policy_dir, folder / "eval", "expert"), sft_score))
    out.mkdir(parents=True, exist_ok=True)
    text = _table(rows)
    for key, table in extra.items():
        if isinstance(table, dict):
            first = "policy" if key == "speed_scales" else "family"
            text += f"\n\n## {key}\n\n" + _table([{first: name, **values} for name, values in table.items()])
        elif isinstance(table, list):
            text += f"\n\n## {key}\n\n" + _table(table)
        else:
            text += f"\n\n{key}: {table:.4f}"
    payload = {"study": study, "sft_target": cfg.sft.target, "seeds": seeds, "rows": rows, **extra}
    (run_dir / "ablations" / f"{study}.md").write_text(f"# {study}\n\n{text}\n")
    (run_dir / "ablations" / f"{study}.json").write_text(strict_json(payload))
    return text


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=STUDIES, required=True)
    parser.add_argument("--run", default="runs/demo", help="a finished `python -m rl.demo` output folder")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    setup_console_logging()
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        table = run_study(args.study, cfg, Path(args.run), [int(s) for s in args.seeds.split(",")])
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
