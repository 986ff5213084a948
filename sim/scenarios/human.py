"""The logged human driver: what a scene's log shows when a human, not the rule-based expert, drove it.

With human logs on (`HumanLogs`, off by default), every scene carries the drive a human logged, as NAVSIM
scenes do: `Scene.human_trajectory`, the first `NAVSIM_PLAN_POSES` (8) rear-axle poses of the logged future,
ego frame at t = 0, 0.5 s apart. It is the field NAVSIM fills from its logs (and that v2's human filter
reads), so a policy imitating logs (`sft.target: log`) reads the same field on NAVSIM data and here. With
human logs off it is the expert's plan (`Scene.future[:8]`), as before.

What the human logged:

  pos  with probability `mistake_rate` (or the family's entry in `family_rates`), the family's typical mistake (one of its negative kinds) at a
       severity s ~ Beta(severity_a, severity_b); otherwise (or when the scene offers none of its mistakes)
       the expert's plan;
  neg  always its mistake at a drawn severity: that logged mistake is the scene's `negative_trajectory`
       (10 poses; the sub-optimal logged trajectory a negative sample penalises staying close to);
  rec  the expert's correction from the perturbed start (unchanged).

Severity s in [0, 1] grades a mistake (`sim.scenarios.negatives`: each kind scales its knob, or goes s of
the way to the gross drive): 0 is the expert's plan, 1 the gross negative the world made before human
logs (the same draws, the same trajectory). With Beta(1.5, 4) (mean 0.27, median 0.24, 88% below 0.5,
1.7% above 0.7) most logged mistakes are subtle and a few gross. A graded negative must still differ from the expert's
plan by `severity` times the gross negative's minimum (`negatives.differs_enough`).

Randomness: the decision and the severity come from the scene's own "human" stream, so the layout,
the expert's plan, the wording and the gross negative of a seed are those of generation without human
logs; a pos scene's mistake draws its kind and knobs from the "human" stream too, a neg scene from its
"neg" stream (so severity 1 reproduces the old negative exactly).

Trade-off: a subtle negative lies close to the expert's plan, so a closeness penalty around it
(`rewards.shaping`, negative_l2 with the fixed 1.7 m region) also reaches plans near the expert's; the
"separation" region bounds it by the negative's own distance from the expert's plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from sim.scenarios.expert import Plan
from sim.scenarios.negatives import differs_enough

ATTEMPTS_PER_KIND = 4  # knob draws tried per kind before the next kind (as for the gross negatives)


@dataclass(frozen=True)
class HumanLogs:
    """Options of the logged human driver (see the module docstring).

    mistake_rate: probability that a positive scene's log is a mistake, in [0, 1].
    severity_a, severity_b: the Beta distribution of a mistake's severity (both > 0).
    family_rates: family name -> its own mistake rate in [0, 1], replacing `mistake_rate` for that family
        (names are checked against the families when a scene is generated)."""

    mistake_rate: float = 0.3
    severity_a: float = 1.5
    severity_b: float = 4.0
    family_rates: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for name, rate in (("mistake_rate", self.mistake_rate),
                           *((f"family_rates[{family!r}]", r) for family, r in dict(self.family_rates).items())):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"human logs: {name} {rate!r} must be a number in [0, 1]")
        for name in ("severity_a", "severity_b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"human logs: {name} {value!r} must be a finite number > 0 (a Beta distribution parameter)")

    def rate(self, family: str) -> float:
        """The probability that a positive scene of `family` logs a mistake."""
        return float(self.family_rates.get(family, self.mistake_rate))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: float(getattr(self, key)) for key in ("mistake_rate", "severity_a", "severity_b")}
        if self.family_rates:  # absent when empty: datasets written before per-family rates read the same
            out["family_rates"] = {family: float(r) for family, r in sorted(dict(self.family_rates).items())}
        return out


@dataclass(frozen=True)
class LoggedDrive:
    """A scene's logged drive: `kind` None for the expert's plan, else the negative kind logged at
    `severity`; `plan` the drive (fine grid, world frame)."""

    plan: Plan
    kind: Optional[str] = None
    severity: Optional[float] = None


def draw(logs: HumanLogs, rng: np.random.Generator, family: str) -> tuple[bool, float]:
    """(is the log of a positive scene of `family` a mistake, the severity of a mistake): always two draws, in
    this order (so a family's rate changes which scenes log a mistake, never a severity or a layout)."""
    mistake = bool(rng.random() < logs.rate(family))
    return mistake, float(rng.beta(logs.severity_a, logs.severity_b))


def graded_mistake(fam, scenario, plan: Plan, rng: np.random.Generator, severity: float, kinds: list[str]) -> Optional[LoggedDrive]:
    """The first of `kinds` (in order) this scene offers, at `severity`: up to `ATTEMPTS_PER_KIND` knob
    draws each, the first that differs enough from the expert's `plan` (`negatives.differs_enough`, scaled
    by severity). None when none does."""
    for kind in kinds:
        for _ in range(ATTEMPTS_PER_KIND):
            mistake = fam.negative(scenario, plan, kind, rng, severity)
            if mistake is None:
                break  # this scene offers no such mistake
            if differs_enough(plan, mistake, severity=severity):
                return LoggedDrive(mistake, kind, float(severity))
    return None


def positive_log(fam, scenario, plan: Plan, logs: HumanLogs, rng: np.random.Generator) -> LoggedDrive:
    """The log of a positive scene: a mistake with probability `logs.rate(fam.name)` (kind order and knobs
    from `rng`, after the two `draw`s), else the expert's plan."""
    mistake, severity = draw(logs, rng, fam.name)
    if mistake and fam.negative_kinds:
        kinds = [fam.negative_kinds[i] for i in rng.permutation(len(fam.negative_kinds))]
        logged = graded_mistake(fam, scenario, plan, rng, severity, kinds)
        if logged is not None:
            return logged
    return LoggedDrive(plan)
