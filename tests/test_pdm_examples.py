"""The ten worked examples give NAVSIM's own results (examples.jsonl), both versions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.pdm import PDMScorer
from rewards.pdm.__main__ import main as cli_main
from sim.scene_json import load_scene_json

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdm_examples"
DISCRETE = {"v1": ("NC", "DAC", "TTC", "C", "DDC_weight0"),
            "v2": ("NC", "DAC", "DDC", "TLC", "TTC", "LK", "HC", "EC", "multiplicative_metrics_prod", "human_filter_applied")}
CONTINUOUS = {"v1": ("EP", "PDMS"), "v2": ("EP", "EPDMS", "scorer_pdm_score_column")}

pytestmark = pytest.mark.skipif(not (EXAMPLES / "examples.jsonl").exists(), reason="worked examples not available")


def expected_results():
    if not (EXAMPLES / "examples.jsonl").exists():
        return []
    return [json.loads(line) for line in (EXAMPLES / "examples.jsonl").read_text().splitlines()]


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


def test_cli_reports_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ego": {"x": 0, "y": 0}}))
    assert cli_main([str(bad), "--version", "v1"]) == 1
    assert "bad.json: ego.heading: missing" in capsys.readouterr().err
