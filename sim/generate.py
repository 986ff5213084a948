"""Generate synthetic scene datasets: `python -m sim.generate --num-scenes N --seed S --out DIR`.

Scene i of a split gets the seed `split_base_seed(S, split) + i`; the split bases are 10 M apart, so train,
val and test never share a scene seed. Families are dealt round-robin (scene i has family i mod F, so
every family gets the same count within one), and within a family the sample type follows a golden-ratio
sequence that meets the negative and recovery shares to within about one scene for any count. Scenes are made by
`sim.scenarios.make_scene`, rendered by `sim.cameras`, and written in shards of fixed index ranges; worker
processes make chunks of scenes and the main process writes the shards in order, so the files are the same
byte for byte for any number of workers. Each shard is written atomically. The manifest is written first, marked
incomplete, and completed last, so an interrupted run is not read as a dataset. `--resume` keeps the shards
a previous run completed, and refuses, before writing anything, options that differ from the dataset's own
(naming each option with the dataset's value and the given one); a smaller split is such an option, so no
shard of a larger run is left behind. Arguments are checked before anything is generated.

Splits mode: `--splits train=2000,val=200,test=200` writes DIR/train, DIR/val, DIR/test, each a dataset,
and DIR/_splits.json (skipped by Parquet readers, so DIR reads as one table of every split).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from sim import conventions as C
from sim.cameras import CameraConfig, render_cameras
from sim.dataset import (
    LEGACY_MANIFEST_NAME, MANIFEST_NAME, SCHEMA_VERSION, SHARD_PATTERN, DatasetError, open_shard, scene_to_row,
    shard_metadata, write_manifest, write_shard,
)
from sim.generate_resume import (
    LEGACY_SPLITS_SUMMARY,
    SPLITS_SUMMARY,
    ResumeError,
    check_resume,
    check_splits_resume,
)
from sim.scenarios.human import HumanLogs

SPLIT_SLOTS = {"train": 0, "val": 1, "test": 2}
HASHED_SLOTS = 997  # other split names take slot 3 + crc32(name) % 997
SEEDS_PER_SPLIT = 10_000_000
# Scene seeds are stored as int64 and seed numpy's SeedSequence (any int >= 0): the largest base seed keeps
# every scene seed of every split slot within int64.
MAX_SEED = 2**63 - (3 + HASHED_SLOTS) * SEEDS_PER_SPLIT  # the last seed of the last slot is 2**63 - 1
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
FAMILY_PHASE = math.sqrt(2.0) - 1.0
CHUNK_SCENES = 16  # scenes per unit of work sent to a worker process
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class GeneratorOptions:
    """What a dataset is made of (stored in the manifest and in every shard)."""

    families: tuple[str, ...]
    neg_share: float = 0.2
    rec_share: float = 0.1
    camera: Optional[CameraConfig] = field(default_factory=CameraConfig)  # None: no images
    shard_size: int = 256
    human_logs: Optional[HumanLogs] = None  # the logged human driver (sim.scenarios.human); None: off

    def __post_init__(self):
        if not self.families:
            raise ValueError("generator options: no families")
        if not (0.0 <= self.neg_share and 0.0 <= self.rec_share and self.neg_share + self.rec_share <= 1.0):
            raise ValueError(f"generator options: neg_share {self.neg_share} and rec_share {self.rec_share} must be >= 0 "
                             "and sum to at most 1")
        if self.shard_size < 1:
            raise ValueError(f"generator options: shard_size {self.shard_size} must be >= 1")
        unknown = sorted(set(self.human_logs.family_rates) - set(self.families)) if self.human_logs else []
        if unknown:
            raise ValueError(f"generator options: human logs family_rates name {unknown}, not among the families "
                             f"generated ({', '.join(self.families)})")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["families"] = list(self.families)
        if self.camera is not None:
            out["camera"]["names"] = list(self.camera.names)
        # recorded only when on: datasets made without human logs keep their manifests and shards byte for byte
        out.pop("human_logs")
        if self.human_logs is not None:
            out["human_logs"] = self.human_logs.to_json()
        return out


@dataclass(frozen=True)
class SceneSpec:
    """Scene `index` of a split: its family, seed and sample type."""

    index: int
    family: str
    seed: int
    sample_type: str


def split_base_seed(seed: int, split: str) -> int:
    """First scene seed of `split`: train, val and test take slots 0, 1, 2; other names a slot from a hash."""
    slot = SPLIT_SLOTS.get(split)
    if slot is None:
        slot = 3 + zlib.crc32(split.encode()) % HASHED_SLOTS
    return seed + slot * SEEDS_PER_SPLIT


def check_request(num_scenes: int, seed: int, split: str) -> None:
    """Refuse a request that cannot make a dataset, before anything is generated: ValueError naming the option."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed: {seed!r} is not an integer in [0, {MAX_SEED}] (scene seeds are stored as int64)")
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or not 1 <= num_scenes <= SEEDS_PER_SPLIT:
        raise ValueError(f"split {split!r}: {num_scenes!r} scenes; a split needs 1 to {SEEDS_PER_SPLIT} scenes")
    if not isinstance(split, str) or not SPLIT_NAME.fullmatch(split):
        raise ValueError(f"--split: {split!r} is not a split name (letters, digits, '_', '-', '.'; e.g. train)")


