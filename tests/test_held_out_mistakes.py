"""`benchmarks/held_out_mistakes.py`: whether a policy's plans on held-out negative / recovery scenes lie inside the
shaping terms' regions, as driven and before the pace."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("held_out_mistakes")


def test_the_terms_on_held_out_scenes_are_the_reward_functions_values_as_driven_and_as_planned(
        bench, tiny_grpo_assets, tmp_path):
    from rewards.builtin import negative_l2, recovery_l2
    from rewards.registry import ScoringInput
    from rl.evaluate import iter_scenes, load_planner
    from rl.policy import SpanVLAPolicy

    _, stream = iter_scenes(tiny_grpo_assets["train"], ["neg", "rec"])
    scenes = list(stream)
    plain = load_planner(str(tiny_grpo_assets["policy"]), None, "expert")
    rows = bench.scene_rows(plain, scenes)
    assert [r["type"] for r in rows] == [s.sample_type for s in scenes] and {"neg", "rec"} <= {r["type"] for r in rows}
    plans = plain.policy.plan(scenes, action_source="expert").trajectories
    for row, scene, plan in zip(rows, scenes, plans):
        term = negative_l2 if scene.sample_type == "neg" else recovery_l2
        [expected] = term([ScoringInput(scene, plan)])
        assert row["driven"] == row["plan"]  # no pace head: the plan is what is driven
        assert row["plan"]["term"] == pytest.approx(expected["reward"]) and row["plan"]["inside"] == expected["inside_share"]
        assert row["plan"]["inside"] == float(row["plan"]["ade_m"] < row["region_m"])
        if scene.sample_type == "neg":
            assert row["plan"]["ade_expert_m"] == pytest.approx(float(np.linalg.norm(plan[:, :2] - scene.future[:len(plan), :2], axis=-1).mean()))

    paced = SpanVLAPolicy.load(tiny_grpo_assets["policy"]).add_pace_head()
    with torch.no_grad():
        paced.expert.pace_head[-1].bias.fill_(math.log(0.5))
    paced.save(tmp_path / "paced")
    paced_rows = bench.scene_rows(load_planner(str(tmp_path / "paced"), None, "expert"), scenes)
    for row, paced_row in zip(rows, paced_rows):
        assert paced_row["plan"] == pytest.approx(row["plan"])  # a new head leaves the flow's plan as it was
    assert any(p["driven"]["ade_m"] != pytest.approx(p["plan"]["ade_m"]) for p in paced_rows)  # driven at half speed

    table = bench.summarise(rows)
    negatives = [r for r in rows if r["type"] == "neg"]
    assert table["neg"]["all"]["scenes"] == len(negatives)
    assert table["neg"]["all"]["plan"]["inside"] == pytest.approx(np.mean([r["plan"]["inside"] for r in negatives]))
    assert sum(e["scenes"] for f, e in table["rec"].items() if f != "all") == table["rec"]["all"]["scenes"]


def test_a_split_without_negative_or_recovery_scenes_is_refused_by_name(bench, tmp_path, capsys):
    from sim.scenarios import make_scene
    from sim.scene_json import write_scene_json

    (tmp_path / "scenes").mkdir()
    write_scene_json(tmp_path / "scenes" / "a.json", make_scene("lane_follow", 1))
    assert bench.main(["--scenes", str(tmp_path / "scenes"), "--checkpoints", str(tmp_path / "p")]) == 2
    assert f"--scenes {tmp_path / 'scenes'}: no negative or recovery scenes" in capsys.readouterr().err


def test_names_that_do_not_match_the_checkpoints_are_refused_by_name(bench, capsys):
    from rl.evaluate import named_checkpoints

    assert named_checkpoints("a/p, b/p") == [("a/p", "a/p"), ("b/p", "b/p")]
    assert named_checkpoints("a/p,b/p", "sft,grpo") == [("sft", "a/p"), ("grpo", "b/p")]
    with pytest.raises(SystemExit):
        bench.main(["--scenes", "s", "--checkpoints", "a/p,b/p", "--names", "only_one"])
    assert "--names gives 1 names for 2 checkpoints" in capsys.readouterr().err
