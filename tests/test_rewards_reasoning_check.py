"""The reasoning-consistency check behind the CoT reward: ground truths agree with their labels, and a
trajectory doing something else than the trace says is caught."""
import numpy as np
import pytest

from rewards.reasoning_check import check_reasoning
from rewards.registry import ScoringInput, resolve_reward
from sim.scenarios import FAMILIES, make_scene


@pytest.mark.parametrize("family", FAMILIES)
def test_every_familys_slow_traces_agree_with_their_ground_truth_plan(family):
    for seed in range(3):
        for sample_type in ("pos", "rec"):
            scene = make_scene(family, seed, sample_type)
            if scene.reasoning.mode == "slow":
                check = check_reasoning(scene.reasoning.text, scene.future[:8], scene)
                assert check.consistent, (scene.token, check)


def test_a_trace_saying_stop_while_the_plan_drives_on_is_inconsistent():
    scene = make_scene("red_light", 0)
    speed = max(scene.ego.speed, 5.0)
    drive_on = np.stack([speed * 0.5 * np.arange(1, 9), np.zeros(8), np.zeros(8)], -1)
    check = check_reasoning("The light is red. So I will come to a full stop and stay in my lane.", drive_on, scene)
    assert check.stated == ("stop", "keep lane") and check.observed[0] != "stop" and not check.consistent
    assert check_reasoning("Nothing here.", drive_on, scene).consistent  # no stated decision: nothing to contradict


def test_the_cot_reward_swaps_the_length_penalty_for_the_inconsistency_penalty():
    scene = make_scene("red_light", 0)
    speed = max(scene.ego.speed, 5.0)
    drive_on = np.stack([speed * 0.5 * np.arange(1, 9), np.zeros(8), np.zeros(8)], -1)
    cot = resolve_reward("cot_length")
    text = "The light is red. So I will come to a full stop and stay in my lane."
    lying, fast = cot([ScoringInput(scene, drive_on, text, "slow"), ScoringInput(scene, drive_on, "", "fast")],
                      inconsistency_penalty=2.0)
    assert lying["reward"] == 2.0 and lying["consistent"] == 0.0
    assert fast["reward"] == 0.0
