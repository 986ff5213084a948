"""Score the plan of scene JSON files with NAVSIM's PDMS (v1) and EPDMS (v2).

    python -m rewards.pdm SCENE.json|DIR [--version v1|v2|both] [--out FILE.jsonl] [--verbose]

Prints one table row per scored scene and version; --out writes one JSON line per scene: the keys of the
output section of scene_json.md ({"scene", "v1": {...}, "v2": {...}}) for a scored scene, and
{"scene": file name, "error": why} for a scene that failed. A failing scene never stops the others.

--out is written only when every scene has been tried and at least one was scored, through a temporary file
in the same folder that then replaces FILE.jsonl, so an interrupted or entirely failed run leaves an existing one
as it was. It is checked before any scoring: it must not be a directory, its folder must exist and be
writable, and it must not be an input scene (nor a *.json file in the input folder, which the next run would
read as a scene).

exit status:
  0  every scene was scored
  1  some or all scenes failed (stderr: "N of M scenes failed"; error rows in --out, the scored rows kept)
  2  nothing was tried: bad arguments, a missing input, a folder without *.json files, a refused --out
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from rewards.pdm.scorer import VERSIONS, PDMScorer
from sim.scene_json import SceneJsonError, load_scene_json

COLUMNS = {
    "v1": ["NC", "DAC", "TTC", "EP", "C", "DDC_weight0", "PDMS"],
    "v2": ["NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC", "EPDMS"],
}
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
INPUT_PATTERN = "*.json"


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


def error_message(path: Path, exc: Exception) -> str:
    """The error of one scene, starting with its file name (scene JSON errors already do)."""
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text if text.startswith(f"{path.name}:") else f"{path.name}: {text}"


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) and value not in (0.0, 0.5, 1.0) else f"{value:g}"


def input_files(path: Path) -> list[Path]:
    """The scene files of an input: the file itself, or a folder's *.json entries (sorted by name)."""
    return sorted(path.glob(INPUT_PATTERN)) if path.is_dir() else [path]


def check_out(out: Path, inputs: Path, files: list[Path]) -> Optional[str]:
    """Why --out cannot be used (None if it can): checked before any scoring."""
    if out.is_dir():
        return f"--out {out}: is a directory"
    folder = out.parent
    if not folder.exists():
        return f"--out {out}: folder {folder} does not exist"
    if not folder.is_dir():
        return f"--out {out}: {folder} is not a folder"
    resolved = out.resolve()
    for f in files:
        if f.resolve() == resolved or (out.exists() and f.exists() and os.path.samefile(f, out)):
            return f"--out {out}: is the input scene {f}; it would be overwritten"
    if inputs.is_dir() and resolved.parent == inputs.resolve() and fnmatch.fnmatch(out.name, INPUT_PATTERN):
        return f"--out {out}: is a {INPUT_PATTERN} file in the input folder {inputs} (it would be read as a scene)"
    return None


def open_temporary(out: Path):
    """A temporary file next to `out` (the later os.replace is atomic on one file system); proves the folder
    is writable before any scoring."""
    handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    return os.fdopen(handle, "w"), Path(name)


def _file_mode(out: Path) -> int:
    """The mode `out` keeps (an existing file's) or gets (a new file's, from the umask); mkstemp makes 0600."""
    if out.exists():
        return out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def main(argv=None) -> int:
    doc_head, _, doc_rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(prog="python -m rewards.pdm", description=doc_head,
                                     epilog=doc_rest.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a scene JSON file or a folder of them (*.json)")
    parser.add_argument("--version", choices=["v1", "v2", "both"], default="both")
    parser.add_argument("--out", type=Path, metavar="FILE.jsonl",
                        help="write one JSON line per scene here (replaced atomically)")
    parser.add_argument("--verbose", action="store_true", help="add the simulated 10 Hz states to the JSON")
    args = parser.parse_args(argv)  # exits with status 2 on bad arguments
    if not args.path.exists():
        parser.error(f"{args.path}: no such file or directory")
    files = input_files(args.path)
    if not files:
        parser.error(f"{args.path}: folder has no {INPUT_PATTERN} scene files")
    temporary = None
    if args.out is not None:
        problem = check_out(args.out, args.path, files)
        if problem is None:
            try:
                temporary = open_temporary(args.out)
            except OSError as exc:
                problem = f"--out {args.out}: cannot write in {args.out.parent}: {exc.strerror or exc}"
        if problem:
            parser.error(problem)
    try:
        return _score_all(files, args, temporary)
    finally:
        if temporary is not None:
            temporary[0].close()
            temporary[1].unlink(missing_ok=True)


def _score_all(files: list[Path], args, temporary) -> int:
    versions = list(VERSIONS) if args.version == "both" else [args.version]
    lines, failed = [], 0
    rows: dict[str, list[str]] = {v: [] for v in versions}
    for path in files:
        try:
            result = score_file(path, versions, args.verbose)
        except Exception as exc:  # any failure of one scene becomes its error row; the others go on
            message = error_message(path, exc)
            print(f"error: {message}", file=sys.stderr)
            lines.append(json.dumps({"scene": path.name, "error": message}))
            failed += 1
            continue
        lines.append(json.dumps(result))
        for version in versions:
            cells = [_cell(result[version].get(c)) for c in COLUMNS[version]]
            rows[version].append(f"{version}: {path.name[:28]:<28} " + " ".join(f"{c:>7}" for c in cells))
    for version in versions:
        if rows[version]:
            print(f"{version}: {'scene':<28} " + " ".join(f"{c:>7}" for c in COLUMNS[version]))
            print("\n".join(rows[version]))
    scored = len(files) - failed
    if failed:
        print(f"{failed} of {len(files)} scenes failed", file=sys.stderr)
    if temporary is not None:
        handle, name = temporary
        if scored:
            handle.write("\n".join(lines) + "\n")
            handle.close()
            os.chmod(name, _file_mode(args.out))
            os.replace(name, args.out)
        else:
            state = "left as it was" if args.out.exists() else "not written"
            print(f"no scene scored: {args.out} {state}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
