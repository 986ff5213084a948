"""Each enumeration of the project (train targets, action sources, KL estimators, NAVSIM versions, sample types,
shaping regions, weight-sync backends, reference modes, group reasoning) is spelled out once, where it is defined; every other
module imports it. Checked on the source: a tuple, list or set literal holding exactly an enumeration's values
may appear only once in rl/, actors/, rewards/ and sim/."""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rl", "actors", "rewards", "sim")


def test_every_enumeration_is_spelled_out_once():
    from actors.weight_sync import SYNC_BACKENDS
    from rewards.shaping import REGIONS
    from rl.config import REFERENCE_MODES, RESUME_MODES, TRAIN_TARGETS
    from rl.config import KL_ESTIMATORS
    from rl.policy.config import ACTION_SOURCES, FLOW_STARTS, GROUP_REASONING
    from sim.conventions import SAMPLE_TYPES, VERSIONS

    enumerations = [TRAIN_TARGETS, ACTION_SOURCES, KL_ESTIMATORS, VERSIONS, SAMPLE_TYPES, REGIONS, SYNC_BACKENDS,
                    REFERENCE_MODES, RESUME_MODES, GROUP_REASONING, FLOW_STARTS]
    wanted = {frozenset(e): e for e in enumerations}
    places = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    values = [e.value for e in node.elts]
                    key = frozenset(values)
                    if key in wanted and len(values) == len(key):
                        places[wanted[key]].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert set(places) == set(wanted.values())  # the scan sees every definition
    repeated = {e: p for e, p in places.items() if len(p) > 1}
    assert repeated == {}, f"spelled out more than once (import the definition instead): {repeated}"
