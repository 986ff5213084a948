"""python -m rewards.pdm: every scene's failure is a row, --out is checked first and replaced atomically,
exit codes say whether scenes failed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.pdm.__main__ import main
from sim.scene_json import scene_to_json

from pdm_builders import road_scene, straight_plan

REPO = Path(__file__).resolve().parents[1]


def scene_dict(token: str = "road", speed: float = 10.0) -> dict:
    return scene_to_json(road_scene(token=token), straight_plan(speed))


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def usage_error(argv, capsys) -> str:
    """Run the CLI expecting a usage error (exit 2, nothing scored); return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table: nothing was scored
    return captured.err


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_every_failing_scene_becomes_an_error_row_and_the_good_rows_are_kept(tmp_path, capsys):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write(scenes / "a_good.json", scene_dict("good"))
    bad_block = scene_dict("bad_block")
    del bad_block["sim"]["reasoning"]
    bad_block["sim"]["reasoning"] = {"text": "no mode"}  # a KeyError inside the reader
    write(scenes / "b_bad_block.json", bad_block)
    (scenes / "c_folder.json").mkdir()  # a folder named like a scene
    (scenes / "d_binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    seven = scene_dict("seven")
    seven["trajectory"] = seven["trajectory"][:7]
    write(scenes / "e_seven_poses.json", seven)
    out = tmp_path / "scores.jsonl"

    assert main([str(scenes), "--version", "both", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "4 of 5 scenes failed" in captured.err
    assert "error: b_bad_block.json: sim.reasoning: malformed (missing key 'mode')" in captured.err
    assert "error: c_folder.json: cannot read: Is a directory" in captured.err
    assert "error: d_binary.json: not a UTF-8 text file (byte 0x89 at offset 0)" in captured.err
    assert "error: e_seven_poses.json: trajectory: expected 8 poses at 0.5 s" in captured.err
    assert "a_good.json" in captured.out and "b_bad_block" not in captured.out

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["scene"] for r in rows] == ["a_good.json", "b_bad_block.json", "c_folder.json", "d_binary.json",
                                          "e_seven_poses.json"]
    assert rows[0]["v1"]["PDMS"] > 0.9 and rows[0]["v2"]["EPDMS"] > 0.9 and "error" not in rows[0]
    assert rows[4]["error"].startswith("e_seven_poses.json: trajectory: expected 8 poses at 0.5 s")
    assert all("error" in r and "v1" not in r for r in rows[1:])
    assert no_temporaries(tmp_path)


def test_a_run_where_every_scene_fails_keeps_the_existing_out_file(tmp_path, capsys):
    good = write(tmp_path / "good.json", scene_dict())
    out = tmp_path / "scores.jsonl"
    assert main([str(good), "--version", "v1", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert json.loads(before)["v1"]["PDMS"] > 0.9
    capsys.readouterr()

    bad = write(tmp_path / "bad.json", {"ego": {"x": 0, "y": 0}})
    assert main([str(bad), "--version", "v1", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "bad.json: ego.heading: missing" in captured.err
    assert "1 of 1 scenes failed" in captured.err
    assert f"no scene scored: {out} left as it was" in captured.err
    assert captured.out == ""  # no empty table headers after an input error
    assert out.read_bytes() == before
    assert no_temporaries(tmp_path)


def test_out_is_replaced_with_the_permissions_of_a_normal_file(tmp_path, capsys):
    good = write(tmp_path / "good.json", scene_dict())
    out = tmp_path / "scores.jsonl"
    out.write_text("old results\n")
    out.chmod(0o640)
    assert main([str(good), "--version", "v1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["scene"] == "good.json"
    assert out.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode (mkstemp's 0600 is not kept)


def test_an_out_that_is_an_input_is_refused_before_scoring(tmp_path, capsys):
    scene = write(tmp_path / "scene.json", scene_dict())
    original = scene.read_bytes()
    err = usage_error([str(scene), "--out", str(scene)], capsys)
    assert f"--out {scene}: is the input scene" in err
    link = tmp_path / "link.jsonl"
    link.symlink_to(scene)
    err = usage_error([str(scene), "--out", str(link)], capsys)
    assert "is the input scene" in err
    err = usage_error([str(tmp_path), "--out", str(tmp_path / "scene.json")], capsys)
    assert "is the input scene" in err
    err = usage_error([str(tmp_path), "--out", str(tmp_path / "new_scores.json")], capsys)
    assert "is a *.json file in the input folder" in err
    assert not (tmp_path / "new_scores.json").exists()
    assert scene.read_bytes() == original
    # a .jsonl next to the scenes is not an input: allowed
    assert main([str(tmp_path), "--version", "v1", "--out", str(tmp_path / "scores.jsonl")]) == 0
    assert scene.read_bytes() == original


def test_bad_out_paths_are_found_before_scoring(tmp_path, capsys):
    scene = write(tmp_path / "scene.json", scene_dict())
    err = usage_error([str(scene), "--out", str(tmp_path / "missing" / "scores.jsonl")], capsys)
    assert f"folder {tmp_path / 'missing'} does not exist" in err
    err = usage_error([str(scene), "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path}: is a directory" in err
    a_file = write(tmp_path / "notes.txt", "x")
    err = usage_error([str(scene), "--out", str(a_file / "scores.jsonl")], capsys)
    assert f"{a_file} is not a folder" in err
    assert no_temporaries(tmp_path)


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only folder, or for root (who writes anywhere)
    the read-only /sys; skips when there is none."""
    import tempfile

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (folder, Path("/sys")):
        try:
            handle, name = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(handle)
        os.unlink(name)
    pytest.skip("no folder here refuses this process a new file")


def test_an_out_folder_that_is_not_writable_is_found_before_scoring(tmp_path, capsys):
    scene = write(tmp_path / "scene.json", scene_dict())
    try:
        locked = unwritable_folder(tmp_path)
        err = usage_error([str(scene), "--out", str(locked / "scores.jsonl")], capsys)
    finally:
        (tmp_path / "locked").chmod(0o700)  # let pytest clean up
    assert f"--out {locked / 'scores.jsonl'}: cannot write in {locked}: Permission denied" in err


def test_an_empty_folder_is_an_error_naming_it(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no scenes here")
    err = usage_error([str(empty)], capsys)
    assert f"{empty}: folder has no *.json scene files" in err
    err = usage_error([str(tmp_path / "nowhere")], capsys)
    assert "nowhere: no such file or directory" in err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "exit status:" in text
    for line in ("0  every scene was scored", "1  some or all scenes failed", "2  nothing was tried"):
        assert line in text


def test_the_command_line_exit_status_and_summary(tmp_path):
    """The real `python -m rewards.pdm` process: exit status 1 and the summary when one of two scenes fails."""
    write(tmp_path / "good.json", scene_dict())
    write(tmp_path / "broken.json", "{not json")
    run = subprocess.run([sys.executable, "-m", "rewards.pdm", str(tmp_path), "--version", "v1"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "broken.json: not valid JSON" in run.stderr and "1 of 2 scenes failed" in run.stderr
    assert "good.json" in run.stdout
