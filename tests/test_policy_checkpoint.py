"""Saving and loading the policy; the from_pretrained path; errors for bad checkpoint directories."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene, tiny_policy
from rl.policy.policy_dir import CheckpointError
from rl.policy.config import BackboneConfig, PolicyConfig
from rl.policy.policy import SpanVLAPolicy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    policy = tiny_policy()
    with torch.no_grad():  # move the normaliser and expert away from their initial values
        for p in policy.expert.parameters():
            p.add_(0.01)
    path = tmp_path_factory.mktemp("ckpt") / "policy"
    policy.save(path)
    return policy, path


def _copy(saved_path, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved_path, target)
    return target


def test_loading_gives_identical_outputs(saved):
    policy, path = saved
    loaded = SpanVLAPolicy.load(path)
    scene = make_policy_scene(0)
    for source in ("expert", "tokens"):
        a, b = policy.plan([scene], action_source=source), loaded.plan([scene], action_source=source)
        assert a.texts == b.texts and np.array_equal(a.trajectories, b.trajectories)
    ga = policy.sample_group(scene, 3, temperature=1.0, flow_noise=0.5, seed=4)
    gb = loaded.sample_group(scene, 3, temperature=1.0, flow_noise=0.5, seed=4)
    for x, y in zip(ga.samples, gb.samples):
        assert np.array_equal(x.completion.token_ids, y.completion.token_ids)
        assert np.array_equal(x.chain.logprobs, y.chain.logprobs)
    assert np.array_equal(loaded.codebook.segments, policy.codebook.segments)
    assert torch.equal(loaded.expert.normalizer.spread, policy.expert.normalizer.spread)
    assert bool(loaded.expert.normalizer.fitted)
    assert loaded.config == policy.config


def test_saving_is_atomic_and_replaces_an_older_checkpoint(saved, tmp_path):
    policy, _ = saved
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    policy.save(target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directory left behind
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and "codebook.json" in manifest["files"]
    assert (target / "vlm" / "model.safetensors").is_file() and (target / "expert.safetensors").is_file()


def test_missing_files_are_named(saved, tmp_path):
    _, path = saved
    target = _copy(path, tmp_path)
    (target / "expert.safetensors").unlink()
    with pytest.raises(CheckpointError, match="expert.safetensors is missing"):
        SpanVLAPolicy.load(target)
    (target / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json is missing: not a policy checkpoint, or a half-written one"):
        SpanVLAPolicy.load(target)
    with pytest.raises(CheckpointError, match="directory not found"):
        SpanVLAPolicy.load(tmp_path / "nowhere")


def test_missing_vlm_weights_are_named(saved, tmp_path):
    target = _copy(saved[1], tmp_path)
    (target / "vlm" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="vlm: no model.safetensors"):
        SpanVLAPolicy.load(target)


def test_wrong_format_version_is_named(saved, tmp_path):
    target = _copy(saved[1], tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["format_version"] = 7
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="manifest.json: format_version 7"):
        SpanVLAPolicy.load(target)


def test_config_and_weights_that_disagree_are_named(saved, tmp_path):
    target = _copy(saved[1], tmp_path)
    config = json.loads((target / "policy_config.json").read_text())
    config["expert"]["hidden_size"] = 48
    (target / "policy_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"expert.safetensors: .* has shape .*the config gives"):
        SpanVLAPolicy.load(target)
    config["expert"]["hidden_size"] = None
    config["expert"]["kv_layer_interval"] = 1
    config["expert"]["kv_layer_offset"] = 0
    (target / "policy_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="expert.safetensors: weights do not match the expert config"):
        SpanVLAPolicy.load(target)
    config["expert"]["kv_layer_interval"] = 2
    config["expert"]["kv_layer_offset"] = 1
    config["codebook"]["num_tokens"] = 300
    (target / "policy_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="embedding has 1024 rows, the tokenizer in .*tokenizer has 1068 tokens"):
        SpanVLAPolicy.load(target)
    config["unknown_section"] = 1
    (target / "policy_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="policy_config.json: not a valid policy config"):
        SpanVLAPolicy.load(target)


def test_pretrained_backbone_loads_through_from_pretrained(saved, tmp_path):
    """The Qwen2.5-VL-3B code path: a model directory holding weights and a tokenizer (here the tiny ones)."""
    policy, _ = saved
    model_dir = tmp_path / "qwen"
    policy.vlm.save_pretrained(model_dir)
    policy.tokenizer.save(model_dir)
    config = PolicyConfig(backbone=BackboneConfig(preset="pretrained", pretrained_path=str(model_dir),
                                                  image_height=32, image_width=64))
    built = SpanVLAPolicy.build(config)
    built.expert.load_state_dict(policy.expert.state_dict())
    built.set_codebook(policy.codebook)
    scene = make_policy_scene(1)
    a, b = policy.plan([scene]), built.plan([scene])
    assert a.texts == b.texts and np.array_equal(a.trajectories, b.trajectories)
    with pytest.raises(FileNotFoundError, match="VLM directory not found"):
        SpanVLAPolicy.build(PolicyConfig(backbone=BackboneConfig(preset="pretrained", pretrained_path=str(tmp_path / "none"))))
