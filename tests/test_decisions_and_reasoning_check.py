"""The decision vocabulary (sim.decisions) and the reward's reasoning check, against hand-written trajectories
on a straight road (ego at the origin, 10 m/s, lane centre y = 0), not against the generator's labels."""
import sys

import numpy as np
import pytest

from rewards.reasoning_check import check_reasoning
from sim.decisions import classify_lateral, classify_longitudinal, parse_decisions
from tests.pdm_builders import road_scene

DT = 0.5


def from_speeds(speeds, ys=None, headings=None) -> np.ndarray:
    """A plan (8, 3) whose i-th interval is driven at speeds[i] along x, with optional lateral offsets y."""
    x = np.cumsum(np.asarray(speeds, dtype=float) * DT)
    y = np.zeros(8) if ys is None else np.asarray(ys, dtype=float)
    h = np.zeros(8) if headings is None else np.asarray(headings, dtype=float)
    return np.stack([x, y, h], axis=-1)


LANE = np.stack([np.linspace(-10, 200, 50), np.zeros(50)], axis=-1)


@pytest.mark.parametrize("speeds, expected", [
    ([10] * 8, "keep speed"),  # unchanged
    ([10, 9.8, 9.6, 9.4, 9.2, 9.0, 8.8, 8.6], "keep speed"),  # drops 1.4 m/s < 1.5: not yet a deceleration
    ([10, 9, 8, 7, 7, 7, 7, 7], "decelerate"),  # 3 m/s below the start speed
    ([10, 8, 6, 4, 2, 0.4, 0.0, 0.0], "stop"),  # below 0.5 m/s
    ([10, 10.5, 11, 11.5, 12, 12, 12, 12], "accelerate"),  # ends 2 m/s above
])
def test_longitudinal_decisions_follow_their_speed_thresholds(speeds, expected):
    assert classify_longitudinal(10.0, from_speeds(speeds)) == expected


def test_lateral_decisions_follow_their_offset_and_heading_thresholds():
    ramp = np.array([0.0, 0.2, 0.8, 1.6, 2.4, 3.0, 3.4, 3.5])
    assert classify_lateral(from_speeds([10] * 8), LANE) == "keep lane"
    assert classify_lateral(from_speeds([10] * 8, ys=ramp), LANE) == "change lane left"  # ends 3.5 m out
    assert classify_lateral(from_speeds([10] * 8, ys=-ramp), LANE) == "change lane right"
    bump = np.array([0.0, 0.3, 0.6, 0.8, 0.6, 0.3, 0.1, 0.0])  # out 0.8 m (> 0.4), back to the centre
    assert classify_lateral(from_speeds([10] * 8, ys=bump), LANE) == "nudge left"
    small = bump * 0.4  # at most 0.32 m: within the lane
    assert classify_lateral(from_speeds([10] * 8, ys=small), LANE) == "keep lane"
    turn = np.linspace(-0.15, -1.2, 8)  # heading ends 1.2 rad right of the straight lane (> 0.7)
    assert classify_lateral(from_speeds([6] * 8, headings=turn), LANE) == "turn right"


def test_stated_decisions_are_read_from_the_last_sentence_longest_phrase_first():
    assert parse_decisions("A car ahead brakes. So I will slow down and stay in my lane.") == ("decelerate", "keep lane")
    assert parse_decisions("I will turn left. Then I will come to a full stop.") == ("stop", None)
    assert parse_decisions("Give way to the cyclist, and move into the right lane.") == ("yield", "change lane right")
    assert parse_decisions("Directly predict the final action.") == (None, None)


def test_the_reward_check_compares_the_stated_decision_with_the_plan():
    scene = road_scene()
    cruise, braking = from_speeds([10] * 8), from_speeds([10, 8, 6, 4, 2, 0.4, 0.0, 0.0])
    ok = check_reasoning("The road is clear. So I will keep my speed and stay in my lane.", cruise, scene)
    assert ok.consistent and ok.stated == ("keep speed", "keep lane") and ok.observed == ("keep speed", "keep lane")
    lying = check_reasoning("A pedestrian steps out. So I will come to a full stop.", cruise, scene)
    assert not lying.consistent and lying.observed[0] == "keep speed"
    yielding = check_reasoning("A cyclist crosses. So I will yield and keep my lane.", braking, scene)
    assert yielding.consistent and yielding.observed == ("stop", "keep lane")  # yield allows stopping
    silent = check_reasoning("Nothing to say here.", braking, scene)
    assert silent.consistent and silent.stated == (None, None)


def test_scoring_reasoning_needs_nothing_of_the_synthetic_generator():
    import subprocess

    code = ("import sys, rewards.reasoning_check, rewards.builtin; "
            "print(sorted(m for m in sys.modules if m.startswith('sim.scenarios')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
