"""Scene datasets on disk: Parquet shards with a versioned schema, a manifest, and a streaming reader.

A dataset is a directory holding shards `shard-00000.parquet`, ... and a manifest `_manifest.json` (the
leading underscore makes Parquet readers skip it, so `pyarrow.parquet.read_table(DIR)` and
`pandas.read_parquet(DIR)` read the directory as one table). Datasets written before the rename keep
`manifest.json` and still read here. A directory without a manifest is not a dataset. One row per scene:
identifying columns, the whole scene as JSON (`sim.scene_json`), training columns ready to batch, and the
camera images as PNG bytes with their calibration. The schema version is stored in every shard's metadata
under `SCHEMA_VERSION_KEY`; a reader refuses shards of another version.

Training columns (float32, ego frame at t = 0 unless stated): `ego_history` (4, 3) rear-axle poses at
t = -1.5 ... 0 s; `velocity` (2,) and `acceleration` (2,) of the rear axle in the ego frame; `command_one_hot`
(4,); `future` (the ground truth; for `rec` rows the correction), `negative_trajectory`,
`recovery_trajectory` (10, 3) rear-axle poses at t = 0.5 ... 5 s, 0.5 s apart, whose first 8 are the NAVSIM
plan (the last two nullable, and stored as variable-length lists: `STORAGE_SCHEMA`). Every trajectory is
checked when written and when read (`check_trajectory`): a wrong pose count or a non-finite value is a
`DatasetError` naming the file, the row and scene token, and the count. Images: `images` holds camera-major PNGs, image `c * 4 + f` is camera `camera_names[c]` at
history frame f; calibration `camera_intrinsics` (3x3 row-major), `camera_sensor2ego_rotation` (3x3),
`camera_sensor2ego_translation` (3,) per camera.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from PIL import Image

from sim import conventions as C
from sim.scene import Scene
from sim.scene_json import load_scene_json, scene_to_json


SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"spanvla.schema_version"
MANIFEST_NAME = "_manifest.json"  # '_' first: Parquet dataset discovery skips it
LEGACY_MANIFEST_NAME = "manifest.json"  # datasets written before the rename
SHARD_PATTERN = "shard-{:05d}.parquet"
TRAJECTORY_COLUMNS = ("future", "negative_trajectory", "recovery_trajectory")
MAKE_DATASET_HINT = ("write one with `python -m sim.generate --out DIR ...` (or `python -m sim.navsim_logs --out DIR ...`), "
                     "or finish an interrupted one with `python -m sim.generate --resume` and its options")


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file and, where it applies, the column."""


def _poses(n: Optional[int]) -> pa.DataType:
    inner = pa.list_(pa.float32(), 3)
    return pa.list_(inner, n) if n else pa.list_(inner)


