"""`python -m sim.generate`: seeds, family and sample-type assignment, byte-for-byte determinism with any
number of workers, resumption, splits."""
from __future__ import annotations

import json

import pytest

from sim.cameras import CameraConfig
from sim.dataset import SceneDataset
from sim.generate import (
    SEEDS_PER_SPLIT,
    GeneratorOptions,
    generate_dataset,
    main,
    sample_type_of,
    scene_specs,
    split_base_seed,
)
from sim.scenarios import FAMILIES

TWO_FAMILIES = tuple(FAMILIES[:2])
SMALL = GeneratorOptions(TWO_FAMILIES, neg_share=0.25, rec_share=0.25, camera=CameraConfig(height=16, width=32), shard_size=4)


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_families_are_balanced_and_sample_types_hit_their_shares():
    options = GeneratorOptions(("a", "b", "c"), neg_share=0.2, rec_share=0.1)
    specs = scene_specs(300, 5, "train", options)
    assert [s.family for s in specs[:6]] == ["a", "b", "c", "a", "b", "c"]
    for family in "abc":
        types = [s.sample_type for s in specs if s.family == family]
        assert len(types) == 100
        assert abs(types.count("neg") - 20) <= 1 and abs(types.count("rec") - 10) <= 1
    assert [s.seed for s in specs[:3]] == [5, 6, 7]
    assert abs(sum(s.sample_type == "neg" for s in specs) - 60) <= 2 and abs(sum(s.sample_type == "rec" for s in specs) - 30) <= 2
    assert sample_type_of(0, 0, 0.0, 0.0) == "pos" and sample_type_of(0, 0, 1.0, 0.0) == "neg"
    assert sample_type_of(0, 1, 0.0, 1.0) == "rec"


def test_split_seed_ranges_are_disjoint():
    bases = {split: split_base_seed(3, split) for split in ("train", "val", "test", "extra")}
    ordered = sorted(bases.values())
    assert all(b - a >= SEEDS_PER_SPLIT for a, b in zip(ordered, ordered[1:]))
    assert bases["train"] == 3 and bases["val"] == 3 + SEEDS_PER_SPLIT


def test_same_seed_gives_the_same_files_with_one_or_two_workers(tmp_path):
    one = generate_dataset(tmp_path / "one", 6, 11, SMALL, workers=1, progress=False)
    generate_dataset(tmp_path / "two", 6, 11, SMALL, workers=2, progress=False)
    generate_dataset(tmp_path / "again", 6, 11, SMALL, workers=1, progress=False)
    files = _files(tmp_path / "one")
    assert sorted(files) == ["_manifest.json", "shard-00000.parquet", "shard-00001.parquet"]
    assert _files(tmp_path / "two") == files
    assert _files(tmp_path / "again") == files
    other = generate_dataset(tmp_path / "other", 6, 12, SMALL, workers=1, progress=False)
    assert _files(tmp_path / "other")["shard-00000.parquet"] != files["shard-00000.parquet"]

    manifest = json.loads(files["_manifest.json"])
    assert manifest == one
    assert manifest["num_scenes"] == 6 and manifest["split"] == "train" and manifest["image_size"] == [16, 32]
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 6
    assert manifest["scene_seeds"] == {"first": 11, "last": 16}
    assert other["scene_seeds"]["first"] == 12
    dataset = SceneDataset(tmp_path / "one")
    table = dataset.read(["family", "seed", "sample_type", "split", "image_height"])
    specs = scene_specs(6, 11, "train", SMALL)
    assert table["seed"].to_pylist() == [s.seed for s in specs]
    assert table["family"].to_pylist() == [s.family for s in specs]
    assert table["sample_type"].to_pylist() == [s.sample_type for s in specs]
    scene = next(dataset.scenes())
    assert scene.cameras[0].images.shape == (4, 16, 32, 3) and scene.family == specs[0].family


def test_resume_completes_a_run_and_existing_datasets_are_protected(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, 6, 1, SMALL, progress=False)
    complete = _files(out)
    with pytest.raises(FileExistsError, match="--overwrite.*--resume"):
        generate_dataset(out, 6, 1, SMALL, progress=False)
    (out / "shard-00001.parquet").unlink()  # a run that died before its last shard
    kept = (out / "shard-00000.parquet").stat().st_mtime_ns
    generate_dataset(out, 6, 1, SMALL, resume=True, progress=False)
    assert _files(out) == complete
    assert (out / "shard-00000.parquet").stat().st_mtime_ns == kept  # not rewritten
    generate_dataset(out, 4, 1, SMALL, overwrite=True, progress=False)
    assert sorted(_files(out)) == ["_manifest.json", "shard-00000.parquet"]


def test_command_line_splits_mode(tmp_path, capsys):
    rc = main(["--out", str(tmp_path), "--splits", "train=3,val=2", "--seed", "4", "--families", ",".join(TWO_FAMILIES),
               "--height", "16", "--width", "32", "--quiet"])
    assert rc == 0
    summary = json.loads((tmp_path / "_splits.json").read_text())
    assert summary["train"]["num_scenes"] == 3 and summary["val"]["num_scenes"] == 2
    # the summary's underscore keeps it out of Parquet readers: the parent folder reads as one table of both splits
    import pyarrow.dataset as ds

    assert sorted(ds.dataset(tmp_path, format="parquet").to_table(columns=["split"])["split"].to_pylist()) == \
        ["train"] * 3 + ["val"] * 2
    train_seeds = set(SceneDataset(tmp_path / "train").read(["seed"])["seed"].to_pylist())
    val_seeds = set(SceneDataset(tmp_path / "val").read(["seed"])["seed"].to_pylist())
    assert train_seeds == {4, 5, 6} and val_seeds == {4 + SEEDS_PER_SPLIT, 5 + SEEDS_PER_SPLIT}
    assert SceneDataset(tmp_path / "val").read(["split"])["split"].to_pylist() == ["val", "val"]
    assert "train: 3 scenes" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "x"), "--num-scenes", "2", "--families", "no_such_family"]) == 2


def test_a_scene_without_a_negative_variant_is_written_as_positive_and_noted(tmp_path, monkeypatch):
    import sim.scenarios

    real = sim.scenarios.make_scene
    specs = scene_specs(6, 2, "train", SMALL)
    refused = next(s for s in specs if s.sample_type != "pos")

    def make_scene(family, seed, sample_type="pos"):
        if seed == refused.seed and sample_type != "pos":
            raise sim.scenarios.GenerationError(f"family {family!r} seed {seed}: no variant")
        return real(family, seed, sample_type)

    monkeypatch.setattr(sim.scenarios, "make_scene", make_scene)
    manifest = generate_dataset(tmp_path, 6, 2, SMALL, progress=False)
    (note,) = manifest["substitutions"]
    assert note["index"] == refused.index and note["requested"] == refused.sample_type and note["written"] == "pos"
    assert "no variant" in note["reason"]
    types = SceneDataset(tmp_path).read(["sample_type"])["sample_type"].to_pylist()
    assert types[refused.index] == "pos"
    assert manifest["counts_by_sample_type"]["pos"] == types.count("pos") == [s.sample_type for s in specs].count("pos") + 1
