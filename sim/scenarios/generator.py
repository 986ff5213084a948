"""Deterministic scene generation: (family, seed, sample type) -> `Scene`.

Randomness comes only from numpy Generators seeded with (crc32(family), seed, purpose): the layout, the
negative, the recovery, the wording and the logged human driver each have their own stream, so the positive
scene of a seed is the same whatever else is generated, and `neg` / `rec` variants are built from the same
base scenario. With `human` (`sim.scenarios.human.HumanLogs`; None, the default, leaves every scene as it
was) each scene carries the drive a human logged in `Scene.human_trajectory`, mistakes included, and a
negative scene's `negative_trajectory` is its logged mistake at a drawn severity.
"""
from __future__ import annotations

import functools
import zlib
from typing import Optional

import numpy as np

from sim import conventions as C
from sim.geometry import absolute_to_relative
from sim.scene import Scene
from sim.scenarios.assemble import build_scene as assemble_scene
from sim.scenarios.checks import DrivableArea
from sim.scenarios.expert import Plan, drive_expert
from sim.scenarios.families import FAMILY_CLASSES
from sim.scenarios.human import HumanLogs, LoggedDrive, draw, graded_mistake, positive_log
from sim.scenarios.longitudinal import CURRENT
from sim.scenarios.scenario import Scenario

FAMILIES = tuple(FAMILY_CLASSES)
_FAMILIES = {name: cls() for name, cls in FAMILY_CLASSES.items()}
_PURPOSES = {"layout": 0, "neg": 1, "rec": 2, "words": 3, "human": 4}
MAX_LAYOUT_ATTEMPTS = 60
RECOVERY_SCALES = (1.0, 0.8, 0.6, 0.45, 0.3)


class GenerationError(RuntimeError):
    """No valid scene could be drawn for a (family, seed) (a bug in a family's layout ranges)."""


def family(name: str):
    if name not in _FAMILIES:
        raise ValueError(f"unknown scenario family {name!r}; known families: {', '.join(FAMILIES)}")
    return _FAMILIES[name]


def stream(family_name: str, seed: int, purpose: str) -> np.random.Generator:
    """The numpy Generator for one purpose of one (family, seed)."""
    return np.random.default_rng(np.random.SeedSequence([zlib.crc32(family_name.encode()), int(seed), _PURPOSES[purpose]]))


def _check_args(family_name: str, seed: int, sample_type: str) -> None:
    family(family_name)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if sample_type not in C.SAMPLE_TYPES:
        raise ValueError(f"sample_type must be 'pos', 'neg' or 'rec', got {sample_type!r}")


@functools.lru_cache(maxsize=4)
def base_scenario(family_name: str, seed: int) -> tuple[Scenario, Plan, DrivableArea]:
    """The family's scenario for this seed and the expert's accepted plan on it (the last few are kept:
    the pos, neg and rec scenes of a seed share it; nothing downstream modifies them)."""
    fam = family(family_name)
    rng = stream(family_name, seed, "layout")
    reason = ""
    for _ in range(MAX_LAYOUT_ATTEMPTS):
        scenario = fam.layout(rng)
        drivable = DrivableArea(scenario.builder.areas)
        plan = drive_expert(scenario, drivable, accept=fam.accept)
        if plan.ok:
            return scenario, plan, drivable
        reason = plan.reason
    raise GenerationError(f"family {family_name!r} seed {seed}: no valid scenario in {MAX_LAYOUT_ATTEMPTS} draws (last: {reason})")


def token_for(family_name: str, seed: int, sample_type: str) -> str:
    return f"{family_name}-{int(seed):08d}-{sample_type}"


def make_scene(family: str, seed: int, sample_type: str = "pos", human: Optional[HumanLogs] = None) -> Scene:
    """The public entry point: a deterministic scene of `family` for `seed` ("pos", "neg" or "rec").

    The negative or recovery kind is drawn from the family's kinds with the seed. `human`: the logged
    human driver's options (None: the scene's log is the expert's plan, as without them)."""
    return generate(family, seed, sample_type, human=human)