def sample_type_of(k: int, family_index: int, neg_share: float, rec_share: float) -> str:
    """Sample type of the k-th scene of family number `family_index`: the golden-ratio sequence
    u_k = frac((k + 1/2) * 0.618... + family_index * 0.414...) falls below neg_share for negatives, then below
    neg_share + rec_share for recoveries. Each family meets the shares to within about one scene for any count,
    and the phase shift per family spreads the rarer types over the families of a small dataset."""
    u = ((k + 0.5) * GOLDEN + family_index * FAMILY_PHASE) % 1.0
    if u < neg_share:
        return "neg"
    if u < neg_share + rec_share:
        return "rec"
    return "pos"


def scene_specs(num_scenes: int, seed: int, split: str, options: GeneratorOptions) -> list[SceneSpec]:
    """The family, seed and sample type of every scene of a split."""
    if num_scenes > SEEDS_PER_SPLIT:
        raise ValueError(f"{num_scenes} scenes exceed the {SEEDS_PER_SPLIT} seeds of a split")
    base = split_base_seed(seed, split)
    n = len(options.families)
    return [
        SceneSpec(i, options.families[i % n], base + i, sample_type_of(i // n, i % n, options.neg_share, options.rec_share))
        for i in range(num_scenes)
    ]


def make_rows(specs: Sequence[SceneSpec], split: str, camera: Optional[CameraConfig],
              human_logs: Optional[HumanLogs] = None) -> tuple[list[dict[str, Any]], list[dict]]:
    """Dataset rows of `specs` (make each scene, render its cameras, encode it: a pure function of its input)
    and the substitutions made: a scene whose negative or recovery variant cannot be made for its seed is
    written as the positive scene of that seed, and noted."""
    from sim.scenarios import GenerationError, make_scene

    rows, substitutions = [], []
    human = {} if human_logs is None else {"human": human_logs}
    for spec in specs:
        try:
            scene = make_scene(spec.family, spec.seed, spec.sample_type, **human)
        except GenerationError as e:
            if spec.sample_type == "pos":
                raise
            scene = make_scene(spec.family, spec.seed, "pos", **human)
            substitutions.append({"index": spec.index, "family": spec.family, "seed": spec.seed,
                                  "requested": spec.sample_type, "written": "pos", "reason": str(e)})
        if camera is not None:
            scene.cameras = render_cameras(scene, camera)
        rows.append(scene_to_row(scene, split))
    return rows, substitutions


def _make_rows_chunk(chunk: tuple) -> tuple[list[dict[str, Any]], list[dict]]:
    return make_rows(*chunk)


def _single_thread_worker() -> None:
    for name in THREAD_ENV:
        os.environ[name] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _shard_identity(split: str, options: GeneratorOptions, shard: int, specs: Sequence[SceneSpec], seed: int) -> dict:
    """What a shard is made from; stored in its metadata (with its substitutions) to recognise it on resume."""
    return {"split": split, "seed": seed, "shard": shard, "first_index": specs[0].index, "rows": len(specs),
            "generator": options.to_json()}


def _completed(path: Path, identity: dict) -> bool:
    """Whether `path` is a readable shard written from exactly `identity`."""
    if not path.exists():
        return False
    try:
        shard = open_shard(path)
    except DatasetError:
        return False
    stored = shard_metadata(shard)
    return {k: stored.get(k) for k in identity} == identity and shard.metadata.num_rows == identity["rows"]


def _existing_files(out: Path) -> list[Path]:
    """The dataset files in `out` (shards and manifest) that a new run would replace."""
    if not out.is_dir():
        return []
    manifests = [out / name for name in (MANIFEST_NAME, LEGACY_MANIFEST_NAME) if (out / name).is_file()]
    return sorted(out.glob("shard-*.parquet")) + manifests


def _preflight(out: Path, num_scenes: int, seed: int, options: GeneratorOptions, split: str,
               resume: bool, overwrite: bool) -> None:
    """Every refusal of `generate_dataset`, before it writes anything."""
    check_request(num_scenes, seed, split)
    if resume and overwrite:
        raise ValueError("--resume keeps a dataset and --overwrite replaces it: pass one of them")
    existing = _existing_files(out)
    if existing and not (resume or overwrite):
        raise FileExistsError(f"{out} already holds a dataset ({existing[0].name}, ...): pass --overwrite to replace it "
                              "or --resume to complete it")
    if resume:
        check_resume(out, num_scenes, seed, options, split)


def generate_dataset(
    out: str | Path,
    num_scenes: int,
    seed: int,
    options: GeneratorOptions,
    split: str = "train",
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a dataset of `num_scenes` scenes of `split` to directory `out`; returns its manifest.

    Refuses before writing anything: bad arguments (ValueError), an existing dataset without `resume` or
    `overwrite` (FileExistsError), a `resume` with other options than the dataset's (`ResumeError`)."""
    out = Path(out)
    _preflight(out, num_scenes, seed, options, split, resume, overwrite)
    if overwrite:
        for path in _existing_files(out):
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)

    specs = scene_specs(num_scenes, seed, split, options)
    shards = [specs[i:i + options.shard_size] for i in range(0, num_scenes, options.shard_size)]
    paths = [out / SHARD_PATTERN.format(s) for s in range(len(shards))]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "split": split,
        "num_scenes": num_scenes,
        "seed": seed,
        "scene_seeds": {"first": split_base_seed(seed, split), "last": split_base_seed(seed, split) + num_scenes - 1},
        "image_size": [options.camera.height, options.camera.width] if options.camera else None,
        "cameras": list(options.camera.names) if options.camera else [],
        "generator": options.to_json(),
        "shards": [{"file": path.name, "rows": len(shard_specs)} for path, shard_specs in zip(paths, shards)],
    }
    # Written first, marked incomplete: the options of an interrupted run stay on record for --resume, and
    # readers refuse the directory until the last shard is in.
    write_manifest(out, {**manifest, "complete": False})
    todo = []  # (path, specs, identity) of the shards still to write
    for s, (path, shard_specs) in enumerate(zip(paths, shards)):
        identity = _shard_identity(split, options, s, shard_specs, seed)
        if not (resume and _completed(path, identity)):
            todo.append((path, shard_specs, identity))

    chunks = [(shard_specs[c:c + CHUNK_SCENES], split, options.camera, options.human_logs)
              for _, shard_specs, _ in todo for c in range(0, len(shard_specs), CHUNK_SCENES)]
    bar = _progress_bar(sum(len(chunk[0]) for chunk in chunks), f"{split} scenes", progress)
    results = _run(chunks, workers)
    for path, shard_specs, identity in todo:
        rows: list[dict] = []
        substitutions: list[dict] = []
        while len(rows) < len(shard_specs):
            chunk_rows, chunk_substitutions = next(results)
            rows += chunk_rows
            substitutions += chunk_substitutions
            bar.update(len(chunk_rows))
        write_shard(path, rows, {**identity, "substitutions": substitutions})
    bar.close()

    # Count what the shards hold (resumed shards included), not what was asked for.
    counts: dict[str, dict[str, int]] = {f: {t: 0 for t in C.SAMPLE_TYPES} for f in options.families}
    substitutions = []
    for path in paths:
        shard = open_shard(path)
        substitutions += shard_metadata(shard).get("substitutions", [])
        table = shard.read(columns=["family", "sample_type"])
        for family, sample_type in zip(table["family"].to_pylist(), table["sample_type"].to_pylist()):
            counts[family][sample_type] += 1
    manifest.update({
        "counts": counts,
        "counts_by_sample_type": {t: sum(c[t] for c in counts.values()) for t in C.SAMPLE_TYPES},
        "substitutions": substitutions,
        "complete": True,
    })
    write_manifest(out, manifest)
    return manifest


def _run(chunks: list[tuple], workers: int) -> Iterator[tuple[list[dict], list[dict]]]:
    """`make_rows` of each chunk, in order, made in this process or in `workers` single-threaded processes."""
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _make_rows_chunk(chunk)
        return
    import multiprocessing

    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update({name: "1" for name in THREAD_ENV})  # inherited by the spawned workers at start-up
    try:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_single_thread_worker) as pool:
            yield from pool.imap(_make_rows_chunk, chunks)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="scene", disable=not enabled, dynamic_ncols=True)