SCHEMA = pa.schema(
    [
        pa.field("token", pa.string(), nullable=False),
        pa.field("family", pa.string()),
        pa.field("sample_type", pa.string()),
        pa.field("split", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("log_name", pa.string()),
        pa.field("scene_json", pa.string(), nullable=False),
        pa.field("ego_history", _poses(C.NUM_HISTORY_FRAMES)),
        pa.field("velocity", pa.list_(pa.float32(), 2)),
        pa.field("acceleration", pa.list_(pa.float32(), 2)),
        pa.field("driving_command", pa.int8()),
        pa.field("command_one_hot", pa.list_(pa.float32(), len(C.DRIVING_COMMANDS))),
        pa.field("future", _poses(C.NUM_FUTURE_FRAMES)),
        pa.field("negative_trajectory", _poses(C.NUM_FUTURE_FRAMES)),
        pa.field("recovery_trajectory", _poses(C.NUM_FUTURE_FRAMES)),
        pa.field("negative_kind", pa.string()),
        pa.field("recovery_kind", pa.string()),
        pa.field("reasoning_mode", pa.string()),
        pa.field("reasoning_text", pa.string()),
        pa.field("longitudinal_decision", pa.string()),
        pa.field("lateral_decision", pa.string()),
        pa.field("image_height", pa.int32()),
        pa.field("image_width", pa.int32()),
        pa.field("camera_names", pa.list_(pa.string())),
        pa.field("camera_intrinsics", pa.list_(pa.list_(pa.float64(), 9))),
        pa.field("camera_sensor2ego_rotation", pa.list_(pa.list_(pa.float64(), 9))),
        pa.field("camera_sensor2ego_translation", pa.list_(pa.list_(pa.float64(), 3))),
        pa.field("images", pa.list_(pa.binary())),
    ]
)
IMAGE_COLUMNS = ("images",)
# On disk the optional trajectories are variable-length lists of poses: pyarrow < 26's Parquet reader fails on
# null rows of a fixed-size list ("Expected all lists to be of size=10"). Readers count each row's poses and
# cast to SCHEMA's fixed type, as for another writer's list column.
OPTIONAL_TRAJECTORY_COLUMNS = ("negative_trajectory", "recovery_trajectory")
STORAGE_SCHEMA = pa.schema([f.with_type(_poses(None)) if f.name in OPTIONAL_TRAJECTORY_COLUMNS else f for f in SCHEMA])


# --- writing -----------------------------------------------------------------------------------------------


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (deterministic for the same pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def check_trajectory(poses: Any, where: str) -> np.ndarray:
    """A dataset trajectory as a float array (10, 3): rear-axle poses (x, y, heading) in the ego frame at
    t = 0.5 ... 5.0 s, 0.5 s apart (`C.future_times()`); the first `C.NAVSIM_PLAN_POSES` are the plan NAVSIM
    scores. Raises `DatasetError` starting with `where` and giving the expected and found pose counts, or the
    poses holding a non-finite value."""
    try:
        array = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError):  # ragged rows
        raise DatasetError(f"{where}: poses of unequal length; a dataset trajectory is {C.NUM_FUTURE_FRAMES} poses "
                           "[x, y, heading]") from None
    count = len(array) if array.ndim >= 1 else 0
    if count != C.NUM_FUTURE_FRAMES or array.ndim != 2 or array.shape[1] != 3:
        raise DatasetError(f"{where}: {count} poses of shape {array.shape[1:]}, expected {C.NUM_FUTURE_FRAMES} poses "
                           f"[x, y, heading] {C.LOG_INTERVAL_S} s apart (t = {C.LOG_INTERVAL_S} ... "
                           f"{C.future_times()[-1]:g} s; the plan is the first {C.NAVSIM_PLAN_POSES})")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise DatasetError(f"{where}: non-finite values at pose(s) {bad.tolist()} of {count}")
    return array


def _trajectory(scene: Scene, name: str) -> Optional[list]:
    value = getattr(scene, name)
    if value is None:
        if name == "future":
            raise DatasetError(f"scene {scene.token!r}: future: missing; a dataset row needs the ground truth "
                               f"({C.NUM_FUTURE_FRAMES} poses)")
        return None
    return check_trajectory(value, f"scene {scene.token!r}: {name}").astype(np.float32).tolist()


def scene_to_row(scene: Scene, split: str) -> dict[str, Any]:
    """One dataset row (a dict of column -> Python value) for `scene`, images encoded as PNG."""
    ego = scene.ego
    cameras = [c for c in scene.cameras if c.images is not None]
    sizes = {c.images.shape[1:3] for c in cameras}
    if len(sizes) > 1:
        raise DatasetError(f"scene {scene.token!r}: cameras have different image sizes {sorted(sizes)}")
    height, width = sizes.pop() if sizes else (0, 0)
    reasoning = scene.reasoning
    return {
        "token": scene.token,
        "family": scene.family,
        "sample_type": scene.sample_type,
        "split": split,
        "seed": scene.seed,
        "log_name": scene.log_name,
        "scene_json": json.dumps(scene_to_json(scene), separators=(",", ":"), allow_nan=False),
        "ego_history": scene.history_trajectory().astype(np.float32).tolist(),
        "velocity": [ego.vx, ego.vy],
        "acceleration": [ego.ax, ego.ay],
        "driving_command": scene.driving_command,
        "command_one_hot": scene.command_one_hot.tolist(),
        "future": _trajectory(scene, "future"),
        "negative_trajectory": _trajectory(scene, "negative_trajectory"),
        "recovery_trajectory": _trajectory(scene, "recovery_trajectory"),
        "negative_kind": scene.negative_kind,
        "recovery_kind": scene.recovery_kind,
        "reasoning_mode": reasoning.mode if reasoning else None,
        "reasoning_text": reasoning.text if reasoning else None,
        "longitudinal_decision": reasoning.longitudinal if reasoning else None,
        "lateral_decision": reasoning.lateral if reasoning else None,
        "image_height": height,
        "image_width": width,
        "camera_names": [c.name for c in cameras],
        "camera_intrinsics": [np.asarray(c.intrinsics, dtype=np.float64).ravel().tolist() for c in cameras],
        "camera_sensor2ego_rotation": [np.asarray(c.sensor2ego_rotation, dtype=np.float64).ravel().tolist() for c in cameras],
        "camera_sensor2ego_translation": [np.asarray(c.sensor2ego_translation, dtype=np.float64).tolist() for c in cameras],
        "images": [encode_png(frame) for c in cameras for frame in c.images],
    }


def write_shard(path: str | Path, rows: Sequence[Mapping[str, Any]], metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write rows (from `scene_to_row`) to one Parquet shard, atomically: a temporary file in the same
    directory renamed over `path` once complete, so a run that dies never leaves a partial shard.
    `metadata` (JSON-serialisable) is stored under `spanvla.metadata` next to the schema version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA).cast(STORAGE_SCHEMA)
    extra = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(),
             b"spanvla.metadata": json.dumps(dict(metadata or {}), sort_keys=True).encode()}
    table = table.replace_schema_metadata(extra)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=256, write_statistics=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write `_manifest.json` (atomically) with the schema version added; a `manifest.json` of the older
    layout in the same directory is removed once the new one is in place (it would stop Parquet readers)."""
    path = Path(directory) / MANIFEST_NAME
    body = {"schema_version": SCHEMA_VERSION, **manifest}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    legacy = path.with_name(LEGACY_MANIFEST_NAME)
    if legacy.exists():
        legacy.unlink()
    return path


def find_manifest(directory: str | Path) -> Optional[Path]:
    """The manifest of a dataset directory (`_manifest.json`, else the older `manifest.json`), or None."""
    for name in (MANIFEST_NAME, LEGACY_MANIFEST_NAME):
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a dataset directory; `DatasetError` naming the directory when there is none, or
    naming the file when it is not valid JSON or of another schema version."""
    path = find_manifest(directory)
    if path is None:
        raise DatasetError(f"{directory}: not a dataset (no {MANIFEST_NAME}); {MAKE_DATASET_HINT}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(f"{path}: schema_version {version!r}, this reader reads version {SCHEMA_VERSION}")
    return manifest


# --- reading -----------------------------------------------------------------------------------------------


def open_shard(path: str | Path) -> pq.ParquetFile:
    """Open one shard, checking that it is Parquet and carries this reader's schema version."""
    path = Path(path)
    try:
        shard = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path}: not a readable Parquet shard ({type(e).__name__}: {e})") from e
    metadata = shard.schema_arrow.metadata or {}
    if SCHEMA_VERSION_KEY not in metadata:
        raise DatasetError(f"{path}: no {SCHEMA_VERSION_KEY.decode()} in the file metadata; not a scene dataset shard")
    version = metadata[SCHEMA_VERSION_KEY].decode()
    if version != str(SCHEMA_VERSION):
        raise DatasetError(f"{path}: schema version {version}, this reader reads version {SCHEMA_VERSION}")
    return shard


