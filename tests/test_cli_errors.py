"""Entry points given bad input: a clear message naming the key or file, a non-zero exit status, no traceback,
and for `rl.train` no Ray started (the checks run before `ray.init`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/tiny_smoke.yaml"

# Runs `rl.train`'s main on each argv in a fresh interpreter (so no Ray of another test is around) and
# reports its exit status, its stderr and whether Ray was initialised.
_TRAIN_PROBE = """
import contextlib, io, json, sys
import ray
from rl.train import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    results.append({"rc": rc, "stderr": err.getvalue(), "ray": ray.is_initialized()})
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def train_results(tiny_grpo_assets):
    a = tiny_grpo_assets
    base = ["--config", CONFIG, f"policy_init={a['policy']}", f"data.train={a['train']}", f"data.val={a['val']}"]
    cases = {
        "reward_name": base + ["scorer.rewards=[{name: pdms}, {name: negativ_l2, weight: -5.0}]"],
        "not_a_policy": base + [f"policy_init={a['train']}"],
        "target_source": base + ["grpo.train_target=joint", "rollout.action_source=tokens"],
        "no_data": base + [f"data.train={a['root'] / 'missing'}"],
    }
    env = {**os.environ, "RAY_ADDRESS": ""}
    run = subprocess.run([sys.executable, "-c", _TRAIN_PROBE, json.dumps(list(cases.values()))], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULTS "))
    return dict(zip(cases, json.loads(line[len("RESULTS "):])))


@pytest.mark.parametrize("case, message", [
    ("reward_name", "error: scorer.rewards[1].name='negativ_l2': no registered reward of that name; did you mean 'negative_l2'?"),
    ("not_a_policy", "/train/manifest.json is missing: not a policy checkpoint"),
    ("target_source", "error: grpo.train_target='joint' trains on the expert's flow steps, which only "
                      "rollout.action_source='expert' samples (got rollout.action_source='tokens')"),
    ("no_data", "/missing: no such dataset"),
])
def test_train_reports_bad_input_before_ray_starts(train_results, case, message):
    result = train_results[case]
    assert result["rc"] == 2
    assert message in result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert result["ray"] is False


def test_train_help_says_reward_specs_are_code(capsys):
    from rl.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "reward specs are code" in text
    assert "Use only configs and plug-in files you trust" in text


# --- SFT ---------------------------------------------------------------------------------------------------------

def test_sft_without_its_codebook_stops_before_writing(tiny_grpo_assets, tmp_path, capsys):
    from rl.sft import main

    out = tmp_path / "sft"
    rc = main(["--config", CONFIG, "stage=vlm", f"data.train={tiny_grpo_assets['train']}", f"sft.out_dir={out}",
               f"policy.codebook.path={tmp_path / 'codebook.json'}", "logging.wandb=false"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"error: policy.codebook.path={tmp_path / 'codebook.json'}: codebook file not found" in err
    assert not out.exists()


def test_sft_from_a_corrupt_init_names_the_file_and_keeps_earlier_output(tiny_grpo_assets, tmp_path, capsys):
    import shutil

    from rl.sft import main

    init = tmp_path / "init"
    shutil.copytree(tiny_grpo_assets["policy"], init)
    expert = init / "expert.safetensors"
    expert.write_bytes(expert.read_bytes()[:1000])
    out = tmp_path / "sft"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    rc = main(["--config", CONFIG, "stage=expert", f"sft.init={init}", f"data.train={tiny_grpo_assets['train']}",
               f"sft.out_dir={out}", "logging.wandb=false"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"error: sft.init={init}: {expert}: truncated (1000 bytes; its header" in err
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'


# --- evaluation ---------------------------------------------------------------------------------------------------

def test_evaluate_accepts_long_sample_type_names_and_refuses_unknown_ones(tiny_grpo_assets, capsys):
    from rl.evaluate import main, parse_sample_types

    assert parse_sample_types("positive,rec") == ["pos", "rec"]
    assert parse_sample_types("all") is None
    rc = main(["--baseline", "constant_velocity", "--scenes", str(tiny_grpo_assets["val"]), "--sample-types", "positive"])
    assert rc == 0
    assert "[pos]" in capsys.readouterr().out
    rc = main(["--baseline", "constant_velocity", "--scenes", str(tiny_grpo_assets["val"]), "--sample-types", "positiv"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: --sample-types 'positiv': unknown sample type(s) ['positiv']; valid: pos, neg, rec" in err


def _scene_folder(tmp_path, assets, good: int, bad: int) -> Path:
    """A folder of scene JSON files: `good` scenes of the tiny dataset and `bad` files cut short."""
    from rl.scene_store import SceneStore
    from sim.scene_json import write_scene_json

    folder = tmp_path / "scenes"
    folder.mkdir()
    store = SceneStore(assets["val"])
    for i in range(good):
        write_scene_json(folder / f"good_{i}.json", store.scene(i))
    for i in range(bad):
        (folder / f"bad_{i}.json").write_text('{"ego": ')
    return folder


def test_evaluation_where_every_scene_fails_exits_non_zero(tiny_grpo_assets, tmp_path, capsys):
    from rl.evaluate import main

    folder = _scene_folder(tmp_path, tiny_grpo_assets, good=0, bad=2)
    rc = main(["--baseline", "constant_velocity", "--scenes", str(folder), "--sample-types", "all",
               "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: NAVSIM v1: all 2 scenes failed, nothing was scored" in err
    assert "bad_0: reading: SceneJsonError" in err
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 + 1  # header, both failed scenes with their errors, the average row


def test_evaluation_where_some_scenes_fail_says_how_many(tiny_grpo_assets, tmp_path, capsys):
    from rl.evaluate import main

    folder = _scene_folder(tmp_path, tiny_grpo_assets, good=2, bad=1)
    rc = main(["--baseline", "constant_velocity", "--scenes", str(folder), "--sample-types", "all"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "warning: NAVSIM v1: 1 of 3 scenes failed and are left out of the average" in captured.err
    assert "average" in captured.out


def test_evaluate_names_a_damaged_checkpoint(tiny_grpo_assets, tmp_path, capsys):
    import shutil

    from rl.evaluate import main

    policy = tmp_path / "policy"
    shutil.copytree(tiny_grpo_assets["policy"], policy)
    manifest = json.loads((policy / "manifest.json").read_text())
    (policy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
    rc = main(["--checkpoint", str(policy), "--scenes", str(tiny_grpo_assets["val"])])
    assert rc == 2
    assert (f"error: --checkpoint {policy}: {policy / 'manifest.json'}: format_version 2, this code reads 1"
            in capsys.readouterr().err)
