"""The decision vocabulary of driving and the rules that tie it to a trajectory.

Shared by the synthetic world's reasoning labels (`sim.scenarios.reasoning`) and by the reward check of a
policy's reasoning (`rewards.reasoning_check`); it depends only on the scene model's geometry, so scoring real
NAVSIM data needs nothing of the synthetic generator.

  LONGITUDINAL_DECISIONS   keep speed | accelerate | decelerate | stop | yield
  LATERAL_DECISIONS        keep lane | nudge left | nudge right | change lane left | change lane right
                           | turn left | turn right

What each decision means for a trajectory (rear-axle poses at 0.5 s in the ego frame, see
`classify_longitudinal` / `classify_lateral`):
  stop        the speed falls below STOP_SPEED_MPS at some pose (or the ego stands still);
  decelerate  the minimum speed is at least SPEED_CHANGE_MPS below the current speed;
  accelerate  the final speed is at least SPEED_CHANGE_MPS above the current speed (and no deceleration);
  keep speed  none of the above;
  yield       the reason is another road user; the motion is "decelerate" or "stop" (see COMPATIBLE).
  turn left/right      the heading changes by more than TURN_HEADING_RAD more than the lane's;
  change lane l/r      the offset from the start lane's centre line grows by more than NUDGE_OFFSET_M
                       beyond the start offset and ends beyond LANE_CHANGE_OFFSET_M, near its largest;
  nudge left/right     the offset grows by more than NUDGE_OFFSET_M and stays small or comes back;
  keep lane            none of the above (including steering back to the centre of the lane).

A trace states its decision in its LAST sentence with one of the phrases in LONGITUDINAL_PHRASES /
LATERAL_PHRASES, which `parse_decisions` maps back to the vocabulary.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sim.paths import Path

LONGITUDINAL_DECISIONS = ("keep speed", "accelerate", "decelerate", "stop", "yield")
LATERAL_DECISIONS = (
    "keep lane",
    "nudge left",
    "nudge right",
    "change lane left",
    "change lane right",
    "turn left",
    "turn right",
)

# Decision phrases (each maps to exactly one decision; longest match wins when parsing).
LONGITUDINAL_PHRASES = {
    "keep speed": ("keep my speed", "maintain my speed", "hold a steady speed"),
    "accelerate": ("accelerate", "speed up", "pick up speed"),
    "decelerate": ("decelerate", "slow down", "ease off the speed"),
    "stop": ("come to a stop", "come to a full stop", "brake to a stop"),
    "yield": ("yield", "give way"),
}
LATERAL_PHRASES = {
    "keep lane": ("keep my lane", "stay in my lane", "follow my lane"),
    "nudge left": ("nudge left", "shift slightly to the left"),
    "nudge right": ("nudge right", "shift slightly to the right"),
    "change lane left": ("change lane to the left", "move into the left lane"),
    "change lane right": ("change lane to the right", "move into the right lane"),
    "turn left": ("turn left", "make the left turn"),
    "turn right": ("turn right", "make the right turn"),
}
# Which trajectory classes satisfy a longitudinal decision.
COMPATIBLE = {
    "keep speed": ("keep speed",),
    "accelerate": ("accelerate",),
    "decelerate": ("decelerate",),
    "stop": ("stop",),
    "yield": ("decelerate", "stop"),
}

STOP_SPEED_MPS = 0.5
SPEED_CHANGE_MPS = 1.5
TURN_HEADING_RAD = 0.7
NUDGE_OFFSET_M = 0.4
LANE_CHANGE_OFFSET_M = 1.2
INTERVAL_S = 0.5


def trajectory_speeds(trajectory: np.ndarray, interval_s: float = INTERVAL_S) -> np.ndarray:
    """(N,) mean speed over each interval of a trajectory (N, 3) starting at the origin."""
    points = np.concatenate([np.zeros((1, 2)), np.asarray(trajectory)[:, :2]], axis=0)
    return np.linalg.norm(np.diff(points, axis=0), axis=1) / interval_s


def classify_longitudinal(speed0: float, trajectory: np.ndarray, interval_s: float = INTERVAL_S) -> str:
    """keep speed | accelerate | decelerate | stop for a trajectory (N, 3) from an ego moving at speed0."""
    v = trajectory_speeds(trajectory, interval_s)
    if min(v.min(), speed0 if speed0 < STOP_SPEED_MPS else np.inf) < STOP_SPEED_MPS:
        return "stop"
    if v.min() < speed0 - SPEED_CHANGE_MPS:
        return "decelerate"
    if v[-1] > speed0 + SPEED_CHANGE_MPS:
        return "accelerate"
    return "keep speed"


def classify_lateral(trajectory: np.ndarray, lane_centre: np.ndarray) -> str:
    """Lateral decision of a trajectory (N, 3) relative to the centre line (M, 2) of the lane the ego starts
    in (both in the ego frame)."""
    trajectory = np.asarray(trajectory)
    path = Path(lane_centre)
    s, d = path.project(np.concatenate([np.zeros((1, 2)), trajectory[:, :2]], axis=0))
    # heading change relative to the lane's own (a bend is not a turn); beyond its end the lane goes straight
    lane_turn = float(path.heading_at(s[-1]) - path.heading_at(s[0]))
    heading_change = float(np.unwrap(np.concatenate([[0.0], trajectory[:, 2]]))[-1]) - lane_turn
    if abs(heading_change) > TURN_HEADING_RAD:
        return "turn left" if heading_change > 0 else "turn right"
    d0 = d[0]
    grow = np.abs(d) - abs(d0)
    i = int(np.argmax(grow))
    if grow[i] <= NUDGE_OFFSET_M:
        return "keep lane"
    side = "left" if d[i] > 0 else "right"
    # ends well out and is not coming back: a lane change (possibly still in progress)
    if abs(d[-1]) >= LANE_CHANGE_OFFSET_M and abs(d[-1]) >= abs(d[i]) - 0.3:
        return f"change lane {side}"
    return f"nudge {side}"


def consistent(longitudinal: str, lateral: str, speed0: float, trajectory: np.ndarray, lane_centre: np.ndarray) -> bool:
    """Do the decisions match what the trajectory does?"""
    return classify_longitudinal(speed0, trajectory) in COMPATIBLE[longitudinal] and classify_lateral(trajectory, lane_centre) == lateral


def parse_decisions(text: str) -> tuple[Optional[str], Optional[str]]:
    """(longitudinal, lateral) decisions stated in the last sentence of a trace; None where absent."""
    sentences = [s.strip() for s in text.replace("!", ".").split(".") if s.strip()]
    if not sentences:
        return None, None
    last = " " + sentences[-1].lower() + " "
    return _longest_match(last, LONGITUDINAL_PHRASES), _longest_match(last, LATERAL_PHRASES)


def _longest_match(sentence: str, phrases: dict) -> Optional[str]:
    best, best_len = None, 0
    for decision, options in phrases.items():
        for phrase in options:
            if f" {phrase} " in sentence or f" {phrase}," in sentence or f" {phrase}." in sentence:
                if len(phrase) > best_len:
                    best, best_len = decision, len(phrase)
    return best