def generate(family_name: str, seed: int, sample_type: str = "pos", kind: Optional[str] = None,
             human: Optional[HumanLogs] = None, severity: Optional[float] = None) -> Scene:
    """`make_scene` with an optional explicit negative / recovery kind. ValueError if the family has no
    such kind, or the scene of this seed offers none (no car to squeeze next to, no room to correct).
    `severity` (with `human`, for a neg scene): the mistake's severity in [0, 1] instead of a drawn one."""
    _check_args(family_name, seed, sample_type)
    if severity is not None and (human is None or sample_type != "neg" or not 0.0 <= severity <= 1.0):
        raise ValueError(f"severity {severity!r}: only for a 'neg' scene with human logs, in [0, 1]")
    fam = family(family_name)
    if sample_type == "neg" and not fam.negative_kinds:
        raise ValueError(f"family {family_name!r} has no negative kinds")
    if sample_type == "rec" and not fam.recovery_kinds:
        raise ValueError(f"family {family_name!r} has no recovery kinds")
    kinds = fam.negative_kinds if sample_type == "neg" else fam.recovery_kinds
    if kind is not None and kind not in kinds:
        raise ValueError(f"family {family_name!r} has no {sample_type} kind {kind!r} (it has {kinds})")
    scenario, plan, drivable = base_scenario(family_name, seed)
    token = token_for(family_name, seed, sample_type)
    if sample_type == "pos":
        reasoning = fam.reasoning(scenario, plan, stream(family_name, seed, "words"), None)
        scene = assemble_scene(scenario, plan, token, seed, "pos", reasoning)
        if human is not None:
            scene.human_trajectory = _logged_poses(plan, logged_drive(family_name, seed, human))
        return scene
    if sample_type == "neg":
        if human is not None and severity is None:
            _, severity = draw(human, stream(family_name, seed, "human"), family_name)
        return _negative_scene(fam, scenario, plan, token, seed, kind, severity)
    return _recovery_scene(fam, scenario, plan, drivable, token, seed, kind)


def logged_drive(family_name: str, seed: int, human: HumanLogs) -> LoggedDrive:
    """What the human logged on the positive scene of (family, seed): its mistake (kind, severity) or the
    expert's plan (`sim.scenarios.human.positive_log`)."""
    _check_args(family_name, seed, "pos")
    scenario, plan, _ = base_scenario(family_name, seed)
    return positive_log(family(family_name), scenario, plan, human, stream(family_name, seed, "human"))


def _logged_poses(plan: Plan, logged: LoggedDrive) -> np.ndarray:
    """The logged drive's plan poses (8, 3), in the ego frame at t = 0 of the expert's `plan`."""
    return absolute_to_relative(plan.poses[CURRENT], logged.plan.future_poses())[: C.NAVSIM_PLAN_POSES].copy()


def _ordered(kinds: tuple[str, ...], rng: np.random.Generator, kind: Optional[str]) -> list[str]:
    if kind is not None:
        return [kind]
    return [kinds[i] for i in rng.permutation(len(kinds))]


def _negative_scene(fam, scenario: Scenario, plan: Plan, token: str, seed: int, kind: Optional[str],
                    severity: Optional[float] = None) -> Scene:
    """The neg scene: the gross mistake (severity None), or the human's logged mistake at `severity`, which
    is then also the scene's log (`human_trajectory`)."""
    rng = stream(fam.name, seed, "neg")
    logged = graded_mistake(fam, scenario, plan, rng, 1.0 if severity is None else severity,
                            _ordered(fam.negative_kinds, rng, kind))
    if logged is not None:
        reasoning = fam.reasoning(scenario, plan, stream(fam.name, seed, "words"), None)
        scene = assemble_scene(scenario, plan, token, seed, "neg", reasoning, negative=logged.plan.future_poses(),
                               negative_kind=logged.kind)
        if severity is not None:
            scene.human_trajectory = _logged_poses(plan, logged)
        return scene
    if kind is not None:
        raise ValueError(f"family {fam.name!r} seed {seed}: the scene offers no {kind!r} negative")
    raise GenerationError(f"family {fam.name!r} seed {seed}: no negative differs from the ground truth")


def _recovery_scene(fam, scenario: Scenario, base: Plan, drivable: DrivableArea, token: str, seed: int, kind: Optional[str]) -> Scene:
    rng = stream(fam.name, seed, "rec")
    for candidate in _ordered(fam.recovery_kinds, rng, kind):
        first_side = 1.0 if rng.random() < 0.5 else -1.0
        attempts = [(scale, side) for scale in RECOVERY_SCALES for side in (first_side, -first_side)]
        for scale, side in attempts:
            try:
                perturbed = fam.recover(scenario, base, candidate, rng, side, scale)
            except ValueError:
                if kind is not None:
                    raise
                break
            plan = drive_expert(perturbed, drivable)
            if plan.ok:
                reasoning = fam.reasoning(perturbed, plan, stream(fam.name, seed, "words"), candidate)
                return assemble_scene(perturbed, plan, token, seed, "rec", reasoning, recovery_kind=candidate)
    if kind is not None:
        raise ValueError(f"family {fam.name!r} seed {seed}: no {kind!r} start could be corrected safely")
    raise GenerationError(f"family {fam.name!r} seed {seed}: no recovery start could be corrected safely")
