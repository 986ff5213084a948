"""The policy's text tokenizer: the prompt/completion special tokens and one `<action_i>` token per
codebook entry, on top of either

- a byte-level BPE built in code (`build_tiny_tokenizer`): 256 byte symbols, merges learnt from a
  deterministic corpus of the policy's own prompt and reasoning vocabulary, the special tokens; nothing is
  downloaded and the embedding stays small; or
- a pretrained Qwen2.5-VL tokenizer from a local directory (`from_pretrained`), extended with the missing
  special tokens and the action tokens.

`PolicyTokenizer` wraps the Hugging Face tokenizer and exposes the ids the decoder needs.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rl.policy import prompt as P
from sim import conventions as C
from sim.scene import EgoState, MapData, Scene

TINY_BPE_VOCAB = 768  # bytes + specials + merges, before the action tokens

_REASONING_WORDS = (
    "A vehicle ahead in the ego lane is braking, so slow down and keep a safe gap. "
    "A pedestrian is crossing from the right; yield and stop before the crosswalk. "
    "The traffic light is red, stop at the stop line. The light turned green, accelerate and keep lane. "
    "A parked car blocks the lane; nudge left around it when the oncoming lane is clear. "
    "A bicycle on the left merges into our lane; decelerate and let it pass. "
    "Construction zone with cones and barriers ahead, change lane right. "
    "The road curves to the left at the intersection; turn left and keep speed. "
    "Heavy traffic in the adjacent lane, keep lane and keep speed. A truck is cutting in from the right. "
    "The leading vehicle is stopped at the junction; wait behind it. No critical object, follow the route. "
    "yellow unknown green red stop yield accelerate decelerate keep speed keep lane turn right go straight "
    "vehicle pedestrian bicycle traffic_light construction_zone behind ahead left right oncoming m s."
)


def _corpus() -> list[str]:
    """Deterministic training text: the fixed sentences, the reasoning vocabulary and many ego-state texts."""
    rng = np.random.default_rng(0)
    texts = [P.SYSTEM_PROMPT, P.FAST_REASONING, P.SLOW_PREFIX, _REASONING_WORDS] * 20
    texts += [f"{label} camera: " for label in P.CAMERA_LABELS.values()] * 20
    for _ in range(300):
        v = float(rng.uniform(0, 20))
        history = [EgoState(-v * t + rng.normal(0, 0.3), rng.normal(0, 0.5), rng.normal(0, 0.05), v, 0.0) for t in (1.5, 1.0, 0.5)]
        ego = EgoState(0.0, 0.0, 0.0, v, float(rng.normal(0, 0.2)), float(rng.normal(0, 1)), float(rng.normal(0, 0.3)))
        scene = Scene("corpus", history + [ego], int(rng.integers(len(C.DRIVING_COMMANDS))), MapData())
        texts.append(P.ego_state_text(scene))
    return texts


def build_tiny_tokenizer(num_action_tokens: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (same result on every call) + special tokens + `<action_0..K-1>`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(P.SPECIAL_TOKENS),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_special_tokens([AddedToken(P.action_token(i), special=True, normalized=False) for i in range(num_action_tokens)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=P.PAD, eos_token=P.IM_END)


def extend_pretrained_tokenizer(hf, num_action_tokens: int):
    """Add the special tokens a pretrained (Qwen) tokenizer lacks, then the action tokens, in place."""
    vocab = hf.get_vocab()
    missing = [t for t in P.SPECIAL_TOKENS if t not in vocab]
    if missing:
        hf.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    actions = [P.action_token(i) for i in range(num_action_tokens)]
    new_actions = [t for t in actions if t not in vocab]
    if new_actions:
        hf.add_tokens([AddedToken(t, special=True, normalized=False) for t in new_actions], special_tokens=True)
    if hf.pad_token is None:
        hf.pad_token = P.PAD
    return hf


class PolicyTokenizer:
    """Text <-> ids, the ids of every special token, and the action-token id range."""

    def __init__(self, hf, num_action_tokens: int):
        self.hf = hf
        self.num_action_tokens = int(num_action_tokens)
        vocab = hf.get_vocab()
        ids = {}
        for token in P.SPECIAL_TOKENS:
            if token not in vocab:
                raise ValueError(f"tokenizer lacks the special token {token!r}")
            ids[token] = vocab[token]
        self.pad_id = ids[P.PAD]
        self.im_end_id = ids[P.IM_END]
        self.vision_start_id, self.vision_end_id = ids[P.VISION_START], ids[P.VISION_END]
        self.image_pad_id, self.video_pad_id = ids[P.IMAGE_PAD], ids[P.VIDEO_PAD]
        self.think_open_id, self.think_close_id = ids[P.THINK_OPEN], ids[P.THINK_CLOSE]
        self.answer_open_id, self.answer_close_id = ids[P.ANSWER_OPEN], ids[P.ANSWER_CLOSE]
        self.action_gen_id = ids[P.ACTION_GEN]
        action_ids = [vocab.get(P.action_token(i)) for i in range(self.num_action_tokens)]
        if None in action_ids:
            missing = P.action_token(action_ids.index(None))
            raise ValueError(f"tokenizer lacks {missing} (expected {self.num_action_tokens} action tokens)")
        self.action_offset = action_ids[0]
        if action_ids != list(range(self.action_offset, self.action_offset + self.num_action_tokens)):
            raise ValueError("the tokenizer's action tokens do not have consecutive ids")

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def build_tiny(cls, num_action_tokens: int) -> "PolicyTokenizer":
        return cls(build_tiny_tokenizer(num_action_tokens), num_action_tokens)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, num_action_tokens: int) -> "PolicyTokenizer":
        """A local tokenizer directory (a Qwen2.5-VL model directory, or one this class saved)."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        try:
            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"{path}: no readable tokenizer (tokenizer.json / tokenizer_config.json): {err}") from None
        return cls(extend_pretrained_tokenizer(hf, num_action_tokens), num_action_tokens)

    def save(self, path: str | os.PathLike) -> None:
        self.hf.save_pretrained(str(path))

    # --- text ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def reasoning_banned(self, vocab_size: int, device=None) -> torch.Tensor:
        """(vocab_size,) bool: ids a reasoning trace may not contain: the prompt's structural and vision
        tokens, the answer's tokens, the action tokens and ids past the tokenizer. `</think>` (which ends the
        trace) and plain text stay allowed."""
        banned = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        vocab = self.hf.get_vocab()
        for token in P.SPECIAL_TOKENS:
            if token != P.THINK_CLOSE:
                banned[vocab[token]] = True
        banned[self.action_offset:self.action_offset + self.num_action_tokens] = True
        banned[len(self):] = True
        return banned

    # --- action tokens ------------------------------------------------------------------------------------
    def is_action(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.action_offset) & (ids < self.action_offset + self.num_action_tokens)

    def action_indices(self, ids: Sequence[int]) -> list[int]:
        """Codebook indices of the action tokens among `ids` (other ids are skipped)."""
        end = self.action_offset + self.num_action_tokens
        return [int(i) - self.action_offset for i in ids if self.action_offset <= int(i) < end]
