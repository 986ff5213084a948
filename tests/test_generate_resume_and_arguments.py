"""`python -m sim.generate`: --resume refuses other options (naming each, writing nothing), leaves no shard of
a larger run behind, completes an interrupted run; bad arguments are refused before anything is generated."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import sim.generate
from sim.cameras import CameraConfig
from sim.dataset import DatasetError, SceneDataset
from sim.generate import MAX_SEED, GeneratorOptions, ResumeError, generate_dataset, main
from sim.scenarios import FAMILIES

TWO_FAMILIES = ",".join(FAMILIES[:2])
# 6 scenes in shards of 4: two shards; 16 x 32 images keep it fast.
BASE = ["--families", TWO_FAMILIES, "--neg-share", "0.25", "--rec-share", "0.25", "--height", "16", "--width", "32",
        "--shard-size", "4", "--quiet"]
SMALL = GeneratorOptions(tuple(FAMILIES[:2]), neg_share=0.25, rec_share=0.25, camera=CameraConfig(height=16, width=32),
                         shard_size=4)


def _snapshot(directory):
    """Every file under `directory`: its bytes and modification time."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _with(options: list[str], **changes: str) -> list[str]:
    out = list(options)
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        out[out.index(flag) + 1] = value
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A 6-scene dataset made by the command line with seed 1, and a snapshot of its files."""
    out = tmp_path_factory.mktemp("resume") / "ds"
    assert main(["--out", str(out), "--num-scenes", "6", "--seed", "1", *BASE]) == 0
    return out, _snapshot(out)


@pytest.mark.parametrize("changes, named", [
    ({"seed": "2"}, ["--seed: the dataset has 1, given 2"]),
    ({"neg_share": "0.5", "height": "24"}, ["--neg-share: the dataset has 0.25, given 0.5",
                                            "--height: the dataset has 16, given 24"]),
    ({"families": FAMILIES[0]}, [f"--families: the dataset has {TWO_FAMILIES}, given {FAMILIES[0]}"]),
    ({"shard_size": "2"}, ["--shard-size: the dataset has 4, given 2"]),
    ({"num_scenes": "4"}, ["--num-scenes (or --splits NAME=COUNT): the dataset has 6, given 4"]),
    ({"num_scenes": "8"}, ["--num-scenes (or --splits NAME=COUNT): the dataset has 6, given 8"]),
])
def test_resume_with_other_options_is_refused_naming_each_and_writes_nothing(made, capsys, changes, named):
    out, before = made
    argv = _with(["--out", str(out), "--num-scenes", "6", "--seed", "1", *BASE], **changes)
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: --resume with options that differ from the dataset's (_manifest.json); "
                          "nothing was written")
    for line in named:
        assert f"\n  {line}\n" in err
    assert err.count("\n  ") == len(named)  # only the options that differ
    assert "pass --overwrite" in err
    assert _snapshot(out) == before  # every shard and the manifest untouched


def test_resume_without_images_is_refused(made, capsys):
    out, before = made
    assert main(["--out", str(out), "--num-scenes", "6", "--seed", "1", *BASE, "--no-images", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--no-images: the dataset has False, given True" in err
    assert "--height: the dataset has 16, given (not set)" in err
    assert _snapshot(out) == before


def test_a_smaller_resume_leaves_no_stale_shard_readable(made, tmp_path, capsys):
    out, before = made
    assert main(["--out", str(out), "--num-scenes", "4", "--seed", "1", *BASE, "--resume"]) == 2
    assert "the dataset has 6, given 4" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert pq.read_table(out).num_rows == len(SceneDataset(out)) == 6
    # Replacing it is explicit, and removes the shard the smaller dataset does not have.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, (data, _) in before.items():
        (copy / name).write_bytes(data)
    assert main(["--out", str(copy), "--num-scenes", "4", "--seed", "1", *BASE, "--overwrite"]) == 0
    assert sorted(p.name for p in copy.iterdir()) == ["_manifest.json", "shard-00000.parquet"]
    assert pq.read_table(copy).num_rows == len(SceneDataset(copy)) == 4


def test_resume_with_the_same_options_keeps_the_dataset(made, capsys):
    out, before = made
    assert main(["--out", str(out), "--num-scenes", "6", "--seed", "1", *BASE, "--resume"]) == 0
    after = _snapshot(out)
    assert {name: data for name, (data, _) in after.items()} == {name: data for name, (data, _) in before.items()}
    for shard in ("shard-00000.parquet", "shard-00001.parquet"):
        assert after[shard][1] == before[shard][1]  # not written again


def test_an_interrupted_run_is_not_a_dataset_and_resume_completes_it(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    real = sim.generate.write_shard

    def dies_on_the_second_shard(path, rows, metadata=None):
        if path.name == "shard-00001.parquet":
            raise KeyboardInterrupt("killed")
        return real(path, rows, metadata)

    monkeypatch.setattr(sim.generate, "write_shard", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, 6, 1, SMALL, progress=False)
    monkeypatch.setattr(sim.generate, "write_shard", real)
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "shard-00000.parquet"]
    assert json.loads((out / "_manifest.json").read_text())["complete"] is False
    with pytest.raises(DatasetError, match=r"_manifest.json: an incomplete dataset .*--resume"):
        SceneDataset(out)
    first = (out / "shard-00000.parquet").stat().st_mtime_ns
    with pytest.raises(ResumeError, match=r"--seed: the dataset has 1, given 2"):
        generate_dataset(out, 6, 2, SMALL, resume=True, progress=False)
    manifest = generate_dataset(out, 6, 1, SMALL, resume=True, progress=False)
    assert manifest["complete"] is True and (out / "shard-00000.parquet").stat().st_mtime_ns == first
    assert len(SceneDataset(out)) == 6


def test_shards_of_a_run_without_manifest_are_checked_on_resume(made, tmp_path):
    """A run of the older layout died before its manifest: each shard's own record is compared."""
    out, before = made
    copy = tmp_path / "old"
    copy.mkdir()
    (copy / "shard-00000.parquet").write_bytes(before["shard-00000.parquet"][0])
    with pytest.raises(ResumeError) as refused:
        generate_dataset(copy, 6, 2, SMALL, resume=True, progress=False)
    assert "(its shards)" in str(refused.value)
    assert "shard-00000.parquet: --seed: the dataset has 1, given 2" in str(refused.value)
    with pytest.raises(ResumeError, match=r"shard-00000.parquet: holds scenes 0.. \(4 rows\), this dataset's shard 0 "
                                          r"holds scenes 0.. \(3 rows\): another --num-scenes"):
        generate_dataset(copy, 3, 1, SMALL, resume=True, progress=False)
    assert sorted(p.name for p in copy.iterdir()) == ["shard-00000.parquet"]
    generate_dataset(copy, 6, 1, SMALL, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == {name: data for name, (data, _) in before.items()}


def test_splits_resume_refuses_other_splits_before_writing_any(tmp_path, capsys):
    out = tmp_path / "data"
    splits = ["--out", str(out), "--seed", "4", *BASE]
    assert main([*splits, "--splits", "train=3,val=2"]) == 0
    before = _snapshot(out)
    assert main([*splits, "--splits", "train=3", "--resume"]) == 2
    assert "--splits: the dataset has train=3,val=2, given train=3" in capsys.readouterr().err
    assert main([*splits, "--splits", "train=3,val=3", "--resume"]) == 2
    assert "--splits: the dataset has train=3,val=2, given train=3,val=3" in capsys.readouterr().err
    assert _snapshot(out) == before
    # Without the summary (a run stopped before writing it), each split is checked before any is written:
    # train matches and would be kept, val differs, so nothing is written at all.
    (out / "_splits.json").unlink()
    before = _snapshot(out)
    assert main([*splits, "--splits", "train=3,val=3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'val'}: --resume with options" in err and "the dataset has 2, given 3" in err
    assert _snapshot(out) == before  # train's manifest was not rewritten either


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path / "x"), "--num-scenes", "2", "--resume", "--overwrite"])
    assert exited.value.code == 2
    assert "argument --overwrite: not allowed with argument --resume" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pass one of them"):
        generate_dataset(tmp_path / "x", 2, 0, SMALL, resume=True, overwrite=True, progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, message", [
    (["--num-scenes", "2", "--seed", "1e20"], "argument --seed: expected an integer in [0, "),
    (["--num-scenes", "2", "--seed", str(10**20)], f"argument --seed: expected an integer in [0, {MAX_SEED}], got {10**20}"),
    (["--num-scenes", "2", "--seed", "-1"], "argument --seed: expected an integer in [0, "),
    (["--num-scenes", "0"], "argument --num-scenes: expected an integer in [1, 10000000], got 0"),
    (["--splits", "train=0"], "argument --splits: split 'train' has 0 scenes; a split needs 1 to 10000000"),
    (["--splits", "train=2,val=0"], "argument --splits: split 'val' has 0 scenes"),
    (["--splits", "train=2,train=3"], "argument --splits: split 'train' is given twice"),
    (["--splits", "train=-1"], "argument --splits: 'train=-1' is not NAME=COUNT"),
    (["--splits", "../up=2"], "argument --splits: '../up=2' is not NAME=COUNT"),
    (["--num-scenes", "2", "--split", "a/b"], "argument --split: 'a/b' is not a split name"),
    (["--num-scenes", "2", "--neg-share", "nan"], "argument --neg-share: expected a number in [0, 1], got nan"),
    (["--num-scenes", "2", "--rec-share", "1.5"], "argument --rec-share: expected a number in [0, 1], got 1.5"),
])
def test_bad_arguments_are_refused_before_generating(tmp_path, capsys, args, message):
    out = tmp_path / "ds"
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(out), "--quiet", "--no-images", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_python_api_refuses_the_same_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"--seed: 100000000000000000000 is not an integer in \[0, "):
        generate_dataset(tmp_path / "a", 2, 10**20, SMALL, progress=False)
    with pytest.raises(ValueError, match=r"split 'train': 0 scenes; a split needs 1 to"):
        generate_dataset(tmp_path / "a", 0, 1, SMALL, progress=False)
    with pytest.raises(ValueError, match=r"--splits: no split given"):
        sim.generate.generate_splits(tmp_path / "a", {}, 1, SMALL, progress=False)
    assert not (tmp_path / "a").exists()


