"""Damaged policy directories: odd manifests and truncated safetensors files get errors naming the file and
what is wrong, from the cheap check (`check_policy_dir`) and from loading alike; the files stay as they were."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from policy_scenes import tiny_policy
from rl.policy.policy_dir import CheckpointError, check_policy_dir, check_safetensors
from rl.policy.policy import SpanVLAPolicy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt_errors") / "policy"
    tiny_policy().save(path)
    return path


@pytest.fixture
def copy(saved, tmp_path):
    target = tmp_path / "policy"
    shutil.copytree(saved, target)
    return target


def _both_raise(path, pattern: str) -> None:
    """The cheap check and the full load give the same error."""
    with pytest.raises(CheckpointError, match=pattern):
        check_policy_dir(path)
    with pytest.raises(CheckpointError, match=pattern):
        SpanVLAPolicy.load(path)


def test_an_intact_directory_passes_the_check(saved):
    info = check_policy_dir(saved)
    assert info.has_codebook and info.config.expert.horizon == 8
    assert "expert.safetensors" in info.manifest["files"]
    assert "normalizer.spread" in " ".join(check_safetensors(saved / "expert.safetensors"))


@pytest.mark.parametrize("manifest, pattern", [
    (["format", "files"], r"manifest.json: expected a JSON object with keys format, format_version, files; found a list"),
    ({"format": "spanvla-policy", "files": []}, r"manifest.json: missing key\(s\) format_version"),
    ({"format": "spanvla-policy", "format_version": "1", "files": []}, r"manifest.json: format_version must be an integer, found '1'"),
    ({"format": "spanvla-policy", "format_version": 7, "files": []}, r"manifest.json: format_version 7, this code reads 1 \(written by a newer"),
    ({"format": "spanvla-policy", "format_version": 1, "files": "vlm"}, r"manifest.json: files must be a list of file names, found 'vlm'"),
    ({"format": "other", "format_version": 1, "files": []}, r"manifest.json: format 'other', expected 'spanvla-policy'"),
])
def test_odd_manifests_are_named(copy, manifest, pattern):
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _both_raise(copy, pattern)


def test_a_policy_config_with_a_wrong_value_is_named(copy):
    config = json.loads((copy / "policy_config.json").read_text())
    config["plan_source"] = "trajectories"
    (copy / "policy_config.json").write_text(json.dumps(config))
    _both_raise(copy, r"policy_config.json: policy.plan_source='trajectories': expected one of")


def test_a_policy_saved_with_the_old_action_source_key_loads_with_it_as_plan_source(copy):
    config = json.loads((copy / "policy_config.json").read_text())
    config.pop("plan_source")
    config["action_source"] = "tokens"  # the key's name before policy.plan_source
    (copy / "policy_config.json").write_text(json.dumps(config))
    assert SpanVLAPolicy.load(copy).config.plan_source == "tokens"


@pytest.mark.parametrize("name", ["expert.safetensors", "vlm/model.safetensors"])
def test_truncated_weights_name_the_file_and_the_sizes(copy, name):
    file = copy / name
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    _both_raise(copy, rf"{file}: truncated \({len(data) // 2} bytes; its header describes {len(data)}\)")
    file.write_bytes(data[:100])
    _both_raise(copy, rf"{file}: truncated \(100 bytes; its header alone needs \d+\)")
    file.write_bytes(data[:3])
    _both_raise(copy, rf"{file}: 3 bytes, too short for a safetensors file")
    assert file.read_bytes() == data[:3]  # reading never rewrites what is there


def test_a_missing_listed_file_is_named(copy):
    (copy / "codebook.json").unlink()
    _both_raise(copy, rf"{copy / 'codebook.json'} is missing \(listed in .*manifest.json\)")
