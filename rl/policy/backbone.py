"""The VLM backbone: transformers' `Qwen2_5_VLForConditionalGeneration`, built from a preset with random
weights (`tiny`, `small`) or loaded with `from_pretrained` from a local directory (Qwen2.5-VL-3B, or a
policy checkpoint's `vlm/`), and the few calls the policy makes on it.

Positions are always computed here (`get_rope_index` with the attention mask) and passed explicitly, so
the model's own `rope_deltas` state is never used: left padding, group expansion and decoding with finished
rows in the batch all keep exact M-RoPE positions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.cache_utils import DynamicCache

from rl.policy.config import BackboneConfig, PolicyConfigError
from rl.policy.expert import AttentionGeometry
from rl.policy.tokenizer import PolicyTokenizer
from rl.policy.vision import VideoGeometry

# Random-weight presets. mrope_section sums to head_dim / 2; vision out_hidden_size = text hidden size.
PRESETS: dict[str, dict] = {
    "tiny": {  # ~2M parameters: the CPU default
        "text": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
                     num_key_value_heads=2, rope_theta=10000.0, mrope_section=[4, 6, 6]),
        "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=8, temporal_patch_size=2,
                       spatial_merge_size=2, window_size=32, fullatt_block_indexes=[1], tokens_per_second=2),
        "image_size": (32, 64),
    },
    "small": {  # ~27M parameters
        "text": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                     num_key_value_heads=2, rope_theta=10000.0, mrope_section=[8, 12, 12]),
        "vision": dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, patch_size=14, temporal_patch_size=2,
                       spatial_merge_size=2, window_size=112, fullatt_block_indexes=[3], tokens_per_second=2),
        "image_size": (112, 224),
    },
    "3b": {  # Qwen2.5-VL-3B's shapes (3.4B parameters with our vocabulary), random: GPU latency and memory
        "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, rope_theta=1000000.0, mrope_section=[16, 24, 24]),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                       temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        "image_size": (224, 392),
    },
}
PRETRAINED_IMAGE_SIZE = (224, 392)  # multiples of 28 for Qwen2.5-VL's 14-pixel patches merged 2 x 2

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_vlm(cfg: BackboneConfig, tokenizer: PolicyTokenizer) -> Qwen2_5_VLForConditionalGeneration:
    """A preset with random weights (seeded by cfg.seed, global RNG untouched) or `from_pretrained`."""
    if cfg.preset == "pretrained":
        return load_vlm(cfg.pretrained_path, tokenizer, cfg)
    if cfg.preset not in PRESETS:
        raise PolicyConfigError(f"policy.backbone.preset={cfg.preset!r}: expected one of {tuple(PRESETS) + ('pretrained',)}")
    preset = PRESETS[cfg.preset]
    text = dict(preset["text"])
    rope = dict(rope_type="default", rope_theta=text.pop("rope_theta"), mrope_section=text.pop("mrope_section"))
    config = Qwen2_5_VLConfig(
        text_config=dict(text, vocab_size=len(tokenizer), max_position_embeddings=8192, rope_parameters=rope,
                         bos_token_id=None, eos_token_id=tokenizer.im_end_id, pad_token_id=tokenizer.pad_id),
        vision_config=dict(preset["vision"], out_hidden_size=text["hidden_size"]),
        image_token_id=tokenizer.image_pad_id,
        video_token_id=tokenizer.video_pad_id,
        vision_start_token_id=tokenizer.vision_start_id,
        vision_end_token_id=tokenizer.vision_end_id,
    )
    config._attn_implementation = cfg.attn_implementation  # noqa: SLF001 - the documented way for a config built in code
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.to(DTYPES[cfg.dtype]).eval()


def load_vlm(path: Optional[str | os.PathLike], tokenizer: PolicyTokenizer, cfg: BackboneConfig,
             grow_embeddings: bool = True) -> Qwen2_5_VLForConditionalGeneration:
    """`from_pretrained(path)` (local files only), token ids checked; with `grow_embeddings` the embedding
    and head grow to the tokenizer (a pretrained Qwen tokenizer extended with the policy's tokens)."""
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"VLM directory not found: {path}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{os.path.join(path, 'config.json')} is missing: not a transformers model directory")
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(path), dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation, local_files_only=True
        )
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot load the VLM weights: {err}") from None
    with torch.no_grad():
        # Own, aligned memory instead of views of the memory-mapped file: the directory may then change
        # under a live model, and CPU kernels give bit-identical results to a model built in memory.
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = tensor.data.clone()
    if grow_embeddings and model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    for name, expected in (("image_token_id", tokenizer.image_pad_id), ("video_token_id", tokenizer.video_pad_id)):
        if getattr(model.config, name) != expected:
            raise ValueError(f"{path}: config {name}={getattr(model.config, name)} but the tokenizer gives {expected}")
    return model.eval()


