"""The logged human driver of the synthetic world (sim.scenarios.human): graded mistakes as logs and
negatives, the generator option, its record in the dataset, and SFT imitating the logs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rl.config_io import ConfigError
from rl.sft import sft_target_scenes
from sim import conventions as C
from sim.generate import GeneratorOptions, generate_dataset, main as generate_main
from sim.generate_resume import ResumeError, check_resume
from sim.scene_json import scene_to_json
from sim.scenarios import FAMILIES, generate, make_scene
from sim.scenarios.generator import family, logged_drive
from sim.scenarios.human import HumanLogs

WITH_NEGATIVES = [f for f in FAMILIES if family(f).negative_kinds]
PLAN = C.NAVSIM_PLAN_POSES


def ade(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:PLAN, :2] - b[:PLAN, :2], axis=1).mean())


def test_at_rate_one_every_family_logs_one_of_its_own_negative_kinds():
    always = HumanLogs(mistake_rate=1.0)
    assert len(WITH_NEGATIVES) == len(FAMILIES) == 14
    for name in WITH_NEGATIVES:
        logged = logged_drive(name, 0, always)
        assert logged.kind in family(name).negative_kinds, (name, logged.kind)
        assert 0.0 <= logged.severity <= 1.0
        scene = make_scene(name, 0, "pos", human=always)
        assert scene.human_trajectory.shape == (PLAN, 3)
        assert np.abs(scene.human_trajectory - scene.future[:PLAN]).max() > 0.01, name  # the log is not the plan
        # the scene is otherwise the positive scene: same ground truth, same sample type
        assert np.array_equal(scene.future, make_scene(name, 0, "pos").future) and scene.sample_type == "pos"


def test_at_rate_zero_the_log_is_the_expert_plan_and_the_scene_is_unchanged():
    never = HumanLogs(mistake_rate=0.0)
    for name in ("lane_follow", "red_light", "protected_turn"):
        for seed in (0, 1):
            assert logged_drive(name, seed, never).kind is None
            with_logs, without = make_scene(name, seed, "pos", human=never), make_scene(name, seed, "pos")
            assert np.array_equal(with_logs.human_trajectory, with_logs.future[:PLAN])
            assert json.dumps(scene_to_json(with_logs)) == json.dumps(scene_to_json(without))


def test_a_family_rate_overrides_the_mistake_rate_for_that_family_only():
    only_curve = HumanLogs(mistake_rate=0.0, family_rates={"curve": 1.0})
    assert only_curve.rate("curve") == 1.0 and only_curve.rate("lane_follow") == 0.0
    assert only_curve.to_json() == {"mistake_rate": 0.0, "severity_a": 1.5, "severity_b": 4.0, "family_rates": {"curve": 1.0}}
    assert "family_rates" not in HumanLogs().to_json()  # datasets without per-family rates record what they did before
    for seed in (0, 1, 2):
        assert logged_drive("curve", seed, only_curve).kind in family("curve").negative_kinds
        assert logged_drive("lane_follow", seed, only_curve).kind is None
        # same severity draw as with the global rate: a family's rate decides only whether a mistake is logged
        assert logged_drive("curve", seed, only_curve).severity == logged_drive("curve", seed, HumanLogs(mistake_rate=1.0)).severity
    with pytest.raises(ValueError, match=r"family_rates\['curve'\] 1.5"):
        HumanLogs(family_rates={"curve": 1.5})
    with pytest.raises(ValueError, match=r"family_rates name \['curvy'\]"):
        GeneratorOptions(("curve",), human_logs=HumanLogs(family_rates={"curvy": 0.5}))


def test_the_human_log_baseline_plans_the_logged_drive_mistake_included():
    from rl.evaluate import Planner, ground_truth_plan

    scene = make_scene("lead_braking", 0, "pos", human=HumanLogs(mistake_rate=1.0))
    plans = Planner("human_log")([scene])
    assert plans.shape == (1, PLAN, 3)
    assert np.allclose(plans[0], scene.human_trajectory, atol=1e-9)
    assert ade(plans[0], ground_truth_plan(scene)) > 0.05  # the logged mistake, not the expert's plan


def test_severity_zero_is_the_expert_plan_and_severity_one_the_gross_negative():
    logs = HumanLogs()
    for name in WITH_NEGATIVES:
        gross = generate(name, 0, "neg")
        one = generate(name, 0, "neg", human=logs, severity=1.0)
        assert one.negative_kind == gross.negative_kind
        assert np.array_equal(one.negative_trajectory, gross.negative_trajectory), name
        zero = generate(name, 0, "neg", human=logs, severity=0.0)
        assert np.abs(zero.negative_trajectory - zero.future).max() < 0.03, name


def test_severity_grades_each_kind_of_knob():
    logs = HumanLogs()
    for name, kind in (("lead_braking", "tailgate"), ("curve", "drift_out_of_lane"), ("vru_crossing", "no_yield"),
                       ("lane_follow", "hesitate")):
        distances = [ade(s.negative_trajectory, s.future)
                     for s in (generate(name, 0, "neg", kind=kind, human=logs, severity=v) for v in (0.2, 0.5, 1.0))]
        assert distances[0] < distances[1] < distances[2], (name, kind, distances)
    # a drift or a blended decision scales exactly: half the severity, half the lateral offset
    half, full = (generate("curve", 0, "neg", kind="drift_out_of_lane", human=logs, severity=v) for v in (0.5, 1.0))
    assert ade(half.negative_trajectory, half.future) == pytest.approx(0.5 * ade(full.negative_trajectory, full.future), rel=0.05)


def test_a_negative_scene_logs_its_graded_mistake_and_a_recovery_scene_is_unchanged():
    logs = HumanLogs()
    closer = 0
    for name in ("lane_follow", "lead_braking", "stop_sign", "unprotected_left"):
        for seed in range(3):
            graded, gross = generate(name, seed, "neg", human=logs), generate(name, seed, "neg")
            assert graded.negative_kind in family(name).negative_kinds
            assert np.array_equal(graded.human_trajectory, graded.negative_trajectory[:PLAN])
            closer += ade(graded.negative_trajectory, graded.future) < ade(gross.negative_trajectory, gross.future)
    assert closer >= 10  # of 12: Beta(1.5, 4) draws mostly subtle mistakes
    rec_with, rec_without = make_scene("cut_in", 0, "rec", human=logs), make_scene("cut_in", 0, "rec")
    assert json.dumps(scene_to_json(rec_with)) == json.dumps(scene_to_json(rec_without))


def test_options_are_checked_with_a_message_naming_them():
    with pytest.raises(ValueError, match="mistake_rate 1.5"):
        HumanLogs(mistake_rate=1.5)
    with pytest.raises(ValueError, match="severity_b 0"):
        HumanLogs(severity_b=0)
    with pytest.raises(ValueError, match="severity 0.5: only for a 'neg' scene with human logs"):
        generate("lane_follow", 0, "neg", severity=0.5)


SMALL = dict(families=("lane_follow", "lead_braking"), neg_share=0.25, rec_share=0.25, camera=None, shard_size=4)


def test_without_the_option_the_dataset_is_what_it_was(tmp_path):
    """Option off: the manifest and shards record no human-log key, and each row is the scene made without
    any human-log argument (the generator's former call), field by field."""
    from sim.dataset import SceneDataset, row_to_scene

    options = GeneratorOptions(**SMALL)
    manifest = generate_dataset(tmp_path, 8, 5, options, progress=False)
    assert set(manifest["generator"]) == {"families", "neg_share", "rec_share", "camera", "shard_size"}
    rows = SceneDataset(tmp_path).read(["scene_json", "sample_type", "family", "seed"]).to_pylist()
    for row in rows:
        stored = row_to_scene(row)
        fresh = make_scene(row["family"], row["seed"], row["sample_type"])
        assert json.loads(row["scene_json"]) == json.loads(json.dumps(scene_to_json(fresh)))
        assert np.array_equal(stored.human_trajectory, stored.future[:PLAN].astype(np.float64))


def test_human_logs_are_recorded_and_resume_refuses_other_options(tmp_path, capsys):
    out = tmp_path / "data"
    code = generate_main(["--num-scenes", "8", "--seed", "5", "--out", str(out), "--no-images", "--quiet",
                          "--families", "lane_follow,lead_braking", "--shard-size", "4", "--neg-share", "0.25",
                          "--rec-share", "0.25", "--human-logs", "--mistake-rate", "1", "--severity-a", "2"])
    assert code == 0
    manifest = json.loads(next(out.glob("*.json")).read_text())
    assert manifest["generator"]["human_logs"] == {"mistake_rate": 1.0, "severity_a": 2.0, "severity_b": 4.0}
    logs = HumanLogs(mistake_rate=1.0, severity_a=2.0)
    check_resume(out, 8, 5, GeneratorOptions(**SMALL, human_logs=logs))  # the same options: accepted
    with pytest.raises(ResumeError, match="--human-logs: the dataset has True, given False"):
        check_resume(out, 8, 5, GeneratorOptions(**SMALL))
    with pytest.raises(ResumeError, match="--mistake-rate: the dataset has 1.0, given 0.3"):
        check_resume(out, 8, 5, GeneratorOptions(**SMALL, human_logs=HumanLogs(severity_a=2.0)))
    capsys.readouterr()
    assert generate_main(["--num-scenes", "2", "--out", str(tmp_path / "x"), "--mistake-rate", "0.5"]) == 2
    assert "--mistake-rate: only with --human-logs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--num-scenes", "2", "--out", str(tmp_path / "y"), "--human-logs", "--severity-a", "-1"])
    assert exit_info.value.code == 2
    assert "expected a finite number > 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_sft_imitates_the_logged_mistakes_when_the_target_is_the_log(tmp_path, tiny_grpo_assets):
    from rl.policy import SpanVLAPolicy
    from rl.policy import prompt as P
    from rl.policy.codebook import build_codebook
    from rl.scene_store import SceneStore

    data = tmp_path / "logs"
    assert generate_main(["--num-scenes", "6", "--seed", "1", "--out", str(data), "--quiet", "--height", "32",
                          "--width", "64", "--families", "lead_braking,lane_follow,cut_in", "--neg-share", "0",
                          "--rec-share", "0", "--human-logs", "--mistake-rate", "1", "--severity-a", "50",
                          "--severity-b", "1"]) == 0
    store = SceneStore(data)
    scenes = store.scenes(range(len(store)))
    logged = sft_target_scenes(scenes, "log")
    assert [np.array_equal(s.future, e.future) for s, e in zip(sft_target_scenes(scenes, "expert"), scenes)] == [True] * 6
    collator = SpanVLAPolicy.load(tiny_grpo_assets["policy"]).collator("tokens")
    # a codebook whose segments include drifting and braking as well as the expert's driving
    motions = [s.future for s in scenes] + [generate(f, seed, "neg").negative_trajectory
                                            for f in ("lane_follow", "lead_braking", "cut_in") for seed in range(6)]
    codebook = collator.codebook = build_codebook(np.stack(motions), num_tokens=64, delta=0.2)
    mistakes = 0
    for scene, log_scene in zip(scenes, logged):
        assert np.array_equal(P.target_trajectory(log_scene), scene.human_trajectory)
        assert np.array_equal(collator.target_trajectory(log_scene), scene.human_trajectory)
        if ade(scene.human_trajectory, scene.future) > 1.0:  # a visible mistake: the action tokens follow it
            mistakes += 1
            decoded = codebook.decode(collator.target_tokens(log_scene))
            expert = codebook.decode(collator.target_tokens(scene))
            assert ade(decoded, scene.human_trajectory) < ade(decoded, scene.future)
            assert ade(expert, scene.future) < ade(expert, scene.human_trajectory)
    assert mistakes >= 4
    with pytest.raises(ConfigError, match="sft.target='human'"):
        sft_target_scenes(scenes, "human")


