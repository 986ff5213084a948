"""The ablation studies' pure parts: the ordering check against the pooled seed std, the shaping metrics read
from a GRPO run, the per-family share of logged mistakes in a split, and the share of SFT's gap to the human log
that GRPO closes, and each sample-type mix's scores in the negative-prone families."""
from __future__ import annotations

import json
import math

import pytest

from rl.ablations import family_gaps, logged_mistake_rates, negative_prone_by_mix, ordering, shaping_metrics
from sim.generate import GeneratorOptions, generate_dataset
from sim.scenarios.human import HumanLogs


def test_ordering_holds_only_where_a_step_exceeds_the_pooled_seed_std():
    pooled, steps = ordering([("SFT", 0.70, float("nan")), ("pos", 0.75, 0.03), ("pos+neg", 0.76, 0.04),
                              ("pos+neg+rec", 0.80, 0.0)])
    assert pooled == pytest.approx(math.sqrt((0.03 ** 2 + 0.04 ** 2 + 0.0) / 3))  # SFT, one policy, has no spread
    assert [s["step"] for s in steps] == ["SFT < pos", "pos < pos+neg", "pos+neg < pos+neg+rec"]
    assert [s["difference"] for s in steps] == pytest.approx([0.05, 0.01, 0.04])
    assert [s["holds"] for s in steps] == [True, False, True]
    assert ordering([("SFT", 0.7, float("nan")), ("pos", 0.6, float("nan"))])[1][0]["holds"] is False


def test_shaping_metrics_average_the_first_and_last_steps_that_log_each_term(tmp_path):
    steps = [{"step": i, "reward/negative_l2/inside_share": i / 10, "reward/negative_l2": -0.1 * i} for i in range(1, 13)]
    steps.insert(3, {"step": 99})  # a step without negative groups logs no negative term
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in steps) + "\n")
    out = shaping_metrics(tmp_path / "metrics.jsonl", window=5)
    assert out["neg inside start"] == pytest.approx(0.3)  # steps 1..5
    assert out["neg inside end"] == pytest.approx(1.0)    # steps 8..12
    assert out["neg term end"] == pytest.approx(-1.0)
    assert math.isnan(out["rec inside start"]) and math.isnan(out["rec term end"])
    assert math.isnan(shaping_metrics(tmp_path / "missing.jsonl")["neg inside start"])


def test_run_metrics_include_the_flow_trust_region_at_the_start_and_the_end(tmp_path):
    steps = [{"step": i, "train/flow_kl": float(i), "train/flow_clip_fraction": 0.5 if i > 6 else 0.0}
             for i in range(1, 13)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in steps) + "\n")
    out = shaping_metrics(tmp_path / "metrics.jsonl", window=5)
    assert (out["flow kl start"], out["flow kl end"]) == (pytest.approx(3.0), pytest.approx(10.0))  # 1..5, 8..12
    assert (out["clip fraction start"], out["clip fraction end"]) == (0.0, pytest.approx(0.5))
    assert math.isnan(out["sample speed start"])  # a run without the pace action


def test_run_metrics_give_the_speed_the_samples_drive_their_plans_at_from_the_logged_pace(tmp_path):
    steps = [{"step": i, "rollout/pace_log_speed": math.log(0.9) if i <= 5 else math.log(0.5)} for i in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in steps) + "\n")
    out = shaping_metrics(tmp_path / "metrics.jsonl", window=5)
    assert (out["sample speed start"], out["sample speed end"]) == (pytest.approx(0.9), pytest.approx(0.5))


def test_logged_mistake_rates_count_the_positive_scenes_whose_log_is_not_the_plan(tmp_path):
    logs = HumanLogs(mistake_rate=0.0, family_rates={"lead_braking": 1.0})
    options = GeneratorOptions(("lane_follow", "lead_braking"), neg_share=0.0, rec_share=0.0, camera=None, human_logs=logs)
    generate_dataset(tmp_path / "with", 12, 3, options, progress=False)
    rates = logged_mistake_rates(tmp_path / "with")
    assert rates["lane_follow"]["logged mistake rate"] == 0.0
    assert rates["lead_braking"]["logged mistake rate"] >= 0.5  # rate 1, less the seeds that offer no mistake
    assert rates["lane_follow"]["positive scenes"] + rates["lead_braking"]["positive scenes"] == 12
    without = GeneratorOptions(("lane_follow",), neg_share=0.0, rec_share=0.0, camera=None)
    generate_dataset(tmp_path / "without", 4, 3, without, progress=False)
    # without human logs every scene logs the expert's plan
    assert logged_mistake_rates(tmp_path / "without") == {"lane_follow": {"positive scenes": 4, "logged mistake rate": 0.0}}


def test_result_json_writes_nan_and_infinity_as_null_for_strict_readers():
    import numpy as np

    from rl.tracking import strict_json

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    payload = {"rows": [{"PDMS": np.float32(0.75), "PDMS std": float("nan")}], "ratio": float("inf"), "seeds": (1, 2)}
    parsed = json.loads(strict_json(payload), parse_constant=refuse)
    assert parsed == {"rows": [{"PDMS": 0.75, "PDMS std": None}], "ratio": None, "seeds": [1, 2]}