def generate_splits(out: str | Path, splits: dict[str, int], seed: int, options: GeneratorOptions, **kwargs) -> dict[str, Any]:
    """Write one dataset per split under `out/<split>`; returns {split: manifest} (also in out/_splits.json, which
    replaces an older dataset's out/splits.json). Every split is checked (`generate_dataset`'s refusals; with
    `resume`, the splits of the summary) before any is written."""
    out = Path(out)
    if not splits:
        raise ValueError("--splits: no split given")
    resume, overwrite = kwargs.get("resume", False), kwargs.get("overwrite", False)
    if resume:
        check_splits_resume(out, splits)
    for name, n in splits.items():
        _preflight(out / name, n, seed, options, name, resume, overwrite)
    manifests = {name: generate_dataset(out / name, n, seed, options, split=name, **kwargs) for name, n in splits.items()}
    summary = {name: {"path": name, "num_scenes": m["num_scenes"], "scene_seeds": m["scene_seeds"]} for name, m in manifests.items()}
    (out / SPLITS_SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out / LEGACY_SPLITS_SUMMARY).unlink(missing_ok=True)
    return manifests


def parse_splits(text: str) -> dict[str, int]:
    """'train=2000,val=200' -> {'train': 2000, 'val': 200}; every split named once, with 1 to
    `SEEDS_PER_SPLIT` scenes."""
    splits: dict[str, int] = {}
    for part in text.split(","):
        name, sep, count = part.partition("=")
        name, count = name.strip(), count.strip()
        if not sep or not SPLIT_NAME.fullmatch(name) or not count.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME=COUNT (e.g. train=2000,val=200)")
        if name in splits:
            raise argparse.ArgumentTypeError(f"split {name!r} is given twice")
        if not 1 <= int(count) <= SEEDS_PER_SPLIT:
            raise argparse.ArgumentTypeError(f"split {name!r} has {int(count)} scenes; a split needs 1 to {SEEDS_PER_SPLIT}")
        splits[name] = int(count)
    return splits


