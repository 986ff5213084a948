"""The action codebook: K-disk clustering, drift-free encoding, decoding, files and the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from policy_scenes import make_policy_scene, smooth_trajectories
from rl.policy.codebook import (ActionCodebook, CodebookError, build_codebook, main, read_future_trajectories,
                                round_trip_error, trajectory_segments)


@pytest.fixture(scope="module")
def codebook() -> ActionCodebook:
    return build_codebook(smooth_trajectories(1000, seed=0), num_tokens=256, delta=0.2, seed=0)


def test_round_trip_error_is_small_on_smooth_trajectories(codebook):
    errors = round_trip_error(codebook, smooth_trajectories(200, seed=1))
    assert errors["round_trip_ade_m"] < 0.3
    assert errors["round_trip_fde_m"] < 0.5
    assert errors["round_trip_heading_rad"] < 0.05


def test_token_zero_is_standing_still(codebook):
    assert np.array_equal(codebook.segments[0], [0.0, 0.0, 0.0])
    standing = np.zeros((3, 10, 3))
    assert np.array_equal(codebook.encode(standing), np.zeros((3, 10), dtype=np.int64))
    assert np.array_equal(codebook.decode(np.zeros(10, dtype=np.int64)), np.zeros((10, 3)))


def test_encoding_is_drift_free(codebook):
    trajectories = smooth_trajectories(200, seed=2)
    drift_free = codebook.decode(codebook.encode(trajectories))
    # Naive encoding: each ground-truth segment on its own, errors then accumulate along the trajectory.
    naive = codebook.decode(codebook.distance_to_tokens(trajectory_segments(trajectories)).argmin(-1).reshape(200, 10))
    fde = lambda d: np.linalg.norm(d[:, -1, :2] - trajectories[:, -1, :2], axis=-1).mean()  # noqa: E731
    assert fde(drift_free) < 0.5 * fde(naive)


def test_decoding_composes_segments_from_the_origin():
    segments = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, np.pi / 2], [2.0, 0.0, 0.0]])
    book = ActionCodebook(segments)
    poses = book.decode(np.array([1, 1, 2]))
    np.testing.assert_allclose(poses, [[1.0, 0.0, np.pi / 2], [1.0, 1.0, -np.pi], [-1.0, 1.0, -np.pi]], atol=1e-12)


def test_clustering_respects_k_and_delta():
    trajectories = smooth_trajectories(300, seed=3)
    few = build_codebook(trajectories, num_tokens=16, delta=0.2)
    assert few.num_tokens == 16 and few.stats["uncovered_segments"] > 0
    coarse = build_codebook(trajectories, num_tokens=4096, delta=1.0)
    assert coarse.num_tokens < 4096 and coarse.stats["uncovered_segments"] == 0
    # Every segment lies within delta of some token centre's cluster: its nearest token is close.
    nearest = coarse.distance_to_tokens(trajectory_segments(trajectories)).min(-1)
    assert np.quantile(nearest, 0.95) < 1.0


def test_codebook_file_round_trip_and_errors(tmp_path, codebook):
    path = tmp_path / "codebook.json"
    codebook.save(path)
    loaded = ActionCodebook.load(path)
    assert np.array_equal(loaded.segments, codebook.segments) and loaded.delta == codebook.delta
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(CodebookError, match="format version 99"):
        ActionCodebook.load(path)
    del data["segments"]
    data["version"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(CodebookError, match="'segments' is missing"):
        ActionCodebook.load(path)
    with pytest.raises(CodebookError, match="not found"):
        ActionCodebook.load(tmp_path / "nope.json")


def test_command_line_builds_from_a_trajectory_array(tmp_path, capsys):
    np.save(tmp_path / "futures.npy", smooth_trajectories(300, seed=4))
    out = tmp_path / "book.json"
    assert main(["--dataset", str(tmp_path / "futures.npy"), "--out", str(out), "--k", "64", "--delta", "0.3"]) == 0
    book = ActionCodebook.load(out)
    assert book.num_tokens <= 64 and book.delta == 0.3
    assert "round trip: ADE" in capsys.readouterr().out


def test_command_line_reads_the_future_column_of_a_scene_dataset(tmp_path):
    from sim.dataset import scene_to_row, write_manifest, write_shard

    scenes = [make_policy_scene(i) for i in range(6)]
    write_shard(tmp_path / "data" / "shard-00000.parquet", [scene_to_row(s, "train") for s in scenes])
    write_manifest(tmp_path / "data", {"shards": [{"file": "shard-00000.parquet", "rows": 6}]})  # a dataset directory
    futures = read_future_trajectories(tmp_path / "data")
    np.testing.assert_allclose(futures, np.stack([s.future for s in scenes]), atol=1e-5)
    assert main(["--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "b.json"), "--k", "32"]) == 0
