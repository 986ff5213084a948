"""The main job's pipeline at smoke size (configs/tiny_smoke.yaml): data -> codebook -> SFT -> GRPO -> evaluation
-> report, on a local Ray; plus the evaluation command on its outputs and the entry points' bad-input errors."""
import json

import pandas as pd
import pytest

from rl.config import TrainConfig
from rl.config_io import ConfigError, load_config

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke_run(ray_cluster, tmp_path_factory):
    from rl.demo import run_pipeline

    out = tmp_path_factory.mktemp("demo")
    cfg = load_config(TrainConfig, "configs/tiny_smoke.yaml")
    results = run_pipeline(cfg, out)
    return out, results


@pytest.mark.ray
def test_the_pipeline_writes_a_report_with_every_planner_and_both_versions(smoke_run):
    out, results = smoke_run
    assert set(results) == {"ground_truth", "human_log", "constant_velocity", "sft_tokens", "sft_expert",
                            "sft_expert_slowed", "grpo_expert"}
    for name, by_version in results.items():
        for version in ("v1", "v2"):
            average = by_version[version]["average"]
            assert 0.0 <= average["score"] <= 1.0 and average["num_scenes"] > 0, (name, version)
    assert results["ground_truth"]["v1"]["average"]["score"] > results["constant_velocity"]["v1"]["average"]["score"]
    report = out / "report"
    text = (report / "results.md").read_text()
    assert "| grpo_expert |" in text and "negative-prone families" in text
    summary = json.loads((report / "results.json").read_text())["headline"]
    assert summary["pdms_before"] > 0
    # the scene-blind baseline: SFT's plans at the speed scale chosen on val, and the post-trained ratio to it
    chosen = json.loads((out / "eval" / "sft_expert_slowed" / "speed_scale.json").read_text())
    assert chosen["val PDMS"][f"{chosen['speed scale']:g}"] == max(chosen["val PDMS"].values())
    slowed = results["sft_expert_slowed"]["v1"]["average"]["score"]
    assert summary["pdms_slowed_before"] == pytest.approx(slowed)
    assert summary["pdms_ratio_to_slowed"] == pytest.approx(summary["pdms_after"] / slowed)
    assert "Against the scene-blind baseline, sft_expert_slowed" in text
    for curve in ("curve_sft_vlm.png", "curve_sft_expert.png", "curve_grpo.png"):
        assert (report / curve).stat().st_size > 1000
    assert len(list(report.glob("before_after_*.png"))) == 2


@pytest.mark.ray
def test_the_evaluation_command_writes_navsim_rows_and_an_average(smoke_run, tmp_path, capsys):
    from rl.evaluate import main

    out, _ = smoke_run
    assert main(["--checkpoint", str(out / "grpo" / "ckpt" / "step_2" / "policy"), "--scenes", str(out / "data" / "test"),
                 "--version", "v2", "--out", str(tmp_path), "--sample-types", "all"]) == 0
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame.columns[:3]) == ["token", "valid", "no_at_fault_collisions"]
    assert "traffic_light_compliance" in frame.columns and "two_frame_extended_comfort" in frame.columns
    assert frame["token"].iloc[-1] == "average"
    body = frame.iloc[:-1]
    assert len(body) == 16 and body["valid"].all()
    assert frame["score"].iloc[-1] == pytest.approx(body["score"].mean())
    assert "average" in capsys.readouterr().out


def test_evaluation_reports_failed_scenes_instead_of_dropping_them(tmp_path):
    """A scene file that cannot be read (its centre line is a single point) is a failed row, not a crash."""
    import numpy as np

    from rl.evaluate import run_evaluation
    from sim.scenarios import make_scene
    from sim.scene_json import scene_to_json, write_scene_json

    write_scene_json(tmp_path / "good.json", make_scene("lane_follow", 1))
    bad = scene_to_json(make_scene("lane_follow", 2))
    bad["map"]["centerline"] = bad["map"]["centerline"][:1]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    summary = run_evaluation(str(tmp_path), str(tmp_path / "out"), ("v1",), baseline="constant_velocity",
                             sample_types=None, show_progress=False)["v1"]
    assert summary["average"]["num_scenes"] == 1
    assert [f["token"] for f in summary["failed"]] == ["bad"]
    assert "map.centerline" in summary["failed"][0]["error"]
    frame = pd.read_csv(tmp_path / "out" / "results.csv").set_index("token")
    assert not frame.loc["bad", "valid"] and np.isnan(frame.loc["bad", "score"])


