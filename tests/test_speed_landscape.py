"""benchmarks/speed_landscape.py: the reward as a function of speed, classified per scene, and what a group reaches."""
import numpy as np
import pytest


@pytest.fixture
def landscape(load_benchmark):
    return load_benchmark("speed_landscape")


def test_reach_is_the_distance_to_the_final_pose(landscape):
    plan = np.array([[3.0, 1.0, 0.0], [6.0, -2.0, 0.0], [6.0, 8.0, 0.0]])  # lateral jitter does not count
    assert landscape.reach(plan) == pytest.approx(10.0)
    assert landscape.reach(np.stack([plan, plan / 2])).tolist() == pytest.approx([10.0, 5.0])


def test_slope_is_the_correlation_of_length_and_pdms_and_none_without_spread(landscape):
    ratios = np.array([0.9, 1.0, 1.1])
    assert landscape.slope(ratios, np.array([1.0, 0.5, 0.0])) == pytest.approx(-1.0)  # the slower sample scores higher
    assert landscape.slope(ratios, np.array([0.7, 0.7, 0.7])) is None
    assert landscape.slope(np.ones(3), np.array([1.0, 0.5, 0.0])) is None


def _row(landscape, by_scale, ratios=(0.95, 1.0, 1.05), scores=(1.0, 0.5, 0.0)):
    return landscape.scene_row(by_scale, np.array(ratios), np.array(scores), margin=0.01)


def test_a_scene_is_classified_by_what_0_9_and_lower_scales_do(landscape):
    local = _row(landscape, {1.0: 0.5, 0.9: 0.8, 0.8: 0.9})
    assert (local["helps at 0.9"], local["only below 0.9"], local["hurts at 0.9"]) == (True, False, False)
    assert local["oracle"] == 0.9
    jump = _row(landscape, {1.0: 0.0, 0.9: 0.0, 0.8: 0.0, 0.6: 0.85})  # a collision avoided only at 0.6 x speed
    assert (jump["helps at 0.9"], jump["only below 0.9"], jump["hurts at 0.9"]) == (False, True, False)
    faster = _row(landscape, {1.0: 0.95, 0.9: 0.9, 0.8: 0.85})
    assert (faster["helps at 0.9"], faster["only below 0.9"], faster["hurts at 0.9"]) == (False, False, True)
    flat = _row(landscape, {1.0: 0.95, 0.9: 0.955, 0.8: 0.958})  # changes within the margin count as none
    assert (flat["helps at 0.9"], flat["only below 0.9"], flat["hurts at 0.9"]) == (False, False, False)
    assert jump["reach low"] == pytest.approx(0.955) and jump["reach high"] == pytest.approx(1.045)


def test_the_summary_gives_the_best_single_scale_beside_the_per_scene_oracle(landscape):
    a = {"token": "a", "family": "cut_in", **_row(landscape, {1.0: 0.0, 0.9: 0.0, 0.6: 1.0})}
    b = {"token": "b", "family": "lane_follow", **_row(landscape, {1.0: 1.0, 0.9: 0.9, 0.6: 0.6}, scores=(0.7, 0.7, 0.7))}
    table = landscape.summarise([a, b])
    assert list(table) == ["cut_in", "lane_follow", "all"]
    whole = table["all"]
    assert whole["PDMS by scale"] == {"1": 0.5, "0.9": 0.45, "0.6": 0.8}
    assert (whole["best scale"], whole["PDMS at best scale"], whole["oracle"]) == (0.6, 0.8, 1.0)
    assert (whole["only below 0.9"], whole["hurts at 0.9"]) == (0.5, 0.5)
    assert whole["slope"] == pytest.approx(-1.0) and whole["groups with spread"] == 1  # b's group has no spread
    assert table["lane_follow"]["slope"] is None


def test_the_benchmark_scores_the_policy_s_own_plans_at_scale_one_and_writes_its_json(landscape, tiny_grpo_assets,
                                                                                         tmp_path, capsys):
    import json

    from rl.evaluate import best_speed_scale

    out = tmp_path / "landscape.json"
    policy, val = str(tiny_grpo_assets["policy"]), str(tiny_grpo_assets["val"])
    assert landscape.main(["--checkpoint", policy, "--scenes", val, "--group-size", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    whole = report["table"]["all"]
    _, means = best_speed_scale(policy, val, [1.0, 0.4])  # the evaluation's own mean PDMS per scale
    assert whole["PDMS by scale"]["1"] == pytest.approx(means[1.0], abs=1e-9)
    assert whole["PDMS by scale"]["0.4"] == pytest.approx(means[0.4], abs=1e-9)
    assert whole["oracle"] >= max(whole["PDMS by scale"].values()) - 1e-12  # each scene's best >= any one scale
    assert len(report["rows"]) == whole["scenes"] and "| all |" in capsys.readouterr().out
