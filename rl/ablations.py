"""The paper's claims measured on the synthetic world, reusing a finished `python -m rl.demo` run.

    python -m rl.ablations --study headline|sample_types|train_target|bridge --run runs/demo [--config ...]
                           [--seeds 0,1,2] [key=value ...]

Every study starts from the demo run's data, codebook and SFT policies and writes <run>/ablations/<study>.md
(a table) and .json; the test split's positive scenes are scored with NAVSIM v1 (PDMS) and v2 (EPDMS).
- headline:     GRPO (the config's recipe) with several seeds against the SFT policy (relative PDMS gain);
- sample_types: GRPO on positives only, positives + negatives, positives + negatives + recoveries;
- train_target: GRPO on the flow expert (ours), on the VLM's tokens (the paper's; trajectories from the
                action tokens), and joint;
- bridge:       SFT stage 2 of the expert with history initialisation on / off, KV interval 1, 2, 4, last, and
                several poses per expert token (`BRIDGE_VARIANTS`).
A finished variant is reused when the study runs again.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from rl.config import TrainConfig
from rl.config_io import ConfigError, load_config
from rl.demo import PipelinePaths, _done, _with
from rl.tracking import setup_console_logging
from sim.conventions import VERSIONS

logger = logging.getLogger(__name__)
STUDIES = ("headline", "sample_types", "train_target", "bridge")
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


def _evaluate(paths: PipelinePaths, policy_dir: Path, out: Path, action_source: str) -> dict:
    from rl.evaluate import run_evaluation

    done = [out / v / "summary.json" for v in VERSIONS]
    if all(f.is_file() for f in done):
        return {v: json.loads(f.read_text()) for v, f in zip(VERSIONS, done)}
    return run_evaluation(str(paths.split("test")), str(out), VERSIONS, checkpoint=str(policy_dir),
                          action_source=action_source, sample_types=["pos"])


def _same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Would these configs train the same GRPO run (whatever their output folders and logging)?"""
    from rl.config_io import config_to_dict

    strip = lambda c: {k: v for k, v in config_to_dict(c).items() if k not in ("logging", "checkpoint", "eval")}  # noqa: E731
    return strip(a) == strip(b)


def _grpo_variant(cfg: TrainConfig, paths: PipelinePaths, out: Path, **changes) -> Path:
    """The final policy of GRPO from the demo's SFT policy with `changes`; the demo's own GRPO run is reused
    when the variant is that run."""
    from rl.checkpoint import CheckpointDir
    from rl.driver import GRPODriver

    variant = _with(cfg, **{"policy_init": str(paths.sft_expert / "policy"), "data.train": str(paths.split("train")),
                            "data.val": str(paths.split("val")), "policy.codebook.path": str(paths.codebook),
                            "logging.out_dir": str(out / "grpo"), "logging.picture_every": 0, **changes})
    demo = CheckpointDir(paths.grpo / "ckpt")
    if demo.latest_step() == variant.grpo.steps:
        done = demo.latest()
        if _same_run(load_config(TrainConfig, done / "config.yaml"), variant):
            logger.info("reusing the demo's GRPO run %s", done)
            return done / "policy"
    own = CheckpointDir(out / "grpo" / "ckpt")
    if own.latest_step() < variant.grpo.steps:
        GRPODriver(variant).run()
    return own.latest() / "policy"


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
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_study(study: str, cfg: TrainConfig, run_dir: Path, seeds: list[int]) -> str:
    paths = PipelinePaths(run_dir)
    if not _done(paths.sft_expert / "policy"):
        raise FileNotFoundError(f"{run_dir}: no finished SFT policy (run `python -m rl.demo --out {run_dir}` first)")
    out = run_dir / "ablations" / study
    sft = _evaluate(paths, paths.sft_expert / "policy", run_dir / "ablations" / "sft_expert", "expert")
    sft_score = sft["v1"]["average"]["score"]
    rows = [_row("SFT (expert)", sft)]
    if study == "headline":
        for seed in seeds:
            policy = _grpo_variant(cfg, paths, out / f"seed_{seed}", seed=seed)
            rows.append(_row(f"GRPO seed {seed}", _evaluate(paths, policy, out / f"seed_{seed}" / "eval", "expert"),
                             sft_score))
        runs = rows[1:]
        mean = {k: float(np.mean([r[k] for r in runs])) for k in ("PDMS", "EPDMS", "collisions cut-in/lead/red")}
        rows.append({"variant": f"GRPO mean +- std ({len(seeds)} seeds)", **mean,
                     "PDMS std": float(np.std([r["PDMS"] for r in runs], ddof=1)) if len(runs) > 1 else float("nan"), "vs SFT": mean["PDMS"] / sft_score})
    elif study == "sample_types":
        for name, mix in (("pos", {"pos": 1.0}), ("pos+neg", {"pos": 0.57, "neg": 0.43}),
                          ("pos+neg+rec", {"pos": 0.5, "neg": 0.375, "rec": 0.125})):
            policy = _grpo_variant(cfg, paths, out / name.replace("+", "_"), **{"grpo.schedule.mix": mix})
            rows.append(_row(f"GRPO {name}", _evaluate(paths, policy, out / name.replace("+", "_") / "eval", "expert"), sft_score))
    elif study == "train_target":
        sft_tokens = _evaluate(paths, paths.sft_expert / "policy", run_dir / "ablations" / "sft_tokens", "tokens")
        rows.append(_row("SFT (tokens)", sft_tokens))
        for target, source in (("expert", "expert"), ("vlm", "tokens"), ("joint", "expert")):
            policy = _grpo_variant(cfg, paths, out / target, **{"grpo.train_target": target, "rollout.action_source": source})
            result = _evaluate(paths, policy, out / target / "eval", source)
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
    else:
        raise ValueError(f"unknown study {study!r}; expected one of {STUDIES}")
    out.mkdir(parents=True, exist_ok=True)
    table = _table(rows)
    (run_dir / "ablations" / f"{study}.md").write_text(f"# {study}\n\n{table}\n")
    (run_dir / "ablations" / f"{study}.json").write_text(json.dumps(rows, indent=1))
    return table


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