def test_sft_target_log_refuses_a_horizon_beyond_the_logs_and_an_unknown_target(tiny_grpo_assets, capsys):
    from rl.config import TrainConfig
    from rl.policy import SpanVLAPolicy
    from rl.sft import check_log_horizon, main as sft_main

    policy = SpanVLAPolicy.load(tiny_grpo_assets["policy"])
    cfg = TrainConfig()
    cfg.sft.target, cfg.sft.stage = "log", "expert"
    check_log_horizon(policy, cfg)  # 8 poses x 0.5 s: the logs' 4 s
    policy.config.expert.horizon = 10
    with pytest.raises(ConfigError, match="sft.target=log: the logs cover 4 s, the targets need 5 s"):
        check_log_horizon(policy, cfg)
    assert sft_main(["--config", "configs/tiny_smoke.yaml", "sft.target=human"]) == 2
    assert "sft.target='human': expected one of ('expert', 'log')" in capsys.readouterr().err



def test_the_demo_generates_human_logs_when_its_pipeline_asks_for_them(tmp_path):
    from rl.config import TrainConfig
    from rl.config_io import load_config
    from rl.demo import PipelinePaths, stage_data
    from sim.dataset import read_manifest

    overrides = ["pipeline.human_logs=true", "pipeline.family_mistake_rates={lead_braking: 0.5}",
                 "pipeline.mistake_severity_a=2", "pipeline.train_scenes=4", "pipeline.val_scenes=1",
                 "pipeline.test_scenes=1", "pipeline.families=[lane_follow,lead_braking]", "pipeline.generate_workers=1",
                 "pipeline.image_height=16", "pipeline.image_width=32"]
    paths = PipelinePaths(tmp_path / "run")
    stage_data(load_config(TrainConfig, "configs/tiny.yaml", overrides), paths)
    manifest = read_manifest(paths.split("train"))
    default = HumanLogs()
    assert manifest["generator"]["human_logs"] == {"mistake_rate": default.mistake_rate,
                                                   "severity_a": 2.0, "severity_b": default.severity_b,
                                                   "family_rates": {"lead_braking": 0.5}}


