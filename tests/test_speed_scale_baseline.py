"""The scene-blind slow-down baseline: plans driven along their own path at a fraction of their speed
(`rl.evaluate.slowed`), scored by the evaluation, and the fraction chosen on a split (`best_speed_scale`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rl.evaluate import best_speed_scale, main, run_evaluation, slowed


def _straight(speed: float = 10.0, poses: int = 8, interval_s: float = 0.5) -> np.ndarray:
    t = (np.arange(poses) + 1) * interval_s
    return np.stack([speed * t, np.zeros(poses), np.zeros(poses)], -1)


def test_a_slowed_plan_follows_the_same_path_at_the_given_fraction_of_its_speed():
    plan = _straight()
    assert slowed(plan, 1.0, 0.5) is plan
    half = slowed(plan[None], 0.5, 0.5)[0]
    assert half[:, 0] == pytest.approx(5.0 * (np.arange(8) + 1) * 0.5)  # 5 m/s instead of 10
    assert np.all(half[:, 1:] == 0.0)
    curve = np.stack([np.arange(1, 9, dtype=float), np.arange(1, 9, dtype=float) ** 2 / 10, np.linspace(0.1, 0.8, 8)], -1)
    moved = slowed(curve, 0.5, 0.5)
    assert moved[1] == pytest.approx(curve[0])  # pose 2 (1.0 s) is where the plan was at 0.5 s
    assert moved[7] == pytest.approx(curve[3])


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.2])
def test_a_speed_scale_outside_zero_to_one_is_refused_by_name(scale):
    with pytest.raises(ValueError, match=r"--speed-scale .*must lie in \(0, 1\]"):
        slowed(_straight(), scale, 0.5)


def test_the_evaluation_scores_slowed_plans_under_their_own_name(tmp_path, capsys):
    from sim.scenarios import make_scene
    from sim.scene_json import write_scene_json

    (tmp_path / "scenes").mkdir()
    for i, family in enumerate(("lane_follow", "lead_braking")):
        write_scene_json(tmp_path / "scenes" / f"{family}.json", make_scene(family, i + 1))
    scenes = str(tmp_path / "scenes")
    full = run_evaluation(scenes, None, ("v1",), baseline="ground_truth", sample_types=None, show_progress=False)["v1"]
    half = run_evaluation(scenes, None, ("v1",), baseline="ground_truth", sample_types=None, show_progress=False,
                          speed_scale=0.5)["v1"]
    assert (full["planner"], half["planner"]) == ("ground_truth", "ground_truth at 0.5 x speed")
    assert half["average"]["ego_progress"] < full["average"]["ego_progress"]
    assert main(["--baseline", "ground_truth", "--scenes", scenes, "--speed-scale", "1.5"]) == 2
    assert "--speed-scale 1.5: must lie in (0, 1]" in capsys.readouterr().err


def test_the_chosen_speed_scale_is_the_one_whose_slowed_plans_score_best(tiny_grpo_assets):
    policy, val = str(tiny_grpo_assets["policy"]), str(tiny_grpo_assets["val"])
    best, means = best_speed_scale(policy, val, [1.0, 0.7, 0.4])
    assert list(means) == [1.0, 0.7, 0.4] and best == max(means, key=lambda s: (means[s], s))
    for scale in (1.0, 0.4):  # the same numbers as evaluating the slowed policy outright
        summary = run_evaluation(val, None, ("v1",), checkpoint=policy, action_source="expert", sample_types=["pos"],
                                 show_progress=False, speed_scale=scale)["v1"]
        assert means[scale] == pytest.approx(summary["average"]["score"])
    with pytest.raises(ValueError, match="--speed-scale 0"):
        best_speed_scale(policy, val, [1.0, 0.0])


def test_a_limited_split_is_a_seeded_draw_kept_in_the_splits_order(tiny_grpo_assets):
    from rl.evaluate import readable_scenes

    every = [s.token for s in readable_scenes(tiny_grpo_assets["val"], sample_types=None)]
    drawn = [s.token for s in readable_scenes(tiny_grpo_assets["val"], sample_types=None, limit=3, seed=5)]
    assert len(every) > 3 and len(drawn) == 3 and set(drawn) <= set(every)
    assert drawn == sorted(drawn, key=every.index)  # the split's order
    assert drawn == [s.token for s in readable_scenes(tiny_grpo_assets["val"], sample_types=None, limit=3, seed=5)]
    assert [s.token for s in readable_scenes(tiny_grpo_assets["val"], sample_types=None, limit=99)] == every


def test_a_speed_scale_chosen_on_a_draw_of_the_split_scores_only_the_drawn_scenes(tiny_grpo_assets, tmp_path):
    import pandas as pd

    from rl.evaluate import readable_scenes

    policy, train = str(tiny_grpo_assets["policy"]), str(tiny_grpo_assets["train"])
    _, means = best_speed_scale(policy, train, [1.0, 0.5], max_scenes=3)
    drawn = {s.token for s in readable_scenes(train, limit=3)}
    assert len(drawn) == 3
    run_evaluation(train, str(tmp_path), ("v1",), checkpoint=policy, action_source="expert", sample_types=["pos"],
                   show_progress=False, speed_scale=0.5)
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows[rows.token != "average"]) > 3  # the split has more positives than the draw
    assert means[0.5] == pytest.approx(rows[rows.token.isin(drawn)].score.mean())


def test_a_cached_evaluation_is_reused_for_its_planner_and_redone_for_another(tmp_path):
    from rl.evaluate import cached_evaluation
    from sim.scenarios import make_scene
    from sim.scene_json import write_scene_json

    (tmp_path / "scenes").mkdir()
    for i, family in enumerate(("lane_follow", "lead_braking")):
        write_scene_json(tmp_path / "scenes" / f"{family}.json", make_scene(family, i + 1))
    scenes, out = tmp_path / "scenes", tmp_path / "eval"
    summary = out / "summary.json"  # one version: written into out itself, as run_evaluation writes it
    full = cached_evaluation(scenes, out, ("v1",), {"baseline": "ground_truth"}, sample_types=None)
    written = summary.stat().st_mtime_ns
    again = cached_evaluation(scenes, out, ("v1",), {"baseline": "ground_truth"}, sample_types=None)
    assert summary.stat().st_mtime_ns == written and again == full  # reused
    half = cached_evaluation(scenes, out, ("v1",), {"baseline": "ground_truth", "speed_scale": 0.5}, sample_types=None)
    assert half["v1"]["planner"] != full["v1"]["planner"]  # another planner: evaluated again, not the cached one
    assert json.loads((out / "planner.json").read_text()) == {"baseline": "ground_truth", "speed_scale": 0.5}
    (out / "planner.json").unlink()  # results from before planner.json: evaluated again
    redone = cached_evaluation(scenes, out, ("v1",), {"baseline": "ground_truth", "speed_scale": 0.5}, sample_types=None)
    assert summary.stat().st_mtime_ns != written and redone["v1"]["average"] == half["v1"]["average"]
