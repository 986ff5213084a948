"""The 3B GPU config is coherent: it rewards the actions it trains, trains in bf16 with ZeRO-2, and its
placement gets NCCL weight sync."""
from __future__ import annotations

from actors.weight_sync import resolve_backend
from rl.config import TrainConfig
from rl.config_io import load_config


def test_the_3b_config_rewards_the_actions_it_trains_and_syncs_over_nccl():
    cfg = load_config(TrainConfig, "configs/navsim_qwen2_5_vl_3b.yaml").validate()
    assert (cfg.grpo.train_target, cfg.rollout.action_source) == ("vlm", "tokens")
    assert cfg.learner.bf16 and cfg.learner.zero_stage == 2 and cfg.policy.backbone.dtype == "bfloat16"
    assert cfg.learner.lora.enabled and cfg.learner.reference == "adapters_off"
    l, r = cfg.learner, cfg.rollout
    assert resolve_backend(cfg.weight_sync.backend, l.gpus_per_worker, r.gpus_per_worker, r.num_workers) == (
        "collective", "nccl")
