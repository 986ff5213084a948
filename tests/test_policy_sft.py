"""SFT losses, gradients (the expert never reaches the VLM), parameter groups, LoRA and collation."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from policy_scenes import make_policy_scene, tiny_policy
from rl.policy.inputs import LABEL_ACTION, LABEL_TEXT

torch.set_num_threads(1)


def _scenes():
    return [make_policy_scene(i, slow=i % 2 == 0) for i in range(4)]


def test_sft_batch_labels_reasoning_and_action_tokens():
    policy = tiny_policy()
    batch = policy.collator("tokens")(_scenes())
    kinds = batch.label_kind[batch.completion_mask]
    assert (kinds == LABEL_ACTION).sum() == 4 * policy.num_action_tokens
    assert (kinds == LABEL_TEXT).sum() > 0 and (batch.labels[~batch.completion_mask] == -100).all()
    assert batch.sample_weight.tolist() == [40.0, 1.0, 40.0, 1.0]
    assert batch.trajectory.shape == (4, policy.horizon, 3)


def test_vlm_loss_is_the_reasoning_weighted_mean_of_per_sample_losses():
    policy = tiny_policy()
    scenes = _scenes()
    collate = policy.collator("tokens")
    with torch.no_grad():
        batch_loss = policy.vlm_sft_loss(collate(scenes)).loss
        singles = torch.stack([policy.vlm_sft_loss(collate([s])).loss for s in scenes])
    weights = torch.tensor([40.0, 1.0, 40.0, 1.0])
    torch.testing.assert_close(batch_loss, (weights * singles).sum() / weights.sum(), rtol=1e-5, atol=1e-5)


def test_a_few_steps_of_vlm_sft_lower_the_loss_with_the_vision_encoder_frozen():
    policy = tiny_policy().train()
    policy.set_trainable(vision=False, language=True, expert=False)
    vision_before = [p.detach().clone() for p in policy.parameter_groups()["vision"]]
    batch = policy.collator("tokens")(_scenes())
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(6):
        out = policy.vlm_sft_loss(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(vision_before, policy.parameter_groups()["vision"]))
    assert set(out.metrics) == {"text_loss", "action_loss", "action_accuracy"}


def test_a_few_steps_of_expert_flow_matching_lower_the_loss_and_never_reach_the_vlm():
    policy = tiny_policy().train()
    policy.set_trainable(vision=True, language=True, expert=True)  # the VLM could learn, but gets no gradient
    batch = policy.collator("expert")(_scenes())
    optimizer = torch.optim.AdamW(policy.expert.parameters(), lr=3e-3)
    vlm_before = [p.detach().clone() for p in policy.vlm.parameters()]
    losses = []
    for step in range(8):
        out = policy.expert_flow_matching_loss(batch, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out.loss.backward()
        assert all(p.grad is None for p in policy.vlm.parameters()), "expert loss reached the VLM"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.expert.parameters())
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(vlm_before, policy.vlm.parameters()))


def test_flow_log_probabilities_reach_the_vlm_only_when_asked():
    policy = tiny_policy()
    scene = make_policy_scene(5)
    group = policy.sample_group(scene, 2, temperature=1.0, flow_noise=0.5, seed=0)
    batch = policy.collate_completions([scene] * 2, [s.completion for s in group.samples])
    chains = [s.chain for s in group.samples]
    policy.flow_step_logprobs(batch, chains).logprobs.sum().backward()
    assert all(p.grad is None for p in policy.vlm.parameters())
    policy.zero_grad()
    policy.flow_step_logprobs(batch, chains, kv_grad=True).logprobs.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.vlm.model.language_model.parameters())


def test_parameter_groups_partition_the_policy():
    policy = tiny_policy()
    groups = policy.parameter_groups()
    ids = [id(p) for group in groups.values() for p in group]
    assert len(ids) == len(set(ids)) == len(list(policy.parameters()))
    assert {id(p) for p in groups["vision"]} == {id(p) for p in policy.vlm.model.visual.parameters()}
    assert {id(p) for p in groups["expert"]} == {id(p) for p in policy.expert.parameters()}


def _lora_layers(policy) -> dict:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in policy.named_modules() if isinstance(m, LoraLayer)}


def test_lora_as_configured_adapts_the_language_model_projections_only_and_starts_as_the_sft_model():
    from dataclasses import asdict

    from rl.config import LoRAConfig
    from rl.policy.lora import apply_lora

    config = LoRAConfig(enabled=True, r=4, alpha=8)  # default target_modules: the attention projections
    policy = tiny_policy()
    batch = policy.collator("tokens")(_scenes()[:2])
    with torch.no_grad():
        before = policy.vlm_sft_loss(batch).loss
    adapters = apply_lora(policy, asdict(config))
    layers = _lora_layers(policy)
    language = policy.vlm.model.language_model
    expected = {f"vlm.model.language_model.layers.{i}.self_attn.{m}" for i in range(len(language.layers))
                for m in config.target_modules}
    assert set(layers) == expected  # never the vision tower's attention, never the expert's o_proj / qkv_proj
    assert {id(p) for p in adapters} == {id(p) for n, p in policy.named_parameters() if ".lora_" in n}
    for layer in layers.values():
        assert layer.r["default"] == config.r and layer.scaling["default"] == config.alpha / config.r
        assert layer.lora_A["default"].weight.shape[0] == config.r
        assert not layer.lora_B["default"].weight.any()  # B = 0: the adapted model is the SFT model
    policy.eval()
    for n, p in policy.named_parameters():
        p.requires_grad_(".lora_" in n)
    out = policy.vlm_sft_loss(batch)
    torch.testing.assert_close(out.loss.detach(), before, rtol=0, atol=0)
    out.loss.backward()
    assert all(layer.lora_B["default"].weight.grad.abs().sum() > 0 for layer in layers.values())


def test_lora_target_modules_name_language_model_layers_and_an_unmatched_name_is_an_error():
    from rl.policy.lora import apply_lora

    policy = tiny_policy()
    apply_lora(policy, {"r": 2, "alpha": 4, "target_modules": ["gate_proj", "down_proj"]})
    names = set(_lora_layers(policy))
    assert names and all(n.startswith("vlm.model.language_model.layers.") and ".mlp." in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"gate_proj", "down_proj"}  # the vision MLPs have them too
    with pytest.raises(ValueError, match=r"LoRA target_modules \['qkv'\] matched no language-model layer"):
        apply_lora(tiny_policy(), {"r": 2, "alpha": 4, "target_modules": ["qkv"]})


def test_collator_works_in_a_dataloader():
    policy = tiny_policy()
    collate = pickle.loads(pickle.dumps(policy.collator("expert")))
    loader = DataLoader(_scenes(), batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2 and batches[0].input_ids.shape[0] == 2
    assert batches[0].pixel_values_videos.shape[0] == 2 * 3 * policy.video.geometry.tokens_per_video() * 4
    with pytest.raises(ValueError, match="targets='nope'"):
        policy.collator("nope")


def test_sft_batches_are_fresh_permutations_each_pass_split_between_ranks():
    import numpy as np

    from rl.sft import sft_batch_rows

    rows = np.arange(10, 20)
    one = [b.tolist() for b in sft_batch_rows(rows, 6, 4, seed=1)]
    assert all(len(b) == 4 for b in one)
    # a pass of 10 rows holds two batches of 4 (its last 2 rows are left out); then a new permutation
    assert len(set(one[0] + one[1])) == 8 and set(one[0] + one[1]) <= set(rows.tolist())
    assert one[:2] != one[2:4]
    assert [b.tolist() for b in sft_batch_rows(rows, 6, 4, seed=1)] == one  # the seed is the whole state
    ranks = [[b.tolist() for b in sft_batch_rows(rows, 2, 2, seed=1, rank=r, world=2)] for r in (0, 1)]
    assert not set(ranks[0][0]) & set(ranks[1][0])  # the ranks share a step's rows without overlap
    assert ranks[0][0] + ranks[1][0] == one[0]
