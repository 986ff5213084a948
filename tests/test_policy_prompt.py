"""Prompt, completion and parser formats; the in-code tokenizer."""
from __future__ import annotations

import numpy as np
import pytest

from policy_scenes import make_policy_scene
from rl.policy import prompt as P
from rl.policy.tokenizer import PolicyTokenizer


def test_prompt_holds_cameras_command_and_ego_state():
    scene = make_policy_scene(1)  # command index 1 = straight
    text = P.build_prompt(scene, [3, 3, 3])
    assert text.startswith(f"{P.IM_START}system\n{P.SYSTEM_PROMPT}{P.IM_END}\n{P.IM_START}user\n")
    assert text.endswith(f"{P.IM_END}\n{P.IM_START}assistant\n")
    for label in ("front camera: ", "front-left camera: ", "front-right camera: "):
        assert f"{label}{P.VISION_START}{P.VIDEO_PAD * 3}{P.VISION_END}" in text
    assert text.count(P.VIDEO_PAD) == 9
    assert "Command: go straight." in text
    assert f"Velocity: {scene.ego.vx:.2f} m/s forward, 0.10 m/s left." in text
    assert "Acceleration: 0.30 m/s2 forward, 0.05 m/s2 left." in text
    x = scene.history_trajectory()[0, 0]
    assert f"-1.5 s: ({x:.2f}, 0.00, 0.00)" in text


def test_prompt_needs_one_video_count_per_camera():
    with pytest.raises(ValueError, match="one video token count per camera"):
        P.build_prompt(make_policy_scene(0), [3, 3])


def test_fast_and_slow_completions_follow_the_paper_format():
    fast_mode, fast = P.reasoning_of(make_policy_scene(0))
    assert (fast_mode, fast) == ("fast", "Directly predict the final action.")
    assert P.completion_text(fast) == "<think> Directly predict the final action. </think><answer><action_gen>"
    slow_mode, slow = P.reasoning_of(make_policy_scene(0, slow=True))
    assert slow_mode == "slow"
    # 1-3 sentences: the fourth sentence of the annotation is dropped.
    assert slow == ("This is a complex scenario requiring additional reasoning. A car ahead in the ego lane brakes."
                    " Slow down and keep the gap. Keep the lane.")
    assert P.completion_text(slow, [0, 12, 3]).endswith("</think><answer><action_0><action_12><action_3></answer>")


@pytest.mark.parametrize("tokens", [None, [5, 0, 7]])
@pytest.mark.parametrize("slow", [False, True])
def test_parse_inverts_the_completion(tokens, slow):
    mode, reasoning = P.reasoning_of(make_policy_scene(2, slow=slow))
    parsed = P.parse_output(P.completion_text(reasoning, tokens))
    assert parsed.mode == mode
    assert parsed.action_gen == (tokens is None)
    assert parsed.action_tokens == (tokens or [])
    if slow:
        assert parsed.reasoning.startswith("A car ahead in the ego lane brakes.")
    else:
        assert parsed.reasoning == ""


@pytest.mark.parametrize(
    "text, message",
    [
        ("Directly predict. </think><answer><action_gen>", "no <think>"),
        ("<think> Directly predict the final action. <answer><action_gen>", "no </think>"),
        ("<think> x </think> <action_1></answer>", "no <answer>"),
        ("<think> x </think><answer><action_1>", "neither <action_gen> nor a closing </answer>"),
        ("<think> x </think><answer><action_1> go left</answer>", "not an action token: 'go left'"),
        ("<think> x </think><answer></answer>", "no action token"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, message):
    with pytest.raises(P.OutputFormatError, match=message):
        P.parse_output(text)


def test_sft_target_of_a_recovery_scene_is_the_recovery_trajectory():
    scene = make_policy_scene(3, sample_type="rec")
    scene.recovery_trajectory = scene.recovery_trajectory + 1.0
    assert np.array_equal(P.target_trajectory(scene), scene.recovery_trajectory)
    scene = make_policy_scene(4)
    scene.future = None
    with pytest.raises(ValueError, match="scene 'scene-4': no `future`"):
        P.target_trajectory(scene)


def test_tiny_tokenizer_is_reproducible_and_round_trips_completions():
    a, b = PolicyTokenizer.build_tiny(16), PolicyTokenizer.build_tiny(16)
    assert a.hf.get_vocab() == b.hf.get_vocab()
    text = P.completion_text(P.reasoning_of(make_policy_scene(0, slow=True))[1], [15, 0])
    ids = a.encode(text)
    assert a.decode(ids) == text
    assert a.action_indices(ids) == [15, 0]
    assert ids[0] == a.think_open_id and ids[-1] == a.answer_close_id
    # The BPE learnt the prompt's vocabulary: the fixed fast sentence is a handful of tokens, not 36 bytes.
    assert len(a.encode(" Directly predict the final action. ")) <= 10
    assert len(a) == 768 + 16 and a.action_offset == 768
