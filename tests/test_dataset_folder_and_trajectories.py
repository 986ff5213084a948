"""A dataset directory is a Parquet dataset (pyarrow / pandas read it whole), a folder without a manifest is
not a dataset, older datasets (manifest.json) still read, and every trajectory read or written is checked:
10 poses 0.5 s apart, finite, or an error naming the file, the row, the scene token and the count."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from data_scene_builders import make_scene
from rl.scene_store import SceneStore
from sim.cameras import CameraConfig
from sim.dataset import (
    OPTIONAL_TRAJECTORY_COLUMNS,
    SCHEMA,
    DatasetError,
    SceneDataset,
    check_trajectory,
    fixed_list_to_numpy,
    old_pyarrow_hint,
    scene_to_row,
    write_manifest,
    write_shard,
)
from sim.generate import GeneratorOptions, generate_dataset
from sim.scenarios import FAMILIES

OPTIONS = GeneratorOptions(tuple(FAMILIES[:2]), neg_share=0.25, rec_share=0.25, camera=CameraConfig(height=16, width=32),
                           shard_size=4)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("folder") / "ds"
    generate_dataset(out, 6, 5, OPTIONS, progress=False)
    return out


def _copy(source, target):
    shutil.copytree(source, target)
    return target


def test_a_generated_dataset_folder_reads_with_pyarrow_and_pandas(generated):
    assert sorted(p.name for p in generated.iterdir()) == ["_manifest.json", "shard-00000.parquet", "shard-00001.parquet"]
    tokens = SceneDataset(generated).read(["token"])["token"].to_pylist()
    table = pq.read_table(generated)
    assert table.num_rows == 6 and table["token"].to_pylist() == tokens
    frame = pd.read_parquet(generated, columns=["token", "sample_type", "future"])
    assert len(frame) == 6 and sorted(frame["token"]) == sorted(tokens)
    assert len(frame["future"].iloc[0]) == 10  # poses at t = 0.5 ... 5 s
    discovered = ds.dataset(generated, format="parquet")
    assert sorted(f.rsplit("/", 1)[-1] for f in discovered.files) == ["shard-00000.parquet", "shard-00001.parquet"]


def test_an_older_dataset_with_manifest_json_still_reads_and_resume_moves_its_manifest(generated, tmp_path):
    old = _copy(generated, tmp_path / "old")
    (old / "_manifest.json").rename(old / "manifest.json")
    assert len(SceneDataset(old)) == 6 and len(SceneStore(old)) == 6
    shards = {p.name: p.read_bytes() for p in old.glob("*.parquet")}
    generate_dataset(old, 6, 5, OPTIONS, resume=True, progress=False)
    assert sorted(p.name for p in old.iterdir()) == ["_manifest.json", "shard-00000.parquet", "shard-00001.parquet"]
    assert {p.name: p.read_bytes() for p in old.glob("*.parquet")} == shards
    assert pq.read_table(old).num_rows == 6


def test_a_folder_without_a_manifest_is_not_a_dataset(generated, tmp_path):
    bare = _copy(generated, tmp_path / "bare")
    (bare / "_manifest.json").unlink()
    for reader in (SceneDataset, SceneStore):
        with pytest.raises(DatasetError) as refused:
            reader(bare)
        message = str(refused.value)
        assert message.startswith(f"{bare}: not a dataset (no _manifest.json); write one with `python -m sim.generate --out DIR")
        assert "--resume" in message
    assert sorted(p.name for p in bare.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]  # nothing removed
    assert len(SceneDataset(bare / "shard-00000.parquet")) == 4  # a shard file still reads on its own


def test_a_parquet_file_the_manifest_does_not_list_is_refused(generated, tmp_path):
    stale = _copy(generated, tmp_path / "stale")
    shutil.copy(stale / "shard-00001.parquet", stale / "shard-00002.parquet")  # e.g. left by a larger run
    with pytest.raises(DatasetError, match=r"stale: shard-00002.parquet not listed in _manifest.json: a Parquet reader "
                                           r"of the directory would read it"):
        SceneDataset(stale)
    assert (stale / "shard-00002.parquet").exists()


def _rows():
    scenes = [make_scene("s_pos", seed=1), make_scene("s_neg", sample_type="neg", seed=2),
              make_scene("s_rec", sample_type="rec", seed=3)]
    return [scene_to_row(s, "train") for s in scenes]


def _dataset(directory, rows, table=None):
    """A one-shard dataset of `rows` (or of `table`, written as given) with its manifest."""
    path = write_shard(directory / "shard-00000.parquet", rows)
    if table is not None:
        pq.write_table(table, path)
    write_manifest(directory, {"shards": [{"file": path.name, "rows": len(rows)}]})
    return path


def _edit_scene_json(row, **sim_fields):
    data = json.loads(row["scene_json"])
    data["sim"].update(sim_fields)
    return dict(row, scene_json=json.dumps(data))


def test_a_scene_whose_ground_truth_has_seven_poses_is_named(tmp_path):
    rows = _rows()
    short = json.loads(rows[1]["scene_json"])["sim"]["future"][:7]
    path = _dataset(tmp_path, [rows[0], _edit_scene_json(rows[1], future=short), rows[2]])
    scenes = SceneDataset(tmp_path).scenes(images=False)
    assert next(scenes).token == "s_pos"
    with pytest.raises(DatasetError) as refused:
        next(scenes)
    assert str(refused.value).startswith(f"{path}: row 1: scene 's_neg': future: 7 poses of shape (3,), expected 10 "
                                         "poses [x, y, heading] 0.5 s apart (t = 0.5 ... 5 s; the plan is the first 8)")
    store = SceneStore(tmp_path)  # the columns are fine; the scene JSON is checked when the scene is decoded
    assert store.scene(0).token == "s_pos"
    with pytest.raises(DatasetError, match=rf"^{path} \(store row 1\): scene 's_neg': future: 7 poses"):
        store.scene(1)


def test_a_negative_trajectory_of_nine_poses_is_named(tmp_path):
    rows = _rows()
    long = json.loads(rows[1]["scene_json"])["sim"]["negative_trajectory"][:9]
    path = _dataset(tmp_path, [_edit_scene_json(rows[1], negative_trajectory=long)])
    with pytest.raises(DatasetError, match=rf"^{path}: row 0: scene 's_neg': negative_trajectory: 9 poses"):
        list(SceneDataset(tmp_path).scenes(images=False))


def test_optional_trajectories_are_stored_as_variable_lists_and_read_as_the_schema_fixed_type(tmp_path):
    """pyarrow < 26 cannot read null rows of a fixed-size list from Parquet: the nullable columns are stored as
    variable-length lists, counted when read (a stored row of 9 poses is named) and cast back."""
    rows = _rows()
    path = _dataset(tmp_path, rows)
    stored = pq.read_schema(path)
    for name in OPTIONAL_TRAJECTORY_COLUMNS:
        assert pa.types.is_list(stored.field(name).type)
    assert pa.types.is_fixed_size_list(stored.field("future").type)
    table = SceneDataset(tmp_path).read(["negative_trajectory", "recovery_trajectory"])
    assert table.schema.field("negative_trajectory").type.equals(SCHEMA.field("negative_trajectory").type)
    assert table["negative_trajectory"].null_count == 2 and table["recovery_trajectory"].null_count == 2
    np.testing.assert_allclose(fixed_list_to_numpy(table["negative_trajectory"], (10, 3))[1],
                               np.asarray(rows[1]["negative_trajectory"]), atol=1e-6)
    table = pq.read_table(path)
    negatives = table["negative_trajectory"].to_pylist()
    negatives[1] = negatives[1][:9]
    short = table.set_column(table.schema.get_field_index("negative_trajectory"), "negative_trajectory",
                             pa.array(negatives, table.schema.field("negative_trajectory").type))
    _dataset(tmp_path, rows, table=short)
    with pytest.raises(DatasetError, match=rf"^{path}: row 1: scene 's_neg': negative_trajectory: 9 poses"):
        SceneDataset(tmp_path).read(["negative_trajectory"])


def test_old_pyarrow_reading_an_old_shard_is_told_what_to_do():
    error = ValueError("Expected all lists to be of size=10 but index 1 had size=0")
    assert "install pyarrow >= 26" in old_pyarrow_hint(error, "25.0.1")
    assert old_pyarrow_hint(error, "26.0.1") == "" and old_pyarrow_hint(ValueError("other"), "25.0.1") == ""


def test_a_non_finite_pose_in_a_trajectory_column_is_named(tmp_path):
    rows = _rows()
    bad = [list(p) for p in rows[2]["recovery_trajectory"]]
    bad[3][1] = float("nan")
    path = _dataset(tmp_path, [rows[0], rows[1], dict(rows[2], recovery_trajectory=bad)])
    dataset = SceneDataset(tmp_path)
    assert dataset.read(["token", "future"]).num_rows == 3  # the other columns are fine
    with pytest.raises(DatasetError, match=rf"^{path}: row 2: scene 's_rec': recovery_trajectory: non-finite values "
                                           r"at pose\(s\) \[3\] of 10"):
        dataset.read(["recovery_trajectory"])
    with pytest.raises(DatasetError, match=rf"^{path}: scene 's_rec': recovery_trajectory: non-finite"):
        dataset.read(["recovery_trajectory"], where={"sample_type": "rec"})  # under a filter: no row number
    with pytest.raises(DatasetError, match=r"row 2: scene 's_rec': recovery_trajectory: non-finite"):
        SceneStore(tmp_path)


def test_a_missing_ground_truth_is_named(tmp_path):
    rows = _rows()
    path = _dataset(tmp_path, [rows[0], dict(rows[1], future=None)])
    with pytest.raises(DatasetError, match=rf"^{path}: row 1: scene 's_neg': future: missing \(0 poses\)"):
        SceneDataset(tmp_path).read(["future"])


def test_a_trajectory_column_of_another_writer_is_counted_row_by_row(tmp_path):
    """A shard whose `future` is a variable-length list (not the schema's fixed 10): rows are counted."""
    rows = _rows()
    futures = [[list(map(float, p)) for p in r["future"]] for r in rows]
    table = pa.Table.from_pylist(rows, schema=pq.read_schema(write_shard(tmp_path / "tmp.parquet", rows)))
    (tmp_path / "tmp.parquet").unlink()
    good = table.set_column(table.schema.get_field_index("future"), "future",
                            pa.array(futures, pa.list_(pa.list_(pa.float64()))))
    _dataset(tmp_path, rows, table=good)
    np.testing.assert_allclose(np.asarray(SceneDataset(tmp_path).read(["future"])["future"].to_pylist()),
                               np.asarray(futures), atol=1e-6)  # cast to the schema's (10, 3) float32
    futures[2] = futures[2][:8]
    bad = table.set_column(table.schema.get_field_index("future"), "future",
                           pa.array(futures, pa.list_(pa.list_(pa.float64()))))
    path = _dataset(tmp_path, rows, table=bad)
    with pytest.raises(DatasetError, match=rf"^{path}: row 2: scene 's_rec': future: 8 poses of shape \(3,\), expected 10"):
        SceneDataset(tmp_path).read(["token", "future"])


def test_the_writer_refuses_a_trajectory_of_the_wrong_length_or_with_nan():
    scene = make_scene("w", sample_type="neg")
    scene.negative_trajectory = scene.negative_trajectory[:8]
    with pytest.raises(DatasetError, match=r"^scene 'w': negative_trajectory: 8 poses of shape \(3,\), expected 10"):
        scene_to_row(scene, "train")
    scene = make_scene("w")
    scene.future = scene.future.copy()
    scene.future[9, 2] = np.inf
    with pytest.raises(DatasetError, match=r"^scene 'w': future: non-finite values at pose\(s\) \[9\] of 10"):
        scene_to_row(scene, "train")
    scene.future = None
    with pytest.raises(DatasetError, match=r"^scene 'w': future: missing"):
        scene_to_row(scene, "train")


def test_check_trajectory_accepts_ten_finite_poses_and_names_ragged_input():
    poses = np.zeros((10, 3))
    assert check_trajectory(poses, "t").shape == (10, 3)
    with pytest.raises(DatasetError, match=r"^t: poses of unequal length"):
        check_trajectory([[0, 0, 0]] * 9 + [[0, 0]], "t")
    with pytest.raises(DatasetError, match=r"^t: 10 poses of shape \(2,\), expected 10 poses"):
        check_trajectory(np.zeros((10, 2)), "t")


def test_a_human_plan_that_is_not_eight_poses_is_named(tmp_path):
    scene = make_scene("h")
    scene.human_trajectory = scene.future[:8].copy()
    row = scene_to_row(scene, "train")
    data = json.loads(row["scene_json"])
    data["human_trajectory"] = data["human_trajectory"][:7]
    path = _dataset(tmp_path, [dict(row, scene_json=json.dumps(data))])
    with pytest.raises(DatasetError, match=rf"^{path}: row 0: scene 'h': .*human_trajectory: expected 8 poses at "
                                           r"0.5 s \(t = 0.5 ... 4 s\), got 7"):
        list(SceneDataset(tmp_path).scenes())


def test_the_scene_store_keeps_the_last_cache_size_scenes_decoded_and_decodes_equal_scenes_again(generated):
    kept, none = SceneStore(generated, cache_size=2), SceneStore(generated, cache_size=0)
    first = kept.scene(0)
    assert kept.scene(0) is first  # a cache hit is the decoded scene itself
    kept.scenes([1, 2])
    again = kept.scene(0)  # pushed out by two newer ones: decoded anew, equal to the first decode
    assert again is not first and again.token == first.token
    np.testing.assert_array_equal(again.future, first.future)
    np.testing.assert_array_equal(again.cameras[0].images[-1], first.cameras[0].images[-1])
    assert kept.decodes == 4  # rows 0, 1, 2 and 0 again
    assert none.scene(3) is not none.scene(3) and none.decodes == 2


def test_the_scene_cache_benchmark_reads_the_same_scenes_and_decodes_each_once_with_a_cache_that_holds_them(
        generated, tmp_path, load_benchmark):
    bench = load_benchmark("sft_scene_cache")
    out = tmp_path / "cache.json"
    assert bench.main(["--split", str(generated), "--steps", "9", "--batch-size", "2", "--sample-types",
                       "pos,neg,rec", "--caches", "0,16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["baseline"]["reads"] == result["candidate"]["reads"] == 18
    assert result["baseline"]["decodes"] == 18 and result["candidate"]["decodes"] == 6  # the split's 6 scenes
    assert result["same_scenes"] is True and result["ratio"] > 0