def attention_geometry(vlm: Qwen2_5_VLForConditionalGeneration) -> AttentionGeometry:
    text = vlm.config.text_config
    rope = text.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"the action expert needs the VLM's default (M-)RoPE, got rope_type {rope.get('rope_type')!r}")
    return AttentionGeometry(
        num_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads,
        head_dim=text.hidden_size // text.num_attention_heads,
        rope_theta=float(rope["rope_theta"]),
    )


def video_geometry(vlm: Qwen2_5_VLForConditionalGeneration, cfg: BackboneConfig) -> VideoGeometry:
    vision = vlm.config.vision_config
    default = PRESETS[cfg.preset]["image_size"] if cfg.preset in PRESETS else PRETRAINED_IMAGE_SIZE
    return VideoGeometry(
        height=cfg.image_height or default[0],
        width=cfg.image_width or default[1],
        patch_size=int(vision.patch_size),
        temporal_patch_size=int(vision.temporal_patch_size),
        merge_size=int(vision.spatial_merge_size),
    )


@dataclass
class PrefixPositions:
    """M-RoPE positions (3, B, L) of a left-padded batch and each row's next text position (B,)."""

    position_ids: torch.Tensor
    next_position: torch.Tensor


def prefix_positions(vlm, input_ids, attention_mask, mm_token_type_ids, video_grid_thw, second_per_grid_ts) -> PrefixPositions:
    position_ids, _ = vlm.model.get_rope_index(
        input_ids, mm_token_type_ids=mm_token_type_ids, video_grid_thw=video_grid_thw,
        second_per_grid_ts=second_per_grid_ts, attention_mask=attention_mask,
    )
    masked = position_ids.masked_fill(~attention_mask.bool()[None], -1)
    return PrefixPositions(position_ids, masked.amax(dim=(0, 2)) + 1)


def run_prefix(vlm, inputs, positions: PrefixPositions, use_cache: bool = True):
    """One forward of the VLM body over a whole (left-padded) sequence with its videos.
    Returns (last hidden states (B, L, H), DynamicCache or None)."""
    cache = DynamicCache(config=vlm.config) if use_cache else None
    out = vlm.model(
        input_ids=inputs.input_ids,
        attention_mask=inputs.attention_mask,
        position_ids=positions.position_ids,
        pixel_values_videos=inputs.pixel_values_videos,
        video_grid_thw=inputs.video_grid_thw,
        second_per_grid_ts=inputs.second_per_grid_ts,
        mm_token_type_ids=inputs.mm_token_type_ids,
        cache=cache,
        use_cache=use_cache,
    )
    return out.last_hidden_state, cache


def decode_step(vlm, token_ids: torch.Tensor, position: torch.Tensor, attention_mask: torch.Tensor, cache) -> torch.Tensor:
    """Feed one token per row: token_ids (B,), text position (B,), attention mask (B, cached + 1) ->
    next-token logits (B, V) in fp32. The cache grows in place."""
    out = vlm(
        input_ids=token_ids[:, None],
        position_ids=position.view(1, -1, 1).expand(3, -1, 1),
        attention_mask=attention_mask,
        cache=cache,
        use_cache=True,
    )
    return out.logits[:, -1].float()


def cache_layer_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(K, V) of every layer of a DynamicCache, each (B, kv_heads, T, head_dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def repeat_cache(cache, repeats: int) -> None:
    """Repeat every row of the cache `repeats` times (row b -> b*r ... b*r+r-1), in place."""
    cache.batch_repeat_interleave(repeats)
