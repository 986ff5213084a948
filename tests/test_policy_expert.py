"""The action expert: which VLM layers it reads, positions, history versus noise initialisation, horizons."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene, tiny_policy
from rl.policy.backbone import cache_layer_kv
from rl.policy.config import ExpertConfig, PolicyConfig, PolicyConfigError
from rl.policy.expert import ActionExpert, resolve_kv_layers, rotary_cos_sin, rotate, rotation_matrices
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


# --- several poses per expert token ---------------------------------------------------------------------------
def _geometry(policy):
    from rl.policy.backbone import attention_geometry

    return attention_geometry(policy.vlm)


@pytest.mark.parametrize("horizon, k, tokens", [(8, 1, 8), (8, 2, 4), (8, 3, 3), (10, 4, 3), (50, 5, 10), (50, 10, 5)])
def test_the_suffix_has_one_token_per_chunk_of_k_poses(policy, horizon, k, tokens):
    expert = ActionExpert(ExpertConfig(horizon=horizon, interval_s=4.0 / horizon, waypoints_per_token=k),
                          _geometry(policy)).eval()
    assert expert.num_waypoint_tokens == tokens
    assert tuple(expert.waypoint_embedding.shape) == (tokens, expert.hidden_size)
    assert expert.waypoint_in.in_features == 3 * k and expert.out.out_features == 3 * k
    inputs, positions, layer_kv = _context_inputs(policy, [make_policy_scene(0), make_policy_scene(1)])
    ctx = expert.context(layer_kv, inputs.attention_mask, positions.next_position, inputs.history)
    prefix = inputs.attention_mask.shape[1]
    assert ctx.attn_mask.shape == (2, 1, 1, prefix + 1 + tokens)
    assert ctx.rotation.shape[:2] == (2, 1 + tokens)
    x = torch.randn(2, horizon, 3)
    with torch.no_grad():
        v = expert.velocity(x, torch.full((2,), 0.4), ctx)
    assert v.shape == (2, horizon, 3) and torch.isfinite(v).all()
    # Token i reads poses i*k .. i*k + k - 1 as (x, y, heading) triples, the last token zero-padded.
    chunks = expert._to_tokens(x)
    assert chunks.shape == (2, tokens, 3 * k)
    for i in range(tokens):
        poses = x[:, i * k:(i + 1) * k].reshape(2, -1)
        assert torch.equal(chunks[:, i, :poses.shape[1]], poses)
        assert torch.equal(chunks[:, i, poses.shape[1]:], torch.zeros(2, 3 * k - poses.shape[1]))


def test_the_outputs_of_a_token_are_its_poses_velocities(policy):
    """Pose j's velocity is read from token j // k's output slots (j % k); padded slots are dropped."""
    expert = ActionExpert(ExpertConfig(horizon=10, interval_s=0.4, waypoints_per_token=4), _geometry(policy)).eval()
    inputs, positions, layer_kv = _context_inputs(policy, [make_policy_scene(2)])
    ctx = expert.context(layer_kv, inputs.attention_mask, positions.next_position, inputs.history)
    captured = {}
    expert.out.register_forward_hook(lambda module, args, out: captured.setdefault("out", out))
    with torch.no_grad():
        v = expert.velocity(torch.randn(1, 10, 3), torch.tensor([0.2]), ctx)
    raw = captured["out"]  # (1, 3 tokens, 12)
    assert raw.shape == (1, 3, 12)
    for j in range(10):
        assert torch.equal(v[0, j], raw[0, j // 4, 3 * (j % 4):3 * (j % 4) + 3])


@pytest.mark.parametrize("k", [0, 9])
def test_waypoints_per_token_outside_one_to_the_horizon_is_a_clear_error(k):
    with pytest.raises(PolicyConfigError, match=rf"policy.expert.waypoints_per_token={k}: need 1 <= waypoints_per_token <= horizon \(8\)"):
        SpanVLAPolicy.build(PolicyConfig(expert=ExpertConfig(waypoints_per_token=k)))


@pytest.fixture(scope="module")
def chunked_policy() -> SpanVLAPolicy:
    """50 poses at 0.1 s, 5 poses per expert token (10 tokens)."""
    return tiny_policy(PolicyConfig(expert=ExpertConfig(horizon=50, interval_s=0.1, waypoints_per_token=5)))


def test_a_chunked_policy_samples_trajectories_of_all_its_poses(chunked_policy):
    policy = chunked_policy
    assert policy.expert.num_waypoint_tokens == 10
    scene = make_policy_scene(4)
    plan = policy.plan([scene])
    assert plan.trajectories.shape == (1, 50, 3) and np.isfinite(plan.trajectories).all()
    group = policy.sample_group(scene, 3, temperature=1.0, flow_noise=0.7, seed=3, max_reasoning_tokens=4)
    for sample in group.samples:
        assert sample.trajectory.shape == (50, 3) and np.isfinite(sample.trajectory).all()
        assert sample.chain.states.shape == (policy.config.expert.num_steps + 1, 50, 3)
    # Stochastic samples differ from each other in every chunk, including the last token's poses.
    a, b = group.samples[0].trajectory, group.samples[1].trajectory
    assert all(np.abs(a[i:i + 5] - b[i:i + 5]).max() > 1e-4 for i in range(0, 50, 5))


def test_a_chunked_policy_recomputes_its_flow_log_probabilities(chunked_policy):
    policy = chunked_policy
    scenes = [make_policy_scene(5), make_policy_scene(6)]
    groups = [policy.sample_group(s, 2, temperature=1.0, flow_noise=0.7, seed=7 + i, max_reasoning_tokens=6)
              for i, s in enumerate(scenes)]
    samples = [s for g in groups for s in g.samples]
    batch = policy.collate_completions([scenes[0]] * 2 + [scenes[1]] * 2, [s.completion for s in samples])
    out = policy.flow_step_logprobs(batch, [s.chain for s in samples])
    assert out.means.shape == (4, 5, 50, 3)
    sampled = np.stack([s.chain.logprobs for s in samples])
    assert (sampled[:, :-1] != 0).all() and (sampled[:, -1] == 0).all()  # the last step is deterministic
    recomputed = out.logprobs.detach().numpy()
    # Equal up to fp32 rounding of log-densities summed over 150 dimensions (relative 1e-5).
    assert np.abs(recomputed - sampled).max() <= 1e-5 * np.abs(sampled).max()
    np.testing.assert_allclose(recomputed, sampled, rtol=1e-5, atol=1e-5)


def test_flow_matching_trains_a_chunked_expert(chunked_policy):
    policy = chunked_policy
    batch = policy.collator("expert")([make_policy_scene(i) for i in range(4)])
    assert batch.trajectory.shape == (4, 50, 3)
    out = policy.expert_flow_matching_loss(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    try:
        assert torch.isfinite(out.loss)
        assert policy.expert.waypoint_in.weight.grad.abs().sum() > 0
        assert policy.expert.out.weight.grad.abs().sum() > 0
    finally:
        policy.expert.zero_grad(set_to_none=True)


def test_a_policy_saved_before_the_suffix_layout_key_loads_with_one_pose_per_token(tmp_path):
    import json

    policy = tiny_policy()
    path = tmp_path / "policy"
    policy.save(path)
    config_file = path / "policy_config.json"
    raw = json.loads(config_file.read_text())
    del raw["expert"]["waypoints_per_token"]  # the policy_config.json written before the key existed
    config_file.write_text(json.dumps(raw, indent=2))
    loaded = SpanVLAPolicy.load(path)
    assert loaded.config.expert.waypoints_per_token == 1
    assert loaded.expert.num_waypoint_tokens == 8
    hidden = loaded.expert.hidden_size
    # One token per pose: the weight shapes of the original layout.
    assert tuple(loaded.expert.waypoint_in.weight.shape) == (hidden, 3)
    assert tuple(loaded.expert.waypoint_embedding.shape) == (8, hidden)
    assert tuple(loaded.expert.out.weight.shape) == (3, hidden)
    scene = make_policy_scene(7)
    assert np.array_equal(loaded.plan([scene]).trajectories, policy.plan([scene]).trajectories)


def test_weights_of_another_suffix_layout_are_a_clear_error(chunked_policy, tmp_path):
    import json

    from rl.policy.policy_dir import CheckpointError

    path = tmp_path / "policy"
    chunked_policy.save(path)
    assert SpanVLAPolicy.load(path).expert.num_waypoint_tokens == 10
    config_file = path / "policy_config.json"
    raw = json.loads(config_file.read_text())
    raw["expert"]["waypoints_per_token"] = 1
    config_file.write_text(json.dumps(raw))
    hidden = chunked_policy.expert.hidden_size
    with pytest.raises(CheckpointError, match=rf"expert.safetensors: waypoint_embedding has shape \(10, {hidden}\),"
                                              rf" the config gives \(50, {hidden}\)"):
        SpanVLAPolicy.load(path)
