"""Scene datasets on disk: Parquet shards with a versioned schema, a manifest, and a streaming reader.

A dataset is a directory holding `manifest.json` and shards `shard-00000.parquet`, ... One row per scene:
identifying columns, the whole scene as JSON (`sim.scene_json`), training columns ready to batch, and the
camera images as PNG bytes with their calibration. The schema version is stored in every shard's metadata
under `SCHEMA_VERSION_KEY`; a reader refuses shards of another version.

Training columns (float32, ego frame at t = 0 unless stated): `ego_history` (4, 3) rear-axle poses at
t = -1.5 ... 0 s; `velocity` (2,) and `acceleration` (2,) of the rear axle in the ego frame; `command_one_hot`
(4,); `future`, `negative_trajectory`, `recovery_trajectory` (10, 3) rear-axle poses at t = 0.5 ... 5 s
(nullable). Images: `images` holds camera-major PNGs, image `c * 4 + f` is camera `camera_names[c]` at
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
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-{:05d}.parquet"


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


def _trajectory(scene: Scene, name: str) -> Optional[list]:
    value = getattr(scene, name)
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float32)
    if value.shape != (C.NUM_FUTURE_FRAMES, 3):
        raise DatasetError(f"scene {scene.token!r}: {name} has shape {value.shape}, the dataset stores ({C.NUM_FUTURE_FRAMES}, 3)")
    return value.tolist()


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
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
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
    """Write `manifest.json` (atomically) with the schema version added."""
    path = Path(directory) / MANIFEST_NAME
    body = {"schema_version": SCHEMA_VERSION, **manifest}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


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
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            manifest_path = self.path / MANIFEST_NAME
            self.manifest: Optional[dict] = None
            if manifest_path.exists():
                try:
                    self.manifest = json.loads(manifest_path.read_text())
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{manifest_path}: not valid JSON ({e})") from e
                version = self.manifest.get("schema_version")
                if version != SCHEMA_VERSION:
                    raise DatasetError(f"{manifest_path}: schema_version {version!r}, this reader reads version {SCHEMA_VERSION}")
                self.files = [self.path / s["file"] for s in self.manifest.get("shards", [])]
            else:
                self.files = sorted(self.path.glob("shard-*.parquet"))
            if not self.files:
                raise DatasetError(f"{self.path}: no shards (shard-*.parquet) and no manifest listing any")
        elif self.path.exists():
            self.manifest = None
            self.files = [self.path]
        else:
            raise DatasetError(f"{self.path}: no such dataset directory or shard file")
        for f in self.files:
            if not f.exists():
                raise DatasetError(f"{f}: shard listed in {self.path / MANIFEST_NAME} is missing")

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
            if not schema.field(index).type.equals(SCHEMA.field(name).type):
                raise DatasetError(f"{path}: column {name!r} has type {schema.field(index).type}, expected {SCHEMA.field(name).type}")

    def batches(
        self, columns: Optional[Sequence[str]] = None, where: Where = None, batch_size: int = 256
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches of the selected `columns` (all by default) and the rows matching `where`,
        shard by shard in file order."""
        for path in self.files:
            yield from self._shard_batches(path, columns, where, batch_size)

    def _shard_batches(self, path: Path, columns: Optional[Sequence[str]], where: Where, batch_size: int) -> Iterator[pa.RecordBatch]:
        columns = list(columns) if columns is not None else list(SCHEMA.names)
        expression, filter_columns = _filter_expression(where)
        shard = open_shard(path)
        self._check_columns(path, shard, columns + [c for c in filter_columns if c not in columns])
        try:
            scanner = ds.dataset(path, format="parquet").scanner(
                columns=columns, filter=expression, batch_size=batch_size, use_threads=False
            )
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield batch
        except Exception as e:  # a damaged page or a filter naming a column the shard lacks
            raise DatasetError(f"{path}: cannot read the shard's data ({type(e).__name__}: {e})") from e

    def read(self, columns: Optional[Sequence[str]] = None, where: Where = None) -> pa.Table:
        """All matching rows of the selected columns as one table."""
        columns = list(columns) if columns is not None else list(SCHEMA.names)
        batches = list(self.batches(columns, where))
        if not batches:
            return SCHEMA.empty_table().select(columns)
        return pa.Table.from_batches(batches)

    def scenes(self, where: Where = None, images: bool = True, batch_size: int = 64) -> Iterator[Scene]:
        """Rebuild the matching scenes; with `images`, the camera images are decoded into `Camera.images`."""
        columns = ["scene_json"] + (["camera_names", "images"] if images else [])
        for path in self.files:
            for batch in self._shard_batches(path, columns, where, batch_size):
                for row in batch.to_pylist():
                    try:
                        yield row_to_scene(row)
                    except DatasetError as e:
                        raise DatasetError(f"{path}: {e}") from e
                    except (ValueError, OSError) as e:  # malformed JSON or PNG bytes
                        raise DatasetError(f"{path}: a row's scene_json or images cannot be decoded "
                                           f"({type(e).__name__}: {e})") from e


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
    decoded images are attached to the scene's cameras by name."""
    scene, _plan, _notes = load_scene_json(json.loads(row["scene_json"]), name="column scene_json")
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

