"""The run's guard against rewards that cannot be computed: the unscorable share over a window of steps."""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field


class UnscorableShareError(RuntimeError):
    """Too many samples could not be scored; the message names the failing reward term(s) and the share."""


@dataclass
class StepScoring:
    """What one step's scoring produced: samples, unscorable samples, failures per reward term, and one
    example error message per term (the first seen)."""

    step: int
    samples: int
    unscorable: int
    failures_by_term: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)


class UnscorableWindow:
    """The share of unscorable samples over the last `window_steps` steps, judged once the window is full.

    `record` adds a step; `check` raises `UnscorableShareError` when the share over a full window is above
    `max_share` (a share of exactly `max_share` passes). With max_share = 1.0 it never raises.
    """

    def __init__(self, max_share: float, window_steps: int):
        if not 0.0 <= max_share <= 1.0:
            raise ValueError(f"max_share must be in [0, 1], got {max_share}")
        if window_steps < 1:
            raise ValueError(f"window_steps must be >= 1, got {window_steps}")
        self.max_share = max_share
        self.window_steps = window_steps
        self._steps: deque[StepScoring] = deque(maxlen=window_steps)

    def record(self, step: StepScoring) -> None:
        self._steps.append(step)

    @property
    def share(self) -> float:
        samples = sum(s.samples for s in self._steps)
        return sum(s.unscorable for s in self._steps) / samples if samples else 0.0

    def check(self) -> None:
        if len(self._steps) < self.window_steps or self.share <= self.max_share:
            return
        samples = sum(s.samples for s in self._steps)
        unscorable = sum(s.unscorable for s in self._steps)
        failures: Counter = Counter()
        examples: dict[str, str] = {}
        for s in self._steps:
            failures.update(s.failures_by_term)
            for term, text in s.examples.items():
                examples.setdefault(term, text)
        terms = "; ".join(
            f"{term} ({count} samples" + (f", e.g. {examples[term]!r}" if term in examples else "") + ")"
            for term, count in failures.most_common()
        ) or "none reported"
        first, last = self._steps[0].step, self._steps[-1].step
        raise UnscorableShareError(
            f"{unscorable} of {samples} samples (share {unscorable / samples:.3f}) were unscorable over steps "
            f"{first}-{last}, above scorer.max_unscorable_share={self.max_share}; failing reward terms: {terms}"
        )
