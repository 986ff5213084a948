"""The ten worked examples give NAVSIM's own results (examples.jsonl), both versions; and worked cases
built here from NAVSIM's conventions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.pdm import PDMScorer
from rewards.pdm.__main__ import main as cli_main
from sim.scene_json import load_scene_json, scene_to_json

from pdm_builders import road_scene, straight_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdm_examples"
DISCRETE = {"v1": ("NC", "DAC", "TTC", "C", "DDC_weight0"),
            "v2": ("NC", "DAC", "DDC", "TLC", "TTC", "LK", "HC", "EC", "multiplicative_metrics_prod", "human_filter_applied")}
CONTINUOUS = {"v1": ("EP", "PDMS"), "v2": ("EP", "EPDMS", "scorer_pdm_score_column")}

needs_examples = pytest.mark.skipif(not (EXAMPLES / "examples.jsonl").exists(), reason="worked examples not available")


def expected_results():
    if not (EXAMPLES / "examples.jsonl").exists():
        return []
    return [json.loads(line) for line in (EXAMPLES / "examples.jsonl").read_text().splitlines()]


@needs_examples
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("expected", expected_results(), ids=lambda e: e["scene"])
def test_worked_example_matches_navsim(expected, version):
    scene, plan, _ = load_scene_json(EXAMPLES / expected["scene"])
    scorer = PDMScorer(version)
    result = scorer.score(scorer.prepare(scene), plan)[0]
    want = expected[version]
    for key in DISCRETE[version]:
        assert result[key] == want[key], key
    for key in CONTINUOUS[version]:
        assert result[key] == pytest.approx(want[key], abs=1e-9), key
    if "human_unfiltered_submetrics" in want:
        assert result["human_unfiltered_submetrics"] == want["human_unfiltered_submetrics"]
    got, ref = result["diagnostics"], want["diagnostics"]
    for who in ("pdm_closed", "plan"):
        assert got["raw_progress_m"][who] == pytest.approx(ref["raw_progress_m"][who], abs=1e-9)
    for key in ("plan_first_at_fault_collision_s", "plan_first_ttc_violation_s", "pdm_closed_submetrics"):
        assert got[key] == ref[key], key


@needs_examples
def test_cli_scores_a_directory_and_writes_json_lines(tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert cli_main([str(EXAMPLES), "--version", "both", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "04_comfort.json" in table and "EPDMS" in table and "PDMS" in table
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 10
    by_scene = {line["scene"]: line for line in lines}
    assert by_scene["07_ec_inconsistent.json"]["v2"]["EPDMS"] == pytest.approx(0.875)
    assert by_scene["05_red_light.json"]["v1"]["PDMS"] == 1.0
    assert any("human" in note for note in by_scene["01_straight.json"]["v2"]["notes"])


@needs_examples
def test_cli_reports_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ego": {"x": 0, "y": 0}}))
    assert cli_main([str(bad), "--version", "v1"]) == 1
    assert "bad.json: ego.heading: missing" in capsys.readouterr().err


def scene_without_history(ax: float = 0.0, ay: float = 0.0) -> dict:
    """A scene as JSON from elsewhere (no "sim" block, no ego_history): the ego at 10 m/s in its lane on the
    straight road, planning to keep 10 m/s; its t = 0 acceleration is (ax, ay)."""
    data = scene_to_json(road_scene(), straight_plan(10.0))
    del data["sim"], data["ego_history"]
    data["ego"].update({"ax": ax, "ay": ay})
    return data


def scored(data: dict, version: str) -> dict:
    scene, plan, _ = load_scene_json(data)
    scorer = PDMScorer(version)
    return scorer.score(scorer.prepare(scene), plan)[0]


def test_history_comfort_without_history_assumes_the_current_acceleration():
    """NAVSIM's assumed history copies the t = 0 ego's vx, vy, ax, ay: a lateral acceleration of 5.5 m/s^2
    (bound 4.89) at t = 0 makes the assumed past fail the lateral-acceleration check, so HC = 0 and EPDMS
    loses HC's 2/14; 3.5 m/s^2 passes. v1 has no history comfort."""
    from rewards.pdm.comfort import comfort_checks, history_padded
    from sim.kinematics import simulate

    calm, swerving, brisk = (scored(scene_without_history(ay=ay), "v2") for ay in (0.0, 5.5, 3.5))
    assert calm["HC"] == 1.0 and brisk["HC"] == 1.0
    assert swerving["HC"] == 0.0
    scene, plan, _ = load_scene_json(scene_without_history(ay=5.5))
    prepared = PDMScorer("v2").prepare(scene)
    checks = comfort_checks(history_padded(simulate(scene.ego, plan), prepared.history), "v2")[0]
    assert checks.tolist() == [True, False, True, True, True, True]  # only the lateral acceleration fails
    for key in ("NC", "DAC", "DDC", "TLC", "TTC", "LK", "EP", "multiplicative_metrics_prod"):
        assert swerving[key] == calm[key], key
    product, ep, ttc, lk = (swerving[k] for k in ("multiplicative_metrics_prod", "EP", "TTC", "LK"))
    assert product == 1.0 and ep == 1.0  # the plan keeps PDM-Closed's speed on a free road
    assert swerving["EPDMS"] == pytest.approx(product * (5 * ep + 5 * ttc + 2 * lk + 2 * 0.0) / 14)
    assert swerving["EPDMS"] == pytest.approx(12 / 14)
    assert calm["EPDMS"] == pytest.approx(1.0)
    # a longitudinal acceleration beyond 2.40 m/s^2 is uncomfortable in the assumed past too
    assert scored(scene_without_history(ax=3.0), "v2")["HC"] == 0.0
    v1 = [scored(scene_without_history(ay=ay), "v1") for ay in (0.0, 5.5)]
    assert v1[0]["PDMS"] == v1[1]["PDMS"]


def test_a_given_history_is_used_as_it_is():
    """With ego_history given, its own accelerations count: a calm past and a swerving present pass HC."""
    data = scene_without_history(ay=5.5)
    data["ego_history"] = [{"x": 10.0 * t, "y": 0.0, "heading": 0.0, "vx": 10.0, "vy": 0.0, "ax": 0.0, "ay": 0.0}
                           for t in (-1.5, -1.0, -0.5)]
    assert scored(data, "v2")["HC"] == 1.0
