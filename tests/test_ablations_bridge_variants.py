"""The bridge study's variants: each is a valid config that builds the expert it names, and the folders of
variants a finished study already holds keep their names (so they are reused)."""
from __future__ import annotations

import pytest

from rl.ablations import BRIDGE_VARIANTS
from rl.config import TrainConfig
from rl.config_io import load_config
from rl.demo import _with
from rl.policy.expert import ActionExpert, AttentionGeometry


@pytest.fixture(scope="module")
def base() -> TrainConfig:
    return load_config(TrainConfig, "configs/tiny.yaml", [])


def test_folders_are_distinct_and_the_earlier_variants_keep_theirs():
    folders = [folder for folder, _ in BRIDGE_VARIANTS.values()]
    assert len(set(folders)) == len(folders)
    assert folders[:5] == ["history_init", "noise_init", "interval_1_every_layer", "interval_4", "last_layer_only"]
    assert [name for name, (_, changes) in BRIDGE_VARIANTS.items() if not changes] == ["history init, interval 2"]


@pytest.mark.parametrize("name, horizon, interval_s, k, tokens", [
    ("history init, interval 2", 8, 0.5, 1, 8),
    ("8 poses, 2 per token (4 tokens)", 8, 0.5, 2, 4),
    ("40 poses at 0.1 s, 1 per token (40 tokens)", 40, 0.1, 1, 40),
    ("40 poses at 0.1 s, 5 per token (8 tokens)", 40, 0.1, 5, 8),
])
def test_suffix_layout_variants_build_the_expert_they_name(base, name, horizon, interval_s, k, tokens):
    cfg = _with(base, **BRIDGE_VARIANTS[name][1])
    e = cfg.policy.expert
    assert (e.horizon, e.interval_s, e.waypoints_per_token) == (horizon, interval_s, k)
    assert cfg.policy.backbone == base.policy.backbone and cfg.policy.codebook == base.policy.codebook
    geometry = AttentionGeometry(num_layers=6, hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32, rope_theta=1e4)
    expert = ActionExpert(e, geometry)
    assert expert.num_waypoint_tokens == tokens
    assert expert.horizon == horizon
