"""Random access to the scenes of a dataset by row, for the GRPO driver and evaluation.

The rows (scene JSON, PNG images) stay compressed in memory; a scene is decoded when it is asked for.
The trajectory columns are checked when the store is made (`sim.dataset.check_trajectory`), the
trajectories inside a scene's JSON when the scene is decoded; either failure names the shard file and scene.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from sim.conventions import SAMPLE_TYPES
from sim.dataset import MAKE_DATASET_HINT, TRAJECTORY_COLUMNS, DatasetError, SceneDataset, row_to_scene_at
from sim.scene import Scene

_COLUMNS = ["token", "family", "sample_type", "scene_json", "camera_names", "images"]


class SceneStore:
    """The scenes of one dataset directory written by `python -m sim.generate` (or a shard file)."""

    def __init__(self, path: str | Path, where: Optional[dict] = None, limit: Optional[int] = None, cache_size: int = 256):
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"dataset {path} does not exist; {MAKE_DATASET_HINT}")
        self.path = path
        dataset = SceneDataset(path)
        tables, files = [], []
        for file in dataset.files:
            # Reading the trajectory columns checks them; they are dropped, the scene JSON carries them too.
            table = SceneDataset(file).read(_COLUMNS + list(TRAJECTORY_COLUMNS), where=where).select(_COLUMNS)
            if table.num_rows:
                tables.append(table)
                files += [file] * table.num_rows
        table = pa.concat_tables(tables) if tables else pa.table({c: [] for c in _COLUMNS})
        if limit is not None:
            table = table.slice(0, limit)
        if table.num_rows == 0:
            raise DatasetError(f"dataset {path} has no scenes{' matching ' + str(where) if where else ''}")
        self._table = table
        self._files = files[: table.num_rows]  # the shard file of each row, for error messages
        self.tokens: list[str] = table.column("token").to_pylist()
        self.families: list[str] = table.column("family").to_pylist()
        self.sample_types: list[str] = table.column("sample_type").to_pylist()
        self._cache: OrderedDict[int, Scene] = OrderedDict()
        self._cache_size = cache_size
        self.decodes = 0  # scenes decoded so far (reads that missed the cache)

    def __len__(self) -> int:
        return len(self.tokens)

    def rows_by_type(self) -> dict[str, np.ndarray]:
        types = np.asarray(self.sample_types)
        return {t: np.flatnonzero(types == t) for t in SAMPLE_TYPES}

    def scene(self, row: int) -> Scene:
        """The scene of `row` with its camera images decoded (cached; treat it as read-only). A scene that
        cannot be decoded or whose trajectories are malformed raises `DatasetError` naming its shard file."""
        if row in self._cache:
            self._cache.move_to_end(row)
            return self._cache[row]
        record = self._table.slice(row, 1).to_pylist()[0]
        scene = row_to_scene_at(record, f"{self._files[row]} (store row {row})")
        self.decodes += 1
        self._cache[row] = scene
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return scene

    def scenes(self, rows) -> list[Scene]:
        return [self.scene(int(r)) for r in rows]
