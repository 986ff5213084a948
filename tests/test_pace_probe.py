"""benchmarks/pace_probe.py: a linear probe of the pace head's input, against hand-built data."""
import numpy as np
import pytest

SCALES = (1.0, 0.8, 0.5)


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("pace_probe")


def test_ridge_with_a_small_penalty_recovers_a_linear_map(bench):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * [1.0, 5.0, 0.1]
    y = x @ np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]) + [0.2, -0.1]
    model = bench.fit_ridge(x, y, penalty=1e-8)
    np.testing.assert_allclose(bench.predict_ridge(model, x), y, atol=1e-6)


def test_a_scene_drives_as_planned_unless_a_slower_scale_is_predicted_to_gain(bench):
    gains = np.array([[-0.1, -0.2], [0.05, 0.3], [0.2, 0.1]])  # columns: 0.8 x, 0.5 x over 1 x
    assert bench.chosen_columns(gains).tolist() == [0, 2, 1]


def test_a_feature_that_tells_which_scenes_need_slowing_reaches_the_oracle(bench):
    """Scenes of kind 1 score only at 0.5 x, kind 0 best at 1 x: the probe on the kind matches the per-scene oracle
    (rank correlation 1); on noise it drives everything alike (no correlation)."""
    rng = np.random.default_rng(1)
    kinds = rng.integers(0, 2, 120)
    scores = np.where(kinds[:, None] == 1, [0.1, 0.2, 0.9], [0.9, 0.8, 0.6])
    x = np.stack([kinds, 1 - kinds], 1).astype(float)
    train, test = slice(0, 80), slice(80, None)
    row = bench.probe(x[train], scores[train], x[test], scores[test], SCALES)
    assert row["pdms"] == pytest.approx(scores[test].max(1).mean())
    assert row["rank_corr"] == pytest.approx(1.0)
    assert row["mean_scale"] == pytest.approx(np.where(kinds[test] == 1, 0.5, 1.0).mean())
    noise = rng.normal(size=(120, 2))
    blind = bench.probe(noise[train], scores[train], noise[test], scores[test], SCALES)
    assert blind["pdms"] < row["pdms"] - 0.1


def test_a_missing_checkpoint_is_refused_by_name(bench, tmp_path, capsys):
    assert bench.main(["--checkpoint", str(tmp_path / "nowhere"), "--train", str(tmp_path),
                       "--test", str(tmp_path)]) == 2
    assert f"--checkpoint {tmp_path / 'nowhere'}: policy checkpoint directory not found" in capsys.readouterr().err