def shard_metadata(shard: pq.ParquetFile) -> dict:
    """The writer's metadata of a shard (`write_shard(..., metadata)`)."""
    return json.loads((shard.schema_arrow.metadata or {}).get(b"spanvla.metadata", b"{}"))


Where = Optional[Mapping[str, Any] | pc.Expression]


class SceneDataset:
    """Read a dataset directory (manifest + shards) or a single shard file.

    `batches` streams record batches with column selection and row filters; `scenes` rebuilds `Scene`
    objects (images decoded) from rows. Row filters (`where`) map a column to a value or a list of values,
    e.g. {"sample_type": "neg", "family": ["cut_in", "red_light"]}, or are a pyarrow compute expression.
    A directory must hold a complete manifest listing its shards and no other Parquet file (a Parquet reader
    of the directory would take that file for part of the dataset); otherwise `DatasetError` names the
    directory and what to do.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.manifest: Optional[dict] = read_manifest(self.path)
            manifest_path = find_manifest(self.path)
            if self.manifest.get("complete") is False:
                raise DatasetError(f"{manifest_path}: an incomplete dataset (its generation stopped before the end); "
                                   "finish it with `python -m sim.generate --resume` and the same options, or write it "
                                   "again with --overwrite")
            try:
                self.files = [self.path / s["file"] for s in self.manifest.get("shards", [])]
            except (TypeError, KeyError) as e:
                raise DatasetError(f"{manifest_path}: 'shards' must be a list of {{\"file\": ..., \"rows\": ...}} "
                                   f"({type(e).__name__}: {e})") from e
            if not self.files:
                raise DatasetError(f"{manifest_path}: lists no shards")
            for f in self.files:
                if not f.exists():
                    raise DatasetError(f"{f}: shard listed in {manifest_path} is missing")
            listed = {f.resolve() for f in self.files}
            stray = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*.parquet")
                           if p.resolve() not in listed and not _hidden(p.relative_to(self.path)))
            if stray:
                raise DatasetError(f"{self.path}: {', '.join(stray)} not listed in {manifest_path.name}: a Parquet reader "
                                   "of the directory would read it as part of the dataset; remove it (a shard of "
                                   "another run) or write the dataset again with `python -m sim.generate --overwrite`")
        elif self.path.exists():
            self.manifest = None
            self.files = [self.path]
        else:
            raise DatasetError(f"{self.path}: no such dataset directory or shard file; {MAKE_DATASET_HINT}")

    def __len__(self) -> int:
        return sum(open_shard(f).metadata.num_rows for f in self.files)

    def _check_columns(self, path: Path, shard: pq.ParquetFile, columns: Iterable[str]) -> None:
        schema = shard.schema_arrow
        for name in columns:
            if name not in SCHEMA.names:
                raise DatasetError(f"column {name!r} is not in the dataset schema (columns: {', '.join(SCHEMA.names)})")
            index = schema.get_field_index(name)
            if index < 0:
                raise DatasetError(f"{path}: missing column {name!r}")
            check_column_type(path, name, schema.field(index).type)

    def batches(
        self, columns: Optional[Sequence[str]] = None, where: Where = None, batch_size: int = 256
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches of the selected `columns` (all by default) and the rows matching `where`,
        shard by shard in file order. Trajectory columns are checked (`check_trajectory`)."""
        for path in self.files:
            yield from self._shard_batches(path, columns, where, batch_size)

    def _shard_batches(self, path: Path, columns: Optional[Sequence[str]], where: Where, batch_size: int) -> Iterator[pa.RecordBatch]:
        columns = list(columns) if columns is not None else list(SCHEMA.names)
        for _first, batch in self._scan(path, columns, where, batch_size):
            yield batch.select(columns)

    def _scan(self, path: Path, columns: list[str], where: Where, batch_size: int,
              with_token: bool = False) -> Iterator[tuple[Optional[int], pa.RecordBatch]]:
        """(shard row of the batch's first row, or None under a filter; the batch), trajectories checked.
        The batch holds `token` too when trajectories are read or `with_token` asks for it."""
        expression, filter_columns = _filter_expression(where)
        shard = open_shard(path)
        self._check_columns(path, shard, columns + [c for c in filter_columns if c not in columns])
        trajectories = [c for c in columns if c in TRAJECTORY_COLUMNS]
        scan_columns = columns + (["token"] if (trajectories or with_token) and "token" not in columns else [])
        first = 0
        try:
            scanner = ds.dataset(path, format="parquet").scanner(
                columns=scan_columns, filter=expression, batch_size=batch_size, use_threads=False
            )
            stream = iter(scanner.to_batches())
        except Exception as e:  # a filter naming a column the shard lacks
            raise DatasetError(f"{path}: cannot read the shard's data ({type(e).__name__}: {e})") from e
        while True:
            try:
                batch = next(stream)
            except StopIteration:
                return
            except Exception as e:  # a damaged page
                raise DatasetError(f"{path}: cannot read the shard's data ({type(e).__name__}: {e})"
                                   f"{old_pyarrow_hint(e)}") from e
            if not batch.num_rows:
                continue
            row = first if expression is None else None
            if trajectories:
                batch = _checked_trajectories(batch, trajectories, lambda i: _row_label(path, row, i))
            yield row, batch
            first += batch.num_rows

    def read(self, columns: Optional[Sequence[str]] = None, where: Where = None) -> pa.Table:
        """All matching rows of the selected columns as one table."""
        columns = list(columns) if columns is not None else list(SCHEMA.names)
        batches = list(self.batches(columns, where))
        if not batches:
            return SCHEMA.empty_table().select(columns)
        return pa.Table.from_batches(batches)

    def scenes(self, where: Where = None, images: bool = True, batch_size: int = 64) -> Iterator[Scene]:
        """Rebuild the matching scenes; with `images`, the camera images are decoded into `Camera.images`.
        A scene whose trajectories break `check_trajectory` raises `DatasetError` naming file, row and token."""
        columns = ["scene_json"] + (["camera_names", "images"] if images else [])
        for path in self.files:
            for first, batch in self._scan(path, columns, where, batch_size, with_token=True):
                for i, row in enumerate(batch.to_pylist()):
                    yield row_to_scene_at(row, _row_label(path, first, i))


