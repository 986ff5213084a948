"""The main job end to end on the embedded default: data -> codebook -> SFT (VLM, expert) -> GRPO -> evaluation.

    python -m rl.demo [--config configs/tiny.yaml] [--out runs/demo] [--fresh] [key=value ...]

On a local Ray with the tiny preset: generates the synthetic train / val / test splits, builds the action
codebook, runs SFT stage 1 (VLM) and stage 2 (expert), evaluates the SFT policy, post-trains it with GRPO on
positive, negative and recovery samples, evaluates again, and writes a report folder (<out>/report): the
results table (PDMS and EPDMS with every sub-score, overall, per family and for the negative-prone families),
training curves and pictures of the same scenes before and after post-training. Sizes come from the config's
`pipeline` section. A stage whose output already exists is reused (use --fresh to redo everything).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from rl.config import TrainConfig
from rl.config_io import ConfigError, load_config
from rl.tracking import setup_console_logging
from sim.conventions import VERSIONS

if TYPE_CHECKING:
    from rl.evaluate import PreparedScenes

logger = logging.getLogger(__name__)
# The planner name of SFT's flow-expert plans driven at the speed scale chosen on val (the scene-blind baseline).
SLOWED_SFT = "sft_expert_slowed"


class PipelinePaths:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.codebook = root / "codebook.json"
        self.sft_vlm = root / "sft_vlm"
        self.sft_expert = root / "sft_expert"
        self.grpo = root / "grpo"
        self.eval = root / "eval"
        self.report = root / "report"

    def split(self, name: str) -> Path:
        return self.data / name


def _done(policy_dir: Path) -> bool:
    return (policy_dir / "manifest.json").is_file()


def stage_data(cfg: TrainConfig, paths: PipelinePaths) -> None:
    from sim.cameras import CameraConfig
    from sim.generate import GeneratorOptions, generate_splits
    from sim.generate_resume import find_splits_summary
    from sim.scenarios import FAMILIES

    p = cfg.pipeline
    if find_splits_summary(paths.data) is not None:
        logger.info("data: reusing %s", paths.data)
        return
    options = GeneratorOptions(tuple(p.families or FAMILIES), p.neg_share, p.rec_share,
                               CameraConfig(height=p.image_height, width=p.image_width),
                               human_logs=p.human_log_options())
    splits = {"train": p.train_scenes, "val": p.val_scenes, "test": p.test_scenes}
    # resume: a demo stopped while generating continues its splits (and refuses other options than it had)
    generate_splits(paths.data, splits, cfg.seed, options, workers=p.generate_workers, resume=True)


def stage_codebook(cfg: TrainConfig, paths: PipelinePaths) -> dict:
    from rl.policy.codebook import ActionCodebook, build_codebook, read_future_trajectories, round_trip_error

    futures = read_future_trajectories(paths.split("train"))
    if paths.codebook.is_file():
        codebook = ActionCodebook.load(paths.codebook)
    else:
        codebook = build_codebook(futures, num_tokens=cfg.pipeline.codebook_tokens, delta=cfg.pipeline.codebook_delta)
        codebook.save(paths.codebook)
    errors = round_trip_error(codebook, futures)
    logger.info("codebook: %d tokens; round trip ADE %.3f m, FDE %.3f m", codebook.num_tokens,
                errors["round_trip_ade_m"], errors["round_trip_fde_m"])
    return {"num_tokens": codebook.num_tokens, **errors}


def _with(cfg: TrainConfig, **changes) -> TrainConfig:
    """A copy of cfg with dotted keys changed (e.g. **{"sft.stage": "vlm"})."""
    out = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        obj = out
        *parents, last = dotted.split(".")
        for name in parents:
            obj = getattr(obj, name)
        setattr(obj, last, value)
    return out.validate()


def stage_sft(cfg: TrainConfig, paths: PipelinePaths) -> None:
    from rl.sft import run_sft

    common = {"data.train": str(paths.split("train")), "policy.codebook.path": str(paths.codebook)}
    if not _done(paths.sft_vlm / "policy"):
        run_sft(_with(cfg, **common, **{"sft.stage": "vlm", "sft.out_dir": str(paths.sft_vlm), "sft.init": None,
                                        "sft.steps": cfg.pipeline.vlm_steps}))
    if not _done(paths.sft_expert / "policy"):
        run_sft(_with(cfg, **common, **{"sft.stage": "expert", "sft.out_dir": str(paths.sft_expert),
                                        "sft.init": str(paths.sft_vlm / "policy"), "sft.steps": cfg.pipeline.expert_steps}))


def stage_grpo(cfg: TrainConfig, paths: PipelinePaths) -> Path:
    from rl.checkpoint import CheckpointDir
    from rl.driver import GRPODriver

    ckpt = CheckpointDir(paths.grpo / "ckpt")
    if ckpt.latest_step() < cfg.grpo.steps:
        GRPODriver(_with(cfg, **{
            "policy_init": str(paths.sft_expert / "policy"), "data.train": str(paths.split("train")),
            "data.val": str(paths.split("val")), "policy.codebook.path": str(paths.codebook),
            "logging.out_dir": str(paths.grpo),
        })).run()
    return ckpt.latest() / "policy"


def stage_evaluate(cfg: TrainConfig, paths: PipelinePaths, planners: dict[str, dict],
                   prepared: Optional["PreparedScenes"] = None) -> dict:
    """Evaluate each planner on the test split's positive scenes with v1 and v2; cached per planner, and reused
    only while `planner.json` (its `planner_identity`) matches. `prepared` (of the test split) prepares each
    scene once for every planner and stage."""
    from rl.evaluate import PreparedScenes, cached_evaluation

    prepared = prepared if prepared is not None else PreparedScenes(paths.split("test"))
    return {name: cached_evaluation(paths.split("test"), paths.eval / name, VERSIONS, spec, prepared=prepared)
            for name, spec in planners.items()}


def run_pipeline(cfg: TrainConfig, out: Path, fresh: bool = False) -> dict:
    """Run every stage (reusing finished ones unless `fresh`); returns the evaluation results."""
    from rl.evaluate import SPEED_SCALES, PreparedScenes, chosen_speed_scale
    from rl.report import write_report

    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = PipelinePaths(out)
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        logger.info("=== %s ===", name)
        value = fn(*args)
        timings[name] = time.perf_counter() - start
        return value

    timed("data", stage_data, cfg, paths)
    codebook = timed("codebook", stage_codebook, cfg, paths)
    timed("sft", stage_sft, cfg, paths)
    sft_policy = str(paths.sft_expert / "policy")
    planners = {
        "ground_truth": {"baseline": "ground_truth"},
        "human_log": {"baseline": "human_log"},  # what SFT imitates (sft.target: log): the logs, mistakes included
        "constant_velocity": {"baseline": "constant_velocity"},
        "sft_tokens": {"checkpoint": sft_policy, "action_source": "tokens"},
        "sft_expert": {"checkpoint": sft_policy, "action_source": "expert"},
    }
    # the scene-blind baseline every gain is read against: SFT's plans driven slower, at the speed scale that
    # scores best on the validation split (`rl.evaluate.slowed`)
    chosen = timed("speed_baseline", chosen_speed_scale, sft_policy, paths.split("val"),
                   paths.eval / SLOWED_SFT / "speed_scale.json", SPEED_SCALES, "expert")
    planners[SLOWED_SFT] = {"checkpoint": sft_policy, "action_source": "expert", "speed_scale": chosen["speed scale"]}
    prepared = PreparedScenes(paths.split("test"))  # both evaluation stages score the same scenes
    timed("evaluate_sft", stage_evaluate, cfg, paths, planners, prepared)
    grpo_policy = timed("grpo", stage_grpo, cfg, paths)
    source = "tokens" if cfg.rollout.action_source == "tokens" else "expert"
    planners[f"grpo_{source}"] = {"checkpoint": str(grpo_policy), "action_source": source}
    results = timed("evaluate_grpo", stage_evaluate, cfg, paths, planners, prepared)
    timed("report", write_report, paths, results, codebook, cfg, f"sft_{source}", f"grpo_{source}", SLOWED_SFT)
    (paths.report / "timings.json").write_text(json.dumps(timings, indent=1))
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo every stage")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    setup_console_logging()
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    run_pipeline(cfg, Path(args.out), args.fresh)
    print((Path(args.out) / "report" / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