def test_planners_sharing_prepared_scenes_score_as_alone_and_prepare_each_scene_once(tmp_path, monkeypatch):
    """Evaluations of one split that share a `PreparedScenes` give the rows of separate evaluations, and the
    second prepares nothing; a preparation of another split is refused."""
    from rewards.pdm import PDMScorer
    from rl.evaluate import PreparedScenes, run_evaluation
    from sim.scenarios import make_scene
    from sim.scene_json import write_scene_json

    (tmp_path / "scenes").mkdir()
    for i, family in enumerate(("lane_follow", "lead_braking", "cut_in")):
        write_scene_json(tmp_path / "scenes" / f"{family}.json", make_scene(family, i + 1))
    scenes = str(tmp_path / "scenes")
    alone = {b: run_evaluation(scenes, str(tmp_path / b), ("v1", "v2"), baseline=b, sample_types=None,
                               show_progress=False) for b in ("constant_velocity", "ground_truth")}

    calls = []
    prepare = PDMScorer.prepare
    monkeypatch.setattr(PDMScorer, "prepare", lambda self, scene: calls.append(scene.token) or prepare(self, scene))
    prepared = PreparedScenes(scenes)
    for b in ("constant_velocity", "ground_truth"):
        shared = run_evaluation(scenes, str(tmp_path / f"{b}_shared"), ("v1", "v2"), baseline=b, sample_types=None,
                                show_progress=False, prepared=prepared)
        for v in ("v1", "v2"):
            assert shared[v]["average"] == alone[b][v]["average"]
            frame = pd.read_csv(tmp_path / f"{b}_shared" / v / "results.csv")
            pd.testing.assert_frame_equal(frame, pd.read_csv(tmp_path / b / v / "results.csv"))
        assert len(calls) == 6  # 3 scenes x 2 versions, all during the first planner's evaluation
    assert len(prepared) == 6
    with pytest.raises(ValueError, match="prepared scenes given are those of"):
        run_evaluation(str(tmp_path), None, ("v1",), baseline="ground_truth", prepared=prepared)


