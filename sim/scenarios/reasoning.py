"""mReasoning-style labels: critical objects, a longitudinal and a lateral decision, and a short trace.

The decision vocabulary and the rules that tie a decision to a trajectory live in `sim.decisions` (shared
with the reward check); this module composes the labels and the wording.

Trace text: fast mode is exactly FAST_TEXT; slow mode is 1-3 sentences (the policy's prompt adds the
"This is a complex scenario requiring additional reasoning." prefix). The LAST sentence of a slow trace
always states the decision with one of the phrases in LONGITUDINAL_PHRASES / LATERAL_PHRASES, which
`parse_decisions` maps back to the vocabulary. Wording (frames, synonyms) is drawn from the scene's seed.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sim.decisions import (  # noqa: F401  (re-exported: the labels' vocabulary is the decisions')
    COMPATIBLE,
    LATERAL_DECISIONS,
    LATERAL_PHRASES,
    LONGITUDINAL_DECISIONS,
    LONGITUDINAL_PHRASES,
    classify_lateral,
    classify_longitudinal,
    consistent,
    parse_decisions,
)
from sim.scene import CriticalObject, Reasoning

FAST_TEXT = "Directly predict the final action."
MODES = ("fast", "slow")

# Critical object types and the nouns the trace may use for them.
OBJECT_NOUNS = {
    "vehicle": ("vehicle", "car"),
    "parked_vehicle": ("parked car", "parked vehicle"),
    "pedestrian": ("pedestrian", "person on foot"),
    "cyclist": ("cyclist", "bicycle"),
    "traffic_light": ("traffic light", "signal"),
    "stop_sign": ("stop sign",),
    "construction_zone": ("construction zone", "work zone"),
    "lane_end": ("lane ending", "lane closure"),
    "road_curve": ("curve", "bend"),
    "oncoming_vehicle": ("oncoming car", "oncoming vehicle"),
}
OBJECT_TYPES = tuple(OBJECT_NOUNS)
SELF_TYPE = "ego_state"  # a recovery scene's first critical item: the ego's own bad start

# ---- wording -------------------------------------------------------------------------------------------

_DESCRIBE = (
    "{A} {noun} {location} is {behaviour}.",
    "There is {a} {noun} {location}, {behaviour}.",
    "I see {a} {noun} {location} that is {behaviour}.",
    "Critical: {a} {noun} {location}, {behaviour}.",
)
_DESCRIBE_SELF = (
    "My car is {behaviour}.",
    "I am {behaviour}.",
    "The ego vehicle is {behaviour}.",
)
_DECIDE = (
    "So I will {long} and {lat}.",
    "I should {long} and {lat}.",
    "The safe action is to {long} and {lat}.",
    "Therefore I {long} and {lat}.",
)
_DECIDE_PLAIN = (
    "Nothing requires a reaction, so I {long} and {lat}.",
    "The road is clear: I {long} and {lat}.",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def location_text(dx: float, dy: float) -> str:
    """Relative location words for an object at (dx, dy) in the ego frame."""
    dist = int(round(float(np.hypot(dx, dy))))
    if dx < -2.0:
        where = "behind me" if abs(dy) < 2.0 else ("behind on the left" if dy > 0 else "behind on the right")
    elif abs(dy) < 1.8:
        where = "ahead in my lane"
    elif abs(dy) < 5.5:
        where = "ahead on the left" if dy > 0 else "ahead on the right"
    else:
        where = "ahead to the far left" if dy > 0 else "ahead to the far right"
    return f"{where} at {dist} m"


def compose(
    rng: np.random.Generator,
    critical: list[CriticalObject],
    longitudinal: str,
    lateral: str,
    reason: str = "",
    fast: bool = False,
) -> Reasoning:
    """Reasoning with a trace worded from `rng` (deterministic per scene seed)."""
    if longitudinal not in LONGITUDINAL_DECISIONS or lateral not in LATERAL_DECISIONS:
        raise ValueError(f"decisions must come from the vocabulary, got {longitudinal!r} / {lateral!r}")
    if fast:
        return Reasoning("fast", list(critical), longitudinal, lateral, FAST_TEXT)
    long_phrase = LONGITUDINAL_PHRASES[longitudinal][int(rng.integers(len(LONGITUDINAL_PHRASES[longitudinal])))]
    lat_phrase = LATERAL_PHRASES[lateral][int(rng.integers(len(LATERAL_PHRASES[lateral])))]
    sentences = []
    for obj in critical[:1]:
        if obj.type == SELF_TYPE:
            sentences.append(_DESCRIBE_SELF[int(rng.integers(len(_DESCRIBE_SELF)))].format(behaviour=obj.behaviour))
            continue
        nouns = OBJECT_NOUNS.get(obj.type, (obj.type.replace("_", " "),))
        noun = nouns[int(rng.integers(len(nouns)))]
        frame = _DESCRIBE[int(rng.integers(len(_DESCRIBE)))]
        a = _article(noun)
        sentences.append(frame.format(A=a.capitalize(), a=a, noun=noun, location=obj.location, behaviour=obj.behaviour))
    if reason:
        sentences.append(reason[0].upper() + reason[1:] + ("" if reason.endswith(".") else "."))
    frames = _DECIDE if critical else _DECIDE_PLAIN
    sentences.append(frames[int(rng.integers(len(frames)))].format(long=long_phrase, lat=lat_phrase))
    return Reasoning("slow", list(critical), longitudinal, lateral, " ".join(sentences[-3:]))
