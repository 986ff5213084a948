"""Whether `python -m sim.generate --resume` may complete a dataset directory: the options it was made with
(its manifest, else each shard's own record) must be the given ones, and it may hold no shard beyond the
requested scenes. These checks only read; a refusal lists every differing option with the dataset's value
and the given one."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sim.dataset import DatasetError, find_manifest, open_shard, read_manifest, shard_metadata

if TYPE_CHECKING:
    from sim.generate import GeneratorOptions

_RETRY = "resume with the dataset's options, or pass --overwrite (without --resume) to replace it"
# The splits summary of a `--splits` run, beside the split folders. Its leading underscore makes Parquet readers
# skip it, as they skip each split's `_manifest.json`, so the parent folder reads as one table of every split.
SPLITS_SUMMARY = "_splits.json"
LEGACY_SPLITS_SUMMARY = "splits.json"  # the name older versions wrote; still read, replaced on the next write


def find_splits_summary(out: str | Path) -> Optional[Path]:
    """out/_splits.json, else an older dataset's out/splits.json, else None."""
    for name in (SPLITS_SUMMARY, LEGACY_SPLITS_SUMMARY):
        if (Path(out) / name).is_file():
            return Path(out) / name
    return None


class ResumeError(ValueError):
    """`--resume` of a dataset made with other options (or holding shards another run left)."""


def _option_view(split: str, num_scenes: Optional[int], seed: Any, generator: Optional[dict]) -> dict[str, Any]:
    """What makes a split, keyed by the command-line option that sets it (`generator`: `GeneratorOptions.to_json`)."""
    view: dict[str, Any] = {"--split": split, "--seed": seed}
    if num_scenes is not None:
        view["--num-scenes (or --splits NAME=COUNT)"] = num_scenes
    generator = dict(generator or {})
    if "families" in generator:
        view["--families"] = ",".join(generator["families"])
    for key, flag in (("neg_share", "--neg-share"), ("rec_share", "--rec-share"), ("shard_size", "--shard-size")):
        if key in generator:
            view[flag] = generator[key]
    if "families" in generator:  # a generator record: human logs are off unless it names them
        human = generator.get("human_logs")
        view["--human-logs"] = human is not None
        for key, value in sorted((human or {}).items()):
            view["--" + key.replace("_", "-")] = value
    if "camera" in generator:
        camera = generator["camera"]
        view["--no-images"] = camera is None
        for key, value in sorted((camera or {}).items()):
            view[{"height": "--height", "width": "--width"}.get(key, f"camera.{key}")] = value
    return view


def _differences(recorded: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """'OPTION: the dataset has X, given Y' for every option whose values differ."""
    missing = "(not set)"
    return [f"{key}: the dataset has {recorded.get(key, missing)}, given {given.get(key, missing)}"
            for key in dict.fromkeys([*recorded, *given]) if recorded.get(key, missing) != given.get(key, missing)]


def check_resume(out: str | Path, num_scenes: int, seed: int, options: "GeneratorOptions", split: str = "train") -> None:
    """Raise `ResumeError` unless resuming `out` with these options keeps every shard it holds: the manifest's
    options (else, for a run that died before writing one, each shard's) must equal the given ones, and no
    shard may lie beyond this dataset's shards. Reads only; nothing is written."""
    out = Path(out)
    if not out.is_dir():
        return
    given = _option_view(split, num_scenes, seed, options.to_json())
    manifest_path = find_manifest(out)
    problems: list[str] = []
    if manifest_path is not None:
        try:
            manifest = read_manifest(out)
        except DatasetError as e:
            raise ResumeError(f"{e}; cannot resume it: pass --overwrite to replace it") from e
        if "generator" not in manifest:
            raise ResumeError(f"{manifest_path}: not made by `python -m sim.generate` (no generator options); "
                              "cannot resume it: choose another --out or pass --overwrite to replace it")
        recorded = _option_view(manifest.get("split"), manifest.get("num_scenes"), manifest.get("seed"), manifest["generator"])
        problems += _differences(recorded, given)
    num_shards = math.ceil(num_scenes / options.shard_size)
    # The shards are checked too: a run that died before its manifest (older layout), or one left in place.
    for path in [] if problems else sorted(out.glob("shard-*.parquet")):
        index = re.fullmatch(r"shard-(\d+)\.parquet", path.name)
        if index is None or int(index.group(1)) >= num_shards:
            problems.append(f"{path.name}: not one of the {num_shards} shard(s) of {num_scenes} scenes "
                            "(left by a run with more scenes or another --shard-size)")
            continue
        try:
            stored = shard_metadata(open_shard(path))
        except DatasetError:
            continue  # unreadable: written again
        shard = int(index.group(1))
        first = shard * options.shard_size
        rows = min(options.shard_size, num_scenes - first)
        own = _option_view(stored.get("split"), None, stored.get("seed"), stored.get("generator"))
        shard_differences = _differences(own, {k: v for k, v in given.items() if k in own})
        if shard_differences:
            problems += [f"{path.name}: {d}" for d in shard_differences]
        elif (stored.get("first_index"), stored.get("rows")) != (first, rows):
            problems.append(f"{path.name}: holds scenes {stored.get('first_index')}.. ({stored.get('rows')} rows), "
                            f"this dataset's shard {shard} holds scenes {first}.. ({rows} rows): another --num-scenes")
    if problems:
        source = manifest_path.name if manifest_path is not None else "its shards"
        raise ResumeError(f"{out}: --resume with options that differ from the dataset's ({source}); nothing was written:\n  "
                          + "\n  ".join(problems) + "\n" + _RETRY)


def check_splits_resume(out: str | Path, splits: dict[str, int]) -> None:
    """Raise `ResumeError` unless `splits` are the splits recorded in the splits summary (when there is one)."""
    summary_path = find_splits_summary(out)
    if summary_path is None:
        return
    try:
        recorded = {name: entry["num_scenes"] for name, entry in json.loads(summary_path.read_text()).items()}
    except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise ResumeError(f"{summary_path}: not a splits summary ({type(e).__name__}: {e})") from e
    if recorded != dict(splits):
        text = lambda d: ",".join(f"{k}={v}" for k, v in d.items())  # noqa: E731
        raise ResumeError(f"{out}: --resume with options that differ from the dataset's ({summary_path.name}); nothing was "
                          f"written:\n  --splits: the dataset has {text(recorded)}, given {text(splits)}\n{_RETRY}")
