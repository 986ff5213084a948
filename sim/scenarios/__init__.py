"""The synthetic driving world: procedural maps, other road users, a rule-based expert and scenario
families with positive, negative and recovery samples and mReasoning-style labels.

Public entry point (the dataset writer's):
    FAMILIES                                     tuple of family names (fixed order)
    make_scene(family, seed, sample_type="pos")  -> Scene, deterministic; cameras left empty
    generate(family, seed, sample_type, kind)    the same with an explicit negative / recovery kind

A scene's frame is the ego frame at t = 0. `Scene.future` is the expert's ground truth (10 rear-axle
poses at 0.5 s); "neg" scenes add `negative_trajectory` / `negative_kind` (see `negatives`), "rec" scenes
start from a perturbed ego state and carry the correction as `recovery_trajectory` (= `future`) with
`recovery_kind` (see `recovery`). Every ground truth is checked by driving it with NAVSIM's tracker and
bicycle model (`sim.kinematics`). Decisions use the vocabulary of `reasoning` (LONGITUDINAL_DECISIONS,
LATERAL_DECISIONS); `reasoning.classify_*` and `reasoning.parse_decisions` let a checker compare a trace
with a trajectory.

Modules: paths (Frenet paths, lateral profiles), road / intersection (map builder), traffic (other road
users), longitudinal (IDM with rules), checks (overlaps, drivable area), expert, negatives, recovery,
reasoning, assemble (world -> Scene, driving command), generator (seeding, entry point), families/.
"""
from sim.scenarios.generator import FAMILIES, GenerationError, generate, make_scene
from sim.scenarios.negatives import NEGATIVE_KINDS
from sim.scenarios.reasoning import FAST_TEXT, LATERAL_DECISIONS, LONGITUDINAL_DECISIONS
from sim.scenarios.recovery import RECOVERY_KINDS

__all__ = [
    "FAMILIES",
    "make_scene",
    "generate",
    "GenerationError",
    "NEGATIVE_KINDS",
    "RECOVERY_KINDS",
    "LONGITUDINAL_DECISIONS",
    "LATERAL_DECISIONS",
    "FAST_TEXT",
]
