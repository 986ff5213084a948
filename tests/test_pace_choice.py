"""benchmarks/pace_choice.py: whether a paced policy chooses its speed by scene, against hand values."""
import numpy as np
import pytest

SCALES = (1.0, 0.8, 0.5)


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("pace_choice")


def test_a_scenes_best_scale_is_its_highest_score_and_ties_go_to_the_larger_scale(bench):
    scores = np.array([[0.5, 0.9, 0.7], [0.8, 0.8, 0.8], [0.1, 0.6, 0.6]])
    assert bench.best_scales(scores, SCALES).tolist() == [0.8, 1.0, 0.8]


def test_the_summary_compares_the_chosen_pace_with_the_same_pace_for_all_and_the_bounds(bench):
    scores = np.array([[0.9, 0.8, 0.7],    # family a: fastest is best
                       [0.0, 0.0, 0.9],    # family b: only 0.5 x avoids a collision
                       [0.2, 0.6, 0.4]])   # family b: 0.8 x is best
    rows = [{"family": "a", "chosen": 1.0, "best_scale": 1.0, "plan": 0.9, "paced": 0.9},
            {"family": "b", "chosen": 0.5, "best_scale": 0.5, "plan": 0.0, "paced": 0.9},
            {"family": "b", "chosen": 0.8, "best_scale": 0.8, "plan": 0.2, "paced": 0.6}]
    table = bench.summarise(rows, np.array([0.85, 0.0, 0.5]), scores, SCALES)
    assert list(table) == ["a", "b", "all"]
    everything = table["all"]
    assert everything["chosen"] == pytest.approx(2.3 / 3) and everything["paced"] == pytest.approx(0.8)
    assert everything["plan"] == pytest.approx(1.1 / 3) and everything["same_pace"] == pytest.approx(1.35 / 3)
    # best single: 0.5 x (0.667) beats 1 x (0.367) and 0.8 x (0.467); the oracle takes each row's maximum
    assert everything["best_single_scale"] == 0.5 and everything["best_single"] == pytest.approx(2.0 / 3)
    assert everything["oracle"] == pytest.approx((0.9 + 0.9 + 0.6) / 3)
    assert everything["rank_corr"] == pytest.approx(1.0)  # chosen and best scales in the same order
    assert table["a"]["rank_corr"] is None  # one scene: no order to compare
    assert table["b"]["scenes"] == 2 and table["b"]["best_single_scale"] == 0.5


def test_a_missing_checkpoint_is_refused_by_name(bench, tmp_path, capsys):
    assert bench.main(["--checkpoint", str(tmp_path / "nowhere"), "--scenes", str(tmp_path)]) == 2
    assert f"--checkpoint {tmp_path / 'nowhere'}: policy checkpoint directory not found" in capsys.readouterr().err
