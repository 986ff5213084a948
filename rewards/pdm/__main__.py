"""Score the plan of scene JSON files with NAVSIM's PDMS (v1) and EPDMS (v2).

    python -m rewards.pdm SCENE.json|DIR [--version v1|v2|both] [--out FILE.jsonl] [--verbose]

Prints one table row per scene and version; --out writes one JSON line per scene with the keys of the
output section of scene_json.md ({"scene", "v1": {...}, "v2": {...}}).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rewards.pdm.scorer import PDMScorer
from sim.scene_json import SceneJsonError, load_scene_json

COLUMNS = {
    "v1": ["NC", "DAC", "TTC", "EP", "C", "DDC_weight0", "PDMS"],
    "v2": ["NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC", "EPDMS"],
}


def score_file(path: Path, versions: list[str], verbose: bool = False) -> dict:
    """{"scene": file name, version: result} for the plan of one scene JSON file."""
    out: dict = {"scene": path.name}
    for version in versions:
        scene, plan, notes = load_scene_json(path)  # fresh per version: PDM-Closed differs between versions
        if plan is None:
            raise SceneJsonError(f"{path.name}: trajectory: missing (nothing to score)")
        scorer = PDMScorer(version)
        result = scorer.score(scorer.prepare(scene), plan, verbose=verbose)[0]
        extra = []
        if version == "v2":
            if scene.human_trajectory is None:
                extra.append("no human_trajectory given: human penalty filter off (NAVSIM's evaluation has it on)")
            if scene.previous_frame is None:
                extra.append("no previous_frame given: EC unknown, dropped from the weighted average (/14)")
        relevant = [n for n in notes if "driving command" not in n and not (version == "v1" and "(HC)" in n)]
        result["notes"] = relevant + result["notes"] + extra
        out[version] = result
    return out


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) and value not in (0.0, 0.5, 1.0) else f"{value:g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewards.pdm", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a scene JSON file or a directory of them")
    parser.add_argument("--version", choices=["v1", "v2", "both"], default="both")
    parser.add_argument("--out", type=Path, help="write one JSON line per scene here")
    parser.add_argument("--verbose", action="store_true", help="add the simulated 10 Hz states to the JSON")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"{args.path}: no such file or directory")
    files = sorted(args.path.glob("*.json")) if args.path.is_dir() else [args.path]
    versions = ["v1", "v2"] if args.version == "both" else [args.version]
    lines, failed = [], 0
    rows: dict[str, list[str]] = {v: [] for v in versions}
    for path in files:
        try:
            result = score_file(path, versions, args.verbose)
        except (SceneJsonError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        lines.append(json.dumps(result))
        for version in versions:
            cells = [_cell(result[version].get(c)) for c in COLUMNS[version]]
            rows[version].append(f"{version}: {path.name[:28]:<28} " + " ".join(f"{c:>7}" for c in cells))
    for version in versions:
        print(f"{version}: {'scene':<28} " + " ".join(f"{c:>7}" for c in COLUMNS[version]))
        print("\n".join(rows[version]))
    if args.out:
        args.out.write_text("\n".join(lines) + ("\n" if lines else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