def _summary(average: float, families: dict[str, float], scenes: int = 10) -> dict:
    return {"average": {"score": average, "num_scenes": scenes},
            "by_family": {f: {"score": v, "num_scenes": scenes // 2} for f, v in families.items()}}


def test_family_gaps_give_the_share_of_the_gap_to_the_human_log_that_grpo_closes():
    sft = _summary(0.70, {"curve": 0.40, "cut_in": 0.80, "stop_sign": 0.92})
    seeds = [_summary(0.75, {"curve": 0.38, "cut_in": 0.95, "stop_sign": 0.90}),
             _summary(0.77, {"curve": 0.42, "cut_in": 0.97, "stop_sign": 0.94})]
    log = _summary(0.90, {"curve": 0.98, "cut_in": 0.96, "stop_sign": 0.93})
    gaps = family_gaps(sft, seeds, log)
    assert list(gaps) == ["curve", "cut_in", "stop_sign", "all"]
    assert gaps["cut_in"]["GRPO PDMS"] == pytest.approx(0.96)  # the seeds' mean
    assert gaps["cut_in"]["gap closed"] == pytest.approx(1.0)  # as good as the log
    assert gaps["curve"]["gap closed"] == pytest.approx(0.0, abs=1e-12)  # no better than SFT
    assert gaps["all"]["gap closed"] == pytest.approx((0.76 - 0.70) / (0.90 - 0.70))
    assert gaps["all"]["scenes"] == 10 and gaps["curve"]["scenes"] == 5
    assert gaps["stop_sign"]["gap closed"] is None  # the log leads SFT by 0.01: no gap worth a ratio
    assert "SFT on expert's plans PDMS" not in gaps["curve"]
    perfect = _summary(0.72, {"curve": 0.30, "cut_in": 0.85, "stop_sign": 0.91})
    assert family_gaps(sft, seeds, log, perfect)["curve"]["SFT on expert's plans PDMS"] == 0.30


def _prone_summary(families: dict[str, tuple[float, float]], prone: tuple[float, float]) -> dict:
    """A v1 summary with (PDMS, at-fault collision rate) per family and for the negative-prone families together."""
    return {"by_family": {f: {"score": s, "at_fault_collision_rate": c} for f, (s, c) in families.items()},
            "negative_prone_families": {"score": prone[0], "at_fault_collision_rate": prone[1]}}


def test_negative_prone_by_mix_averages_each_mix_over_its_seeds_and_counts_the_seeds_that_collide():
    sft = _prone_summary({"vru_crossing": (0.40, 0.5), "cut_in": (0.85, 0.1), "curve": (0.5, 0.0)}, (0.70, 0.2))
    pos = [_prone_summary({"vru_crossing": (0.80, 0.1), "cut_in": (0.90, 0.0), "curve": (0.6, 0.0)}, (0.85, 0.05)),
           _prone_summary({"vru_crossing": (0.90, 0.0), "cut_in": (0.94, 0.0), "curve": (0.6, 0.0)}, (0.91, 0.0))]
    neg = [_prone_summary({"vru_crossing": (0.95, 0.0), "cut_in": (0.93, 0.0), "curve": (0.6, 0.0)}, (0.92, 0.0))]
    table = negative_prone_by_mix(sft, {"pos": pos, "pos+neg": neg})
    assert list(table) == ["cut_in", "vru_crossing", "negative-prone"]  # the prone families SFT has, in their order
    vru = table["vru_crossing"]
    assert (vru["SFT PDMS"], vru["SFT collisions"]) == (0.40, 0.5)
    assert vru["pos PDMS"] == pytest.approx(0.85) and vru["pos collisions"] == pytest.approx(0.05)
    assert vru["pos PDMS std"] == pytest.approx(0.1 / math.sqrt(2))  # sample std of two seeds
    assert vru["pos seeds colliding"] == 1 and vru["pos+neg seeds colliding"] == 0
    assert math.isnan(vru["pos+neg PDMS std"])  # one seed: no spread
    assert table["negative-prone"]["pos PDMS"] == pytest.approx(0.88)
    assert table["negative-prone"]["pos seeds colliding"] == 1


def _finished_run(ckpt_root, cfg) -> None:
    """A GRPO run folder whose latest checkpoint is its last step, with `cfg` as its config (no weights: enough
    for a study to decide whether to reuse it)."""
    from rl.checkpoint import LATEST
    from rl.config_io import save_config

    step = ckpt_root / f"step_{cfg.grpo.steps}"
    step.mkdir(parents=True)
    save_config(cfg, step / "config.yaml")
    (ckpt_root / LATEST).write_text(step.name)


def test_a_study_reuses_a_finished_run_of_its_config_and_refuses_one_of_another_in_its_folder(tmp_path):
    from rl.ablations import _grpo_variant
    from rl.config import TrainConfig
    from rl.config_io import ConfigError, load_config
    from rl.demo import PipelinePaths, _with

    paths = PipelinePaths(tmp_path / "run")
    cfg = load_config(TrainConfig, "configs/tiny_smoke.yaml", [])
    out = paths.root / "ablations" / "sample_types" / "pos_neg" / "seed_0"
    same = _with(cfg, **{"policy_init": str(paths.sft_expert / "policy"), "data.train": str(paths.split("train")),
                         "data.val": str(paths.split("val")), "policy.codebook.path": str(paths.codebook),
                         "logging.out_dir": str(out / "grpo"), "logging.picture_every": 0})
    _finished_run(out / "grpo" / "ckpt", same)
    assert _grpo_variant(cfg, paths, out) == out / "grpo"
    with pytest.raises(ConfigError, match="holds a finished GRPO run of another config"):
        _grpo_variant(cfg, paths, out, **{"grpo.lr": cfg.grpo.lr * 2})