def test_a_severity_parameter_that_is_not_positive_is_a_config_error_naming_the_key():
    from rl.config import ConfigError, TrainConfig
    from rl.config_io import load_config

    with pytest.raises(ConfigError, match=r"pipeline.mistake_severity_a\|b: human logs: severity_b 0.0"):
        load_config(TrainConfig, "configs/tiny.yaml", ["pipeline.mistake_severity_b=0"])


def test_the_log_quality_sweep_scores_the_expert_at_rate_zero_and_the_mistakes_at_rate_one(load_benchmark):
    from rewards.pdm.scorer import PDMScorer

    bench = load_benchmark("human_logs")

    seeds = range(4)
    table = bench.log_quality(["lead_braking"], seeds, HumanLogs(), [0.0, 0.3, 1.0])
    scorer = PDMScorer("v1")
    expert, mistakes = [], []
    for seed in seeds:
        scene = make_scene("lead_braking", seed)
        logged = make_scene("lead_braking", seed, "pos", human=HumanLogs(mistake_rate=1.0))
        results = scorer.score(scorer.prepare(scene), np.stack([scene.future[:PLAN], logged.human_trajectory]))
        expert.append(results[0]["PDMS"])
        mistakes.append(results[1]["PDMS"])
    row = table["lead_braking"]
    assert row["0.0"]["pdms"] == pytest.approx(np.mean(expert))
    assert row["1.0"]["pdms"] == pytest.approx(np.mean(mistakes))
    assert table["overall"]["0.3"] == row["0.3"]  # one family: the pooled row is its own
    assert "| lead_braking |" in bench.render_log_quality(table)
