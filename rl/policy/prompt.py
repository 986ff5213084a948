"""The policy's text formats (spanvla.md 1.1): the prompt built from a Scene, the completion the model
writes, the SFT target, and the parser of generated outputs.

Prompt (Qwen2.5-VL chat layout)::

    <|im_start|>system\n{system prompt}<|im_end|>\n
    <|im_start|>user\n
    front camera: <|vision_start|><|video_pad|> x n<|vision_end|>\n   (also front-left, front-right)
    Command: turn left.\n Velocity: ... Acceleration: ... History (x, y, heading) ...<|im_end|>\n
    <|im_start|>assistant\n

Completion::

    <think> Directly predict the final action. </think><answer>...                          (fast mode)
    <think> This is a complex scenario requiring additional reasoning. {1-3 sentences} </think><answer>...
    ...<answer><action_12><action_7>...</answer>     (action tokens: SFT stage 1 and the AR baseline)
    ...<answer><action_gen>                          (the expert reads the KV cache after this token)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from sim import conventions as C
from sim.scene import Scene

# Special tokens (the Qwen2.5-VL names where Qwen has one).
PAD = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ACTION_GEN = "<action_gen>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD,
                  THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, ACTION_GEN)

FAST_REASONING = "Directly predict the final action."
SLOW_PREFIX = "This is a complex scenario requiring additional reasoning."
MAX_REASONING_SENTENCES = 3

SYSTEM_PROMPT = (
    "You are the planner of an autonomous car. You see the front, front-left and front-right cameras over the"
    " last 1.5 seconds, the navigation command and the ego state. Think inside <think> </think>, briefly when"
    " the scene is simple, then give the trajectory inside <answer> </answer>."
)
COMMAND_TEXT = {"left": "turn left", "straight": "go straight", "right": "turn right", "unknown": "unknown"}
CAMERA_LABELS = {"CAM_F0": "front", "CAM_L0": "front-left", "CAM_R0": "front-right"}

_ACTION_RE = re.compile(r"<action_(\d+)>")


class OutputFormatError(ValueError):
    """A generated output that does not follow the completion format; the message says what is missing."""


def action_token(index: int) -> str:
    """The text of codebook token `index`."""
    return f"<action_{index}>"


def ego_state_text(scene: Scene) -> str:
    """Command, velocity, acceleration and history trajectory of `scene` as text (ego frame, SI units)."""
    ego = scene.ego
    history = scene.history_trajectory()[:-1]  # the last row is the current pose (0, 0, 0)
    times = C.history_times()[:-1]
    poses = "; ".join(f"{t:.1f} s: ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f})" for t, p in zip(times, history))
    command = COMMAND_TEXT[C.DRIVING_COMMANDS[scene.driving_command]]
    return (
        f"Command: {command}.\n"
        f"Velocity: {ego.vx:.2f} m/s forward, {ego.vy:.2f} m/s left.\n"
        f"Acceleration: {ego.ax:.2f} m/s2 forward, {ego.ay:.2f} m/s2 left.\n"
        f"History (x, y, heading) at {poses}."
    )


def build_prompt(scene: Scene, video_token_counts: Sequence[int], system_prompt: Optional[str] = None) -> str:
    """The full prompt text; camera i gets `video_token_counts[i]` `<|video_pad|>` tokens (C.CAMERA_NAMES order)."""
    if len(video_token_counts) != len(C.CAMERA_NAMES):
        raise ValueError(f"need one video token count per camera {C.CAMERA_NAMES}, got {len(video_token_counts)}")
    cameras = "".join(
        f"{CAMERA_LABELS[name]} camera: {VISION_START}{VIDEO_PAD * int(n)}{VISION_END}\n"
        for name, n in zip(C.CAMERA_NAMES, video_token_counts)
    )
    return (
        f"{IM_START}system\n{system_prompt or SYSTEM_PROMPT}{IM_END}\n"
        f"{IM_START}user\n{cameras}{ego_state_text(scene)}{IM_END}\n"
        f"{IM_START}assistant\n"
    )


def reasoning_of(scene: Scene) -> tuple[str, str]:
    """(mode, reasoning text) of the scene's annotation: slow mode = the fixed prefix + 1-3 sentences of
    `scene.reasoning.text`; fast mode (no annotation, mode "fast" or empty text) = the fixed sentence."""
    r = scene.reasoning
    if r is None or r.mode != "slow" or not r.text.strip():
        return "fast", FAST_REASONING
    sentences = re.split(r"(?<=[.!?])\s+", r.text.strip())
    return "slow", f"{SLOW_PREFIX} {' '.join(sentences[:MAX_REASONING_SENTENCES])}"


def completion_text(reasoning: str, action_tokens: Optional[Sequence[int]] = None) -> str:
    """The completion for `reasoning`; with `action_tokens` the answer lists them (SFT stage 1, AR baseline),
    without it the answer is the action-generation token (the expert's input)."""
    head = f"{THINK_OPEN} {reasoning} {THINK_CLOSE}{ANSWER_OPEN}"
    if action_tokens is None:
        return head + ACTION_GEN
    return head + "".join(action_token(int(t)) for t in action_tokens) + ANSWER_CLOSE


def target_trajectory(scene: Scene) -> np.ndarray:
    """The trajectory SFT imitates (10, 3) ego frame: the recovery trajectory of a `rec` scene, else `future`."""
    traj = scene.recovery_trajectory if scene.sample_type == "rec" and scene.recovery_trajectory is not None else scene.future
    if traj is None:
        raise ValueError(f"scene {scene.token!r}: no `future` (or `recovery_trajectory` for a rec scene) to build an SFT target")
    return np.asarray(traj, dtype=np.float64)


@dataclass
class ParsedOutput:
    """A parsed completion. mode: "fast" (the fixed sentence) or "slow"; reasoning: the trace without the
    slow-mode prefix; action_tokens: codebook indices in the answer; action_gen: the answer asks the expert."""

    mode: str
    reasoning: str
    action_tokens: list[int] = field(default_factory=list)
    action_gen: bool = False


def parse_output(text: str) -> ParsedOutput:
    """Parse a completion (special tokens kept). Raises `OutputFormatError` naming what is wrong."""
    start = text.find(THINK_OPEN)
    if start < 0:
        raise OutputFormatError(f"output has no {THINK_OPEN}: {_clip(text)!r}")
    end = text.find(THINK_CLOSE, start)
    if end < 0:
        raise OutputFormatError(f"output has no {THINK_CLOSE} after {THINK_OPEN}: {_clip(text)!r}")
    reasoning = text[start + len(THINK_OPEN):end].strip()
    answer_at = text.find(ANSWER_OPEN, end)
    if answer_at < 0:
        raise OutputFormatError(f"output has no {ANSWER_OPEN} after {THINK_CLOSE}: {_clip(text)!r}")
    answer = text[answer_at + len(ANSWER_OPEN):]
    if reasoning == FAST_REASONING:
        mode, trace = "fast", ""
    else:
        mode, trace = "slow", reasoning[len(SLOW_PREFIX):].strip() if reasoning.startswith(SLOW_PREFIX) else reasoning
    if answer.lstrip().startswith(ACTION_GEN):
        return ParsedOutput(mode, trace, [], True)
    close = answer.find(ANSWER_CLOSE)
    if close < 0:
        raise OutputFormatError(f"answer has neither {ACTION_GEN} nor a closing {ANSWER_CLOSE}: {_clip(answer)!r}")
    body = answer[:close]
    tokens = [int(m) for m in _ACTION_RE.findall(body)]
    leftover = _ACTION_RE.sub("", body).strip()
    if leftover:
        raise OutputFormatError(f"answer holds text that is not an action token: {_clip(leftover)!r}")
    if not tokens:
        raise OutputFormatError("answer holds no action token")
    return ParsedOutput(mode, trace, tokens, False)


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."