def _hidden(relative: Path) -> bool:
    """Whether Parquet dataset discovery skips this path ('.' or '_' starts one of its parts)."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def _row_label(path: Path, first: Optional[int], i: int) -> str:
    return f"{path}: row {first + i}" if first is not None else str(path)


def _is_pose_list(data_type: pa.DataType) -> bool:
    """A list (any kind) of lists of numbers: what another writer may have made of a (N, 3) pose column."""
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_list(data_type) for is_list in lists):
        return False
    inner = data_type.value_type
    return any(is_list(inner) for is_list in lists) and (
        pa.types.is_floating(inner.value_type) or pa.types.is_integer(inner.value_type))


def check_column_type(path: str | Path, name: str, found: pa.DataType) -> None:
    """Raise `DatasetError` naming `path` and column `name` unless `found` is the schema's type; a trajectory
    column may be any list of poses (its rows are counted and cast to the schema's type when read)."""
    if name in TRAJECTORY_COLUMNS and _is_pose_list(found):
        return
    if not found.equals(SCHEMA.field(name).type):
        raise DatasetError(f"{path}: column {name!r} has type {found}, expected {SCHEMA.field(name).type}")


def old_pyarrow_hint(error: Exception, version: str = pa.__version__) -> str:
    """What to do when pyarrow < 26 fails on a shard written before the optional trajectories were stored as
    variable-length lists (its null fixed-size rows), else ''."""
    if int(version.split(".")[0]) >= 26 or "Expected all lists to be of size" not in str(error):
        return ""
    return (f"; pyarrow {version} cannot read null rows of fixed-size lists, which shards written by older versions "
            "of sim.generate hold: install pyarrow >= 26 (constraints.txt) or write the dataset again")


def _rows_with_wrong_pose_count(column: pa.Array) -> list[int]:
    """Rows of a list-of-poses column that are not `C.NUM_FUTURE_FRAMES` poses of 3 values (null rows pass).
    Counted without Python loops for lists of 3-value poses (how shards store the optional trajectories)."""
    inner = column.type.value_type
    if not (pa.types.is_fixed_size_list(inner) and inner.list_size == 3):
        return [i for i, value in enumerate(column.to_pylist())
                if value is not None and (len(value) != C.NUM_FUTURE_FRAMES or any(len(p) != 3 for p in value))]
    counts = pc.fill_null(pc.list_value_length(column), C.NUM_FUTURE_FRAMES)
    return np.flatnonzero(counts.to_numpy(zero_copy_only=False) != C.NUM_FUTURE_FRAMES).tolist()


def _checked_trajectories(batch: pa.RecordBatch, names: Sequence[str], label) -> pa.RecordBatch:
    """`batch` with its trajectory columns `names` checked (`check_trajectory`; `future` must be present) and
    cast to the schema's type. `label(i)` names row i (file and row); the batch holds `token`."""
    tokens = batch.column("token")
    where = lambda i, name: f"{label(i)}: scene {tokens[i].as_py()!r}: {name}"  # noqa: E731
    arrays = dict(zip(batch.schema.names, batch.columns))
    schema = batch.schema
    for name in names:
        column = arrays[name]
        target = SCHEMA.field(name).type
        if not column.type.equals(target):  # a stored optional or another writer's list column: count, cast
            for i in _rows_with_wrong_pose_count(column):
                check_trajectory(column[i].as_py(), where(i, name))
            column = column.cast(target)
            index = schema.get_field_index(name)
            schema = schema.set(index, schema.field(index).with_type(target))
        missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        if name == "future" and missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise DatasetError(f"{where(i, name)}: missing (0 poses); a dataset row needs the ground truth "
                               f"({C.NUM_FUTURE_FRAMES} poses)")
        values = fixed_list_to_numpy(column, (C.NUM_FUTURE_FRAMES, 3))
        bad = np.flatnonzero(~missing & ~np.isfinite(values).all(axis=(1, 2)))
        if len(bad):
            check_trajectory(values[bad[0]], where(int(bad[0]), name))
        arrays[name] = column
    return pa.RecordBatch.from_arrays(list(arrays.values()), schema=schema)


def _filter_expression(where: Where) -> tuple[Optional[pc.Expression], list[str]]:
    if where is None:
        return None, []
    if isinstance(where, pc.Expression):
        return where, []
    expression = None
    for column, value in where.items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        term = pc.field(column).isin(values)
        expression = term if expression is None else expression & term
    return expression, list(where)


def row_to_scene(row: Mapping[str, Any]) -> Scene:
    """A `Scene` from a dataset row holding at least `scene_json`; with `images` and `camera_names`, the
    decoded images are attached to the scene's cameras by name. Its trajectories are checked: `future` and,
    where present, `negative_trajectory` / `recovery_trajectory` by `check_trajectory`, the human plan by
    `sim.conventions.check_plan`; `DatasetError` names the scene."""
    scene, _plan, _notes = load_scene_json(json.loads(row["scene_json"]), name="column scene_json")
    where = f"scene {scene.token!r}"
    if scene.future is None:
        raise DatasetError(f"{where}: future: missing (0 poses); a dataset row needs the ground truth "
                           f"({C.NUM_FUTURE_FRAMES} poses)")
    for name in TRAJECTORY_COLUMNS:
        if getattr(scene, name) is not None:
            check_trajectory(getattr(scene, name), f"{where}: {name}")
    if scene.human_trajectory is not None:
        try:
            C.check_plan(scene.human_trajectory, interval_s=C.LOG_INTERVAL_S, where=f"{where}: human_trajectory")
        except ValueError as e:
            raise DatasetError(str(e)) from e
    pngs = row.get("images")
    if not pngs:
        return scene
    names = row["camera_names"]
    per_camera = len(pngs) // len(names)
    by_name = {c.name: c for c in scene.cameras}
    for c, name in enumerate(names):
        frames = np.stack([decode_png(p) for p in pngs[c * per_camera:(c + 1) * per_camera]])
        if name not in by_name:
            raise DatasetError(f"scene {scene.token!r}: images of camera {name!r} but the scene JSON has no such camera")
        by_name[name].images = frames
    return scene


def row_to_scene_at(row: Mapping[str, Any], label: str) -> Scene:
    """`row_to_scene`, with any failure raised as `DatasetError` starting with `label` (file and row)."""
    try:
        return row_to_scene(row)
    except DatasetError as e:
        raise DatasetError(f"{label}: {e}") from e
    except (ValueError, OSError) as e:  # malformed JSON or PNG bytes
        token = row.get("token")
        raise DatasetError(f"{label}{'' if token is None else f': scene {token!r}'}: a row's scene_json or images "
                           f"cannot be decoded ({type(e).__name__}: {e})") from e


def fixed_list_to_numpy(column: pa.Array | pa.ChunkedArray, shape: Sequence[int]) -> np.ndarray:
    """A (nested) fixed-size-list column -> float array (rows, *shape); null rows become NaN."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    out = np.full((len(column), *shape), np.nan, dtype=np.float32)
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
    if valid.any():
        flat = column.filter(pa.array(valid)).flatten()
        while pa.types.is_fixed_size_list(flat.type) or pa.types.is_list(flat.type):
            flat = flat.flatten()
        out[valid] = flat.to_numpy(zero_copy_only=False).reshape((-1, *shape))
    return out