def parse_family_rates(text: str) -> dict[str, float]:
    """'curve=0.5,cut_in=0.1' -> {'curve': 0.5, 'cut_in': 0.1}; each family once, each rate in [0, 1]."""
    rates: dict[str, float] = {}
    for part in text.split(","):
        name, sep, rate = (x.strip() for x in part.partition("="))
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{part!r} is not FAMILY=RATE (e.g. curve=0.5,cut_in=0.1)")
        if name in rates:
            raise argparse.ArgumentTypeError(f"family {name!r} is given twice")
        try:
            rates[name] = _share(rate)
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"family {name!r}: {err}") from None
    return rates


def _split_name(text: str) -> str:
    if not SPLIT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a split name (letters, digits, '_', '-', '.'; e.g. train)")
    return text


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _int_in(minimum: int, maximum: Optional[int] = None):
    """An argparse type: a decimal integer in [minimum, maximum]."""
    span = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text}")
        return value

    return parse


_positive_int = _int_in(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def human_logs_option(args: argparse.Namespace) -> Optional[HumanLogs]:
    """`HumanLogs` from --human-logs and its options (None without it); ValueError naming an option given
    without --human-logs."""
    given = {key: getattr(args, key) for key in ("mistake_rate", "severity_a", "severity_b", "family_rates")
             if getattr(args, key) is not None}
    if not args.human_logs:
        if given:
            flags = ", ".join("--" + key.replace("_", "-") for key in given)
            raise ValueError(f"{flags}: only with --human-logs (they shape the logged human driver's mistakes)")
        return None
    return HumanLogs(**given)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="dataset directory")
    p.add_argument("--num-scenes", type=_int_in(1, SEEDS_PER_SPLIT), help="scenes of the split (single-split mode)")
    p.add_argument("--splits", type=parse_splits, help="splits mode: NAME=COUNT,... e.g. train=2000,val=200,test=200")
    p.add_argument("--split", type=_split_name, default="train", help="split name in single-split mode (default train)")
    p.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help="base seed (default 0)")
    p.add_argument("--families", default=None, help="comma-separated scenario families (default: all)")
    p.add_argument("--neg-share", type=_share, default=0.2, help="share of negative scenes (default 0.2)")
    p.add_argument("--rec-share", type=_share, default=0.1, help="share of recovery scenes (default 0.1)")
    p.add_argument("--height", type=_positive_int, default=CameraConfig.height, help="camera image height (px)")
    p.add_argument("--width", type=_positive_int, default=CameraConfig.width, help="camera image width (px)")
    p.add_argument("--no-images", action="store_true", help="write no camera images")
    p.add_argument("--shard-size", type=_positive_int, default=256, help="scenes per shard (default 256)")
    human = HumanLogs()
    p.add_argument("--human-logs", action="store_true",
                   help="scenes carry a logged human drive (human_trajectory) with graded mistakes; negatives are those logs")
    p.add_argument("--mistake-rate", type=_share, default=None,
                   help=f"with --human-logs: share of positive scenes whose log is a mistake (default {human.mistake_rate})")
    p.add_argument("--severity-a", type=_positive_float, default=None,
                   help=f"with --human-logs: Beta(a, b) of a mistake's severity in [0, 1], a (default {human.severity_a})")
    p.add_argument("--severity-b", type=_positive_float, default=None,
                   help=f"with --human-logs: ... and b (default {human.severity_b}; mean severity a / (a + b))")
    p.add_argument("--family-rates", type=parse_family_rates, default=None,
                   help="with --human-logs: FAMILY=RATE,... a family's own mistake rate (default: --mistake-rate for all)")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--resume", action="store_true",
                      help="complete an interrupted run: keeps its shards; its options must be the dataset's")
    keep.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from sim.scenarios import FAMILIES

    if (args.num_scenes is None) == (args.splits is None):
        print("give either --num-scenes (one split) or --splits NAME=COUNT,...", file=sys.stderr)
        return 2
    families = tuple(FAMILIES) if args.families is None else tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; known: {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    try:
        camera = None if args.no_images else CameraConfig.from_any({"height": args.height, "width": args.width})
        options = GeneratorOptions(families, args.neg_share, args.rec_share, camera, args.shard_size, human_logs_option(args))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    common = dict(workers=args.workers, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    try:
        if args.splits is not None:
            manifests = generate_splits(args.out, args.splits, args.seed, options, **common)
        else:
            manifests = {args.split: generate_dataset(args.out, args.num_scenes, args.seed, options, split=args.split, **common)}
    except (FileExistsError, ResumeError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, m in manifests.items():
        note = f", {len(m['substitutions'])} written as pos (no neg/rec variant for their seed)" if m["substitutions"] else ""
        print(f"{name}: {m['num_scenes']} scenes, by sample type {m['counts_by_sample_type']}, {len(m['shards'])} shard(s){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
