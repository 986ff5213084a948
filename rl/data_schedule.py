"""Which scenes GRPO trains on at each step: a warm-up on positives, then the positive/negative/recovery mix.

The schedule is deterministic given its seed and its state (one shuffled pass per sample type, a cursor into
each), so a resumed run continues with exactly the scenes an uninterrupted run would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.conventions import SAMPLE_TYPES


@dataclass(frozen=True)
class ScheduledGroup:
    """One group to roll out: the dataset row of its scene and the scene's sample type."""

    row: int
    sample_type: str


class SceneSchedule:
    """Draws `groups_per_step` scenes per step.

    rows_by_type: dataset row indices of the scenes of each sample type ("pos", "neg", "rec").
    warmup_steps: the first steps draw positives only.
    mix: the share of each sample type after the warm-up (normalised; types without scenes are dropped).
    Each type is visited in a shuffled order that is reshuffled each pass (epoch), from the seed.
    """

    def __init__(
        self,
        rows_by_type: dict[str, np.ndarray],
        groups_per_step: int,
        warmup_steps: int,
        mix: dict[str, float],
        seed: int,
    ):
        unknown = set(mix) - set(SAMPLE_TYPES)
        if unknown:
            raise ValueError(f"data mix names unknown sample types {sorted(unknown)}; expected {SAMPLE_TYPES}")
        self.rows = {t: np.asarray(rows_by_type.get(t, []), dtype=np.int64) for t in SAMPLE_TYPES}
        if self.rows["pos"].size == 0:
            raise ValueError("the GRPO training set has no positive scenes")
        self.groups_per_step = groups_per_step
        self.warmup_steps = warmup_steps
        weights = {t: float(mix.get(t, 0.0)) for t in SAMPLE_TYPES if self.rows[t].size > 0}
        total = sum(weights.values())
        if total <= 0:
            raise ValueError(f"data mix {mix} gives no weight to any sample type present in the data")
        self.mix = {t: w / total for t, w in weights.items() if w > 0}
        self.seed = seed
        self.cursor = {t: 0 for t in SAMPLE_TYPES}  # position in the endless shuffled stream of each type

    def state_dict(self) -> dict:
        return {"cursor": dict(self.cursor), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"schedule state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.cursor = {t: int(state["cursor"][t]) for t in SAMPLE_TYPES}

    def _type_counts(self, step: int) -> dict[str, int]:
        if step < self.warmup_steps:
            return {"pos": self.groups_per_step}
        # Largest-remainder allocation with a per-step random tie-break: shares hold on average over steps.
        rng = np.random.default_rng([self.seed, step, 1])
        types = list(self.mix)
        exact = np.array([self.mix[t] * self.groups_per_step for t in types])
        counts = np.floor(exact).astype(int)
        remainder = exact - counts
        order = np.lexsort((rng.random(len(types)), -remainder))
        for i in order[: self.groups_per_step - counts.sum()]:
            counts[i] += 1
        return {t: int(c) for t, c in zip(types, counts) if c > 0}

    def _take(self, sample_type: str, count: int) -> list[int]:
        rows = self.rows[sample_type]
        out = []
        for _ in range(count):
            epoch, index = divmod(self.cursor[sample_type], rows.size)
            order = np.random.default_rng([self.seed, SAMPLE_TYPES.index(sample_type), epoch]).permutation(rows.size)
            out.append(int(rows[order[index]]))
            self.cursor[sample_type] += 1
        return out

    def next_groups(self, step: int) -> list[ScheduledGroup]:
        """The groups of `step` (advances the cursors)."""
        groups = []
        for sample_type, count in self._type_counts(step).items():
            groups.extend(ScheduledGroup(row, sample_type) for row in self._take(sample_type, count))
        return groups
