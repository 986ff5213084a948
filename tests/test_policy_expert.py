"""The action expert: which VLM layers it reads, positions, history versus noise initialisation, horizons."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene, tiny_policy
from rl.policy.backbone import cache_layer_kv
from rl.policy.config import ExpertConfig, PolicyConfig, PolicyConfigError
from rl.policy.expert import resolve_kv_layers, rotary_cos_sin, rotate, rotation_matrices
from rl.policy.flow import draw_start
from rl.policy.inference import prefill
from rl.policy.policy import SpanVLAPolicy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy() -> SpanVLAPolicy:
    return tiny_policy()


def _context_inputs(policy, scenes):
    inputs, positions, cache, _ = prefill(policy, scenes)
    return inputs, positions, [(k.clone(), v.clone()) for k, v in cache_layer_kv(cache)]


def _velocity(policy, inputs, positions, layer_kv):
    ctx = policy.expert.context(layer_kv, inputs.attention_mask, positions.next_position, inputs.history)
    x = torch.linspace(-1, 1, policy.horizon * 3).view(1, policy.horizon, 3).expand(len(inputs.scene_tokens), -1, -1)
    with torch.no_grad():
        return policy.expert.velocity(x, torch.full((x.shape[0],), 0.4), ctx)


def test_the_default_reads_every_second_layer_with_the_vlm_head_geometry(policy):
    assert policy.expert.kv_layers == [1, 3, 5]
    assert len(policy.expert.layers) == 3
    layer = policy.expert.layers[0]
    text = policy.vlm.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert (layer.num_heads, layer.num_kv_heads, layer.head_dim) == (text.num_attention_heads, text.num_key_value_heads, head_dim)
    assert layer.qkv_proj.out_features == (text.num_attention_heads + 2 * text.num_key_value_heads) * head_dim
    assert policy.expert.hidden_size == text.hidden_size // 2


def test_only_the_selected_layers_change_the_output(policy):
    inputs, positions, layer_kv = _context_inputs(policy, [make_policy_scene(0)])
    reference = _velocity(policy, inputs, positions, layer_kv)
    for index in range(len(layer_kv)):
        changed = list(layer_kv)
        k, v = changed[index]
        changed[index] = (k + torch.randn_like(k), v + torch.randn_like(v))
        out = _velocity(policy, inputs, positions, changed)
        if index in policy.expert.kv_layers:
            assert (out - reference).abs().max() > 1e-3, f"layer {index} is read but does not matter"
        else:
            assert torch.equal(out, reference), f"layer {index} is not read but changes the output"


@pytest.mark.parametrize(
    "cfg, layers",
    [
        (ExpertConfig(), [1, 3, 5]),
        (ExpertConfig(kv_layer_interval=1, kv_layer_offset=0), [0, 1, 2, 3, 4, 5]),
        (ExpertConfig(kv_layer_interval=4, kv_layer_offset=3), [3]),
        (ExpertConfig(kv_layers=[-1]), [5]),
        (ExpertConfig(kv_layers=[4, 0]), [0, 4]),
    ],
)
def test_layer_selection(cfg, layers):
    assert resolve_kv_layers(cfg, 6) == layers


@pytest.mark.parametrize(
    "cfg, message",
    [
        (ExpertConfig(kv_layers=[2, 6]), "names VLM layer 6, but the VLM has 6 layers"),
        (ExpertConfig(kv_layers=[-7]), "names VLM layer -7"),
        (ExpertConfig(kv_layer_offset=6), "kv_layer_offset=6, but the VLM has 6 layers"),
    ],
)
def test_a_layer_the_vlm_lacks_is_a_clear_error(cfg, message):
    with pytest.raises(PolicyConfigError, match=message):
        SpanVLAPolicy.build(PolicyConfig(expert=cfg))


def test_suffix_rotary_equals_the_vlm_mrope_on_text_positions(policy):
    positions = torch.tensor([[300, 301, 302], [57, 58, 59]])
    text = policy.vlm.config.text_config
    cos, sin = rotary_cos_sin(positions, text.hidden_size // text.num_attention_heads, text.rope_parameters["rope_theta"])
    x = torch.zeros(2, 3, 8)
    vlm_cos, vlm_sin = policy.vlm.model.language_model.rotary_emb(x, positions[None].expand(3, -1, -1))
    torch.testing.assert_close(cos, vlm_cos)
    torch.testing.assert_close(sin, vlm_sin)
    # The expert applies the same rotation as one matrix per position.
    x = torch.randn(2, 3, 6, cos.shape[-1])
    torch.testing.assert_close(torch.matmul(x, rotation_matrices(cos, sin)), rotate(x, cos[:, :, None], sin[:, :, None]))


def test_suffix_positions_follow_the_prefix(policy):
    inputs, positions, _ = _context_inputs(policy, [make_policy_scene(0), make_policy_scene(1)])
    # Rows differ in length only by left padding: the next text position is one past each row's last.
    valid_max = positions.position_ids.masked_fill(~inputs.attention_mask.bool()[None], -1).amax((0, 2))
    assert torch.equal(positions.next_position, valid_max + 1)


def test_history_initialisation_starts_the_flow_at_a_his(policy):
    scene = make_policy_scene(2)
    group = policy.sample_group(scene, 2, temperature=0.0, flow_noise=0.0, seed=0)
    inputs = policy.collator().collate([scene])
    with torch.no_grad():
        a_his = policy.expert.prior_mean(inputs.history)[0].numpy()
    for sample in group.samples:
        np.testing.assert_allclose(sample.chain.states[0], a_his, rtol=0, atol=1e-6)
    # With flow noise the start is a_his + sigma0 * eps.
    noisy = policy.sample_group(scene, 64, temperature=0.0, flow_noise=0.5, seed=1, max_reasoning_tokens=2)
    eps = (np.stack([s.chain.states[0] for s in noisy.samples]) - a_his) / policy.config.expert.history_noise_std
    assert abs(eps.mean()) < 0.1 and abs(eps.std() - 1.0) < 0.1


def test_noise_initialisation_starts_from_a_standard_normal():
    policy = tiny_policy(PolicyConfig(expert=ExpertConfig(init="noise")))
    group = policy.sample_group(make_policy_scene(3), 64, temperature=0.0, flow_noise=0.0, seed=2, max_reasoning_tokens=2)
    starts = np.stack([s.chain.states[0] for s in group.samples])
    assert abs(starts.mean()) < 0.1 and abs(starts.std() - 1.0) < 0.1
    assert group.samples[0].chain.sigma0 == 1.0
    prior = torch.zeros(20000, 8, 3)
    draws = draw_start(prior, 1.0, True, torch.Generator().manual_seed(0))
    assert abs(draws.mean().item()) < 0.01 and abs(draws.std().item() - 1.0) < 0.01


@pytest.mark.parametrize("horizon, interval", [(10, 0.5), (50, 0.1)])
def test_any_horizon(horizon, interval):
    policy = tiny_policy(PolicyConfig(expert=ExpertConfig(horizon=horizon, interval_s=interval)))
    result = policy.plan([make_policy_scene(4)])
    assert result.trajectories.shape == (1, horizon, 3)
    assert np.isfinite(result.trajectories).all()
    tokens = policy.plan([make_policy_scene(4)], action_source="tokens")
    assert tokens.trajectories.shape == (1, horizon, 3)
