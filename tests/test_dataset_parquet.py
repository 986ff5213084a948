"""Parquet shards: round trip, training columns, column selection and filters, errors, atomic writes."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data_scene_builders import assert_same, make_scene
from sim import conventions as C
from sim.cameras import render_cameras
from sim.dataset import (
    SCHEMA_VERSION,
    DatasetError,
    SceneDataset,
    decode_png,
    encode_png,
    fixed_list_to_numpy,
    scene_to_row,
    write_manifest,
    write_shard,
)


def _scenes():
    scenes = [
        make_scene("s_pos", light_state="red", cone=True, sample_type="pos", family="red_light", seed=1),
        make_scene("s_neg", car_ahead_m=15.0, sample_type="neg", family="follow", seed=2),
        make_scene("s_rec", car_ahead_m=None, sample_type="rec", family="follow", seed=3),
    ]
    scenes[1].agents[0].poses[:2] = np.nan  # an agent first seen at t = -0.5 s
    scenes[1].agents[0].velocities[:2] = np.nan
    scenes[2].reasoning = None
    for scene in scenes:
        scene.cameras = render_cameras(scene, {"height": 16, "width": 32})
    return scenes


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    scenes = _scenes()
    rows = [scene_to_row(s, "train") for s in scenes]
    write_shard(out / "shard-00000.parquet", rows[:2], {"note": "first"})
    write_shard(out / "shard-00001.parquet", rows[2:])
    write_manifest(out, {"shards": [{"file": "shard-00000.parquet", "rows": 2}, {"file": "shard-00001.parquet", "rows": 1}]})
    return out, scenes, rows


def test_scenes_survive_a_round_trip_with_byte_identical_images(written):
    out, scenes, rows = written
    dataset = SceneDataset(out)
    assert len(dataset) == 3
    back = list(dataset.scenes())
    for original, loaded in zip(scenes, back):
        assert_same(original, loaded)
    table = dataset.read(["token", "camera_names", "images"])
    for row, original in zip(table.to_pylist(), scenes):
        assert row["camera_names"] == list(C.CAMERA_NAMES)
        assert len(row["images"]) == 3 * C.NUM_HISTORY_FRAMES
        for c, camera in enumerate(original.cameras):
            for f in range(C.NUM_HISTORY_FRAMES):
                png = row["images"][c * C.NUM_HISTORY_FRAMES + f]
                assert png == encode_png(camera.images[f])
                np.testing.assert_array_equal(decode_png(png), camera.images[f])
    without_images = next(dataset.scenes(images=False))
    assert all(c.images is None for c in without_images.cameras)
    np.testing.assert_array_equal(without_images.cameras[0].intrinsics, scenes[0].cameras[0].intrinsics)


def test_training_columns_hold_the_ego_frame_arrays(written):
    out, scenes, _ = written
    table = SceneDataset(out).read(["ego_history", "velocity", "acceleration", "command_one_hot", "future",
                                    "negative_trajectory", "recovery_trajectory", "reasoning_mode", "image_height"])
    history = fixed_list_to_numpy(table["ego_history"], (4, 3))
    np.testing.assert_allclose(history[0], scenes[0].history_trajectory(), atol=1e-6)
    np.testing.assert_allclose(fixed_list_to_numpy(table["future"], (10, 3))[1], scenes[1].future, atol=1e-5)
    negative = fixed_list_to_numpy(table["negative_trajectory"], (10, 3))
    assert np.isnan(negative[0]).all() and np.isnan(negative[2]).all()
    np.testing.assert_allclose(negative[1], scenes[1].negative_trajectory, atol=1e-5)
    recovery = fixed_list_to_numpy(table["recovery_trajectory"], (10, 3))
    np.testing.assert_allclose(recovery[2], scenes[2].recovery_trajectory, atol=1e-5)
    np.testing.assert_array_equal(fixed_list_to_numpy(table["command_one_hot"], (4,))[0], [0, 1, 0, 0])
    np.testing.assert_allclose(fixed_list_to_numpy(table["velocity"], (2,))[:, 0], 10.0)
    assert table["reasoning_mode"].to_pylist() == ["slow", "slow", None]
    assert table["image_height"].to_pylist() == [16, 16, 16]


def test_column_selection_and_row_filters(written):
    out, _, _ = written
    dataset = SceneDataset(out)
    batches = list(dataset.batches(["token"], where={"sample_type": "neg"}))
    assert [b.schema.names for b in batches] == [["token"]]
    assert pa.Table.from_batches(batches)["token"].to_pylist() == ["s_neg"]
    assert dataset.read(["token"], where={"family": ["follow"], "sample_type": ["pos", "rec"]})["token"].to_pylist() == ["s_rec"]
    assert dataset.read(["token"], where=pc.field("seed") >= 2)["token"].to_pylist() == ["s_neg", "s_rec"]
    assert [s.token for s in dataset.scenes(where={"family": "red_light"})] == ["s_pos"]
    assert dataset.read(["token"], where={"family": "nothing"}).num_rows == 0
    # A single shard file reads on its own too, with its metadata.
    single = SceneDataset(out / "shard-00000.parquet")
    assert single.read(["token"])["token"].to_pylist() == ["s_pos", "s_neg"]
    meta = pq.read_schema(out / "shard-00000.parquet").metadata
    assert meta[b"spanvla.schema_version"] == str(SCHEMA_VERSION).encode()
    assert json.loads(meta[b"spanvla.metadata"]) == {"note": "first"}


def test_a_corrupt_shard_is_named(tmp_path, written):
    _, _, rows = written
    path = write_shard(tmp_path / "shard-00000.parquet", rows[:1])
    write_manifest(tmp_path, {"shards": [{"file": path.name, "rows": 1}]})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="shard-00000.parquet: not a readable Parquet shard"):
        list(SceneDataset(tmp_path).batches(["token"]))


def test_a_missing_column_is_named_with_its_file(tmp_path, written):
    _, _, rows = written
    path = write_shard(tmp_path / "shard-00000.parquet", rows[:1])
    table = pq.read_table(path).drop_columns(["future"])
    pq.write_table(table, path)  # keeps the schema metadata (version) but lacks a column
    dataset = SceneDataset(path)
    assert dataset.read(["token"]).num_rows == 1
    with pytest.raises(DatasetError, match=r"shard-00000.parquet: missing column 'future'"):
        dataset.read(["token", "future"])
    with pytest.raises(DatasetError, match=r"column 'no_such' is not in the dataset schema"):
        dataset.read(["no_such"])


def test_a_wrong_schema_version_is_refused(tmp_path, written):
    _, _, rows = written
    path = write_shard(tmp_path / "shard-00000.parquet", rows[:1])
    table = pq.read_table(path)
    table = table.replace_schema_metadata({**table.schema.metadata, b"spanvla.schema_version": b"999"})
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=rf"shard-00000.parquet: schema version 999, this reader reads version {SCHEMA_VERSION}"):
        SceneDataset(path).read(["token"])
    write_manifest(tmp_path, {"shards": []})
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    manifest["schema_version"] = 0
    (tmp_path / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="_manifest.json: schema_version 0"):
        SceneDataset(tmp_path)


def test_a_failed_write_leaves_the_previous_shard_intact(tmp_path, written, monkeypatch):
    _, _, rows = written
    path = write_shard(tmp_path / "shard-00000.parquet", rows[:1])
    before = path.read_bytes()

    def dies_half_way(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(pq, "write_table", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_shard(path, rows[1:])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.parquet"]  # no temporary file left


def test_a_row_whose_scene_json_cannot_be_decoded_names_the_file_and_column(tmp_path, written):
    _, _, rows = written
    broken = dict(rows[0], scene_json='{"ego": {"x": 0}}')  # valid JSON, not a valid scene
    path = write_shard(tmp_path / "shard-00000.parquet", [rows[1], broken])
    scenes = SceneDataset(path).scenes()
    assert next(scenes).token == "s_neg"
    with pytest.raises(DatasetError, match=r"shard-00000.parquet: row 1: scene 's_pos': .*scene_json"):
        next(scenes)