def test_a_wrong_config_key_names_the_key_and_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'rollout.num_wrkers'.*rollout.num_workers"):
        load_config(TrainConfig, "configs/tiny.yaml", ["rollout.num_wrkers=2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  group_sise: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'grpo.group_sise'"):
        load_config(TrainConfig, bad)
    with pytest.raises(ConfigError, match="grpo.train_target='tokens'"):
        load_config(TrainConfig, "configs/tiny.yaml", ["grpo.train_target=tokens"])
    with pytest.raises(ConfigError, match="bad value for 'grpo.steps'"):
        load_config(TrainConfig, "configs/tiny.yaml", ["grpo.steps=many"])


def test_the_train_command_names_a_missing_dataset(tiny_grpo_assets, tmp_path, capsys):
    from rl.train import main

    code = main(["--config", "configs/tiny.yaml", f"policy_init={tiny_grpo_assets['policy']}",
                 f"data.train={tmp_path / 'nowhere'}", f"data.val={tiny_grpo_assets['val']}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"data.train={tmp_path / 'nowhere'}: no such dataset" in err


def _run_study(study: str, out, seeds: list[int]) -> tuple[dict, dict[str, dict]]:
    """Run an ablation study on the smoke pipeline's folder; its JSON payload and its rows by variant."""
    from rl.ablations import run_study

    run_study(study, load_config(TrainConfig, "configs/tiny_smoke.yaml"), out, seeds=seeds)
    payload = json.loads((out / "ablations" / f"{study}.json").read_text())
    return payload, {r["variant"]: r for r in payload["rows"]}


@pytest.mark.ray
def test_the_headline_study_reuses_the_demo_run_and_trains_the_other_seeds(smoke_run):
    out, results = smoke_run
    payload, rows = _run_study("headline", out, seeds=[0, 1])
    assert payload["study"] == "headline" and payload["sft_target"] == "log" and payload["seeds"] == [0, 1]
    assert rows["SFT (sft.target log)"]["PDMS"] == pytest.approx(results["sft_expert"]["v1"]["average"]["score"])
    # seed 0 is the demo's own GRPO run (same config): reused, not trained again
    assert rows["GRPO seed 0"]["PDMS"] == pytest.approx(results["grpo_expert"]["v1"]["average"]["score"])
    assert not (out / "ablations" / "headline" / "seed_0" / "grpo").exists()
    assert (out / "ablations" / "headline" / "seed_1" / "grpo" / "ckpt" / "latest").read_text().strip() == "step_2"
    mean = rows["GRPO mean +- std (2 seeds)"]
    assert mean["PDMS"] == pytest.approx((rows["GRPO seed 0"]["PDMS"] + rows["GRPO seed 1"]["PDMS"]) / 2)
    assert mean["PDMS std"] == pytest.approx(abs(rows["GRPO seed 0"]["PDMS"] - rows["GRPO seed 1"]["PDMS"]) / 2 ** 0.5)
    assert 0.0 <= rows["GRPO seed 1"]["collisions cut-in/lead/red"] <= 1.0
    # the shaping terms at the start of GRPO come from the run's own metrics
    first = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    inside = [m["reward/negative_l2/inside_share"] for m in first if "reward/negative_l2/inside_share" in m]
    if inside:
        assert rows["GRPO seed 0"]["neg inside start"] == pytest.approx(sum(inside[:5]) / len(inside[:5]))
    for family, values in payload["negative_prone_families"].items():
        assert values["no worse"] == (values["GRPO collisions"] <= values["SFT collisions"] + 1e-9), family
    # per family, the share of SFT's gap to the human log that the seeds' GRPO mean closes
    gaps = payload["families"]
    assert gaps["all"]["SFT PDMS"] == pytest.approx(results["sft_expert"]["v1"]["average"]["score"])
    assert gaps["all"]["log PDMS"] == pytest.approx(results["human_log"]["v1"]["average"]["score"])
    assert gaps["all"]["GRPO PDMS"] == pytest.approx(mean["PDMS"])
    # the scene-blind baseline: SFT and each seed slowed to the speed that scores best on val, scored on test
    from rl.evaluate import SPEED_SCALES

    scales = payload["speed_scales"]
    assert set(scales) == {"SFT", "SFT (chosen on train)", "GRPO seed 0", "GRPO seed 1"}
    sft_scale = scales["SFT"]["speed scale"]
    assert sft_scale in SPEED_SCALES
    assert scales["SFT"][f"val PDMS x{sft_scale:g}"] == max(v for k, v in scales["SFT"].items() if k.startswith("val PDMS"))
    slowed = json.loads((out / "ablations" / "headline" / "sft_slowed" / "eval" / "v1" / "summary.json").read_text())
    assert rows[f"SFT at {sft_scale:g} x speed (chosen on val)"]["PDMS"] == pytest.approx(slowed["average"]["score"])
    assert slowed["planner"] == "policy[expert]" + ("" if sft_scale == 1.0 else f" at {sft_scale:g} x speed")
    assert "GRPO at each seed's speed (chosen on val) mean +- std (2 seeds)" in rows
    # and SFT slowed to the speed that scores best on (at most 600 of) the training split's positives
    train_scale = scales["SFT (chosen on train)"]["speed scale"]
    on_train = json.loads(
        (out / "ablations" / "headline" / "sft_slowed_train" / "eval" / "v1" / "summary.json").read_text())
    assert rows[f"SFT at {train_scale:g} x speed (chosen on 600 training scenes)"]["PDMS"] == pytest.approx(
        on_train["average"]["score"])
    assert "| GRPO seed 1 |" in (out / "ablations" / "headline.md").read_text()


@pytest.mark.ray
def test_the_sample_types_study_trains_each_mix_and_reuses_the_demo_run_for_the_default_mix(smoke_run):
    out, results = smoke_run
    payload, rows = _run_study("sample_types", out, seeds=[0])
    # pos+neg+rec is the config's default mix: seed 0 of it is the demo's own run
    assert rows["GRPO pos+neg+rec seed 0"]["PDMS"] == pytest.approx(results["grpo_expert"]["v1"]["average"]["score"])
    assert not (out / "ablations" / "sample_types" / "pos_neg_rec" / "seed_0" / "grpo").exists()
    for mix in ("pos", "pos_neg"):
        assert (out / "ablations" / "sample_types" / mix / "seed_0" / "grpo" / "ckpt" / "latest").read_text().strip() == "step_2"
    # positives only: no negative or recovery group, so no shaping term is ever logged
    assert rows["GRPO pos seed 0"]["neg inside start"] is None  # NaN, written as null (strict JSON)
    assert rows["GRPO pos mean +- std (1 seed)"]["PDMS std"] is None  # no spread from one seed
    steps = [s["step"] for s in payload["ordering"]]
    assert steps == ["SFT < pos", "pos < pos+neg", "pos+neg < pos+neg+rec"]
    first = payload["ordering"][0]
    assert first["difference"] == pytest.approx(rows["GRPO pos mean +- std (1 seed)"]["PDMS"] - rows["SFT (sft.target log)"]["PDMS"])
    # the negative-prone families' table reads each mix's own evaluation
    pos_eval = json.loads(
        (out / "ablations" / "sample_types" / "pos" / "seed_0" / "eval" / "v1" / "summary.json").read_text())
    prone = payload["negative_prone_families"]["negative-prone"]
    assert prone["pos PDMS"] == pytest.approx(pos_eval["negative_prone_families"]["score"])
    assert prone["pos seeds colliding"] == int(pos_eval["negative_prone_families"]["at_fault_collision_rate"] > 0)


@pytest.mark.ray
def test_the_imitation_study_sets_sft_on_logs_beside_sft_on_the_experts_plans(smoke_run):
    from rl.ablations import logged_mistake_rates, run_study

    out, results = smoke_run
    payload, rows = _run_study("imitation", out, seeds=[0])
    perfect = json.loads((out / "ablations" / "imitation" / "eval" / "v1" / "summary.json").read_text())
    assert rows["SFT on the expert's plans (perfect-expert logs)"]["PDMS"] == pytest.approx(perfect["average"]["score"])
    assert (out / "ablations" / "imitation" / "sft_expert" / "policy" / "manifest.json").is_file()
    logged = logged_mistake_rates(out / "data" / "train")
    for family, values in payload["families"].items():
        assert values["logged mistake rate"] == pytest.approx(logged[family]["logged mistake rate"])
        assert values["PDMS logs"] == pytest.approx(results["sft_expert"]["v1"]["by_family"][family]["score"])
        assert values["PDMS expert"] == pytest.approx(perfect["by_family"][family]["score"])
    with pytest.raises(ConfigError, match="sft.target is 'expert'"):
        run_study("imitation", load_config(TrainConfig, "configs/tiny_smoke.yaml", ["sft.target=expert"]), out, seeds=[0])


@pytest.mark.ray
def test_an_evaluation_is_reused_only_for_the_same_planner_and_the_same_policy_files(smoke_run, tmp_path):
    import shutil

    from rl.demo import PipelinePaths, stage_evaluate

    out, _ = smoke_run
    cfg = load_config(TrainConfig, "configs/tiny_smoke.yaml")
    paths = PipelinePaths(out)
    paths.eval = tmp_path / "eval"
    policy = tmp_path / "policy"
    shutil.copytree(out / "sft_expert" / "policy", policy)
    planners = {"p": {"checkpoint": str(policy), "action_source": "expert"}}
    summary = paths.eval / "p" / "v1" / "summary.json"

    first = stage_evaluate(cfg, paths, planners)
    written = summary.stat().st_mtime_ns
    again = stage_evaluate(cfg, paths, planners)
    assert summary.stat().st_mtime_ns == written  # reused, not evaluated again
    assert again["p"]["v1"]["average"]["score"] == pytest.approx(first["p"]["v1"]["average"]["score"])
    shutil.rmtree(policy)  # the same path, trained again: new files
    shutil.copytree(out / "grpo" / "ckpt" / "step_2" / "policy", policy)
    stage_evaluate(cfg, paths, planners)
    assert summary.stat().st_mtime_ns != written
    written = summary.stat().st_mtime_ns
    slowed = stage_evaluate(cfg, paths, {"p": {**planners["p"], "speed_scale": 0.5}})  # another planner
    assert summary.stat().st_mtime_ns != written and json.loads((paths.eval / "p" / "planner.json").read_text())["speed_scale"] == 0.5
    assert slowed["p"]["v1"]["average"]["num_scenes"] == first["p"]["v1"]["average"]["num_scenes"]