def test_the_largest_seed_makes_a_dataset_in_the_last_split_slot(tmp_path):
    # "split949" hashes to the last of the 997 extra slots: the largest scene seed a split can have.
    assert sim.generate.split_base_seed(0, "split949") == (3 + 996) * sim.generate.SEEDS_PER_SPLIT
    options = GeneratorOptions(tuple(FAMILIES[:1]), neg_share=0.0, rec_share=0.0, camera=None)
    assert main(["--out", str(tmp_path), "--num-scenes", "1", "--split", "split949", "--seed", str(MAX_SEED),
                 "--families", FAMILIES[0], "--no-images", "--quiet"]) == 0
    seed = SceneDataset(tmp_path).read(["seed"])["seed"].to_pylist()
    assert seed == [sim.generate.scene_specs(1, MAX_SEED, "split949", options)[0].seed]
    assert seed[0] + sim.generate.SEEDS_PER_SPLIT - 1 == 2**63 - 1  # the last seed of that slot is int64's largest


def test_an_older_datasets_splits_json_is_still_checked_on_resume_and_replaced_by_the_underscored_name(tmp_path,
                                                                                                        capsys):
    out = tmp_path / "data"
    splits = ["--out", str(out), "--seed", "4", *BASE]
    assert main([*splits, "--splits", "train=3,val=2"]) == 0
    (out / "_splits.json").rename(out / "splits.json")  # as older versions wrote it
    assert main([*splits, "--splits", "train=3", "--resume"]) == 2
    assert "differ from the dataset's (splits.json)" in capsys.readouterr().err
    assert main([*splits, "--splits", "train=3,val=2", "--resume"]) == 0
    assert (out / "_splits.json").is_file() and not (out / "splits.json").exists()
