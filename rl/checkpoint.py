"""Checkpoint layout of a GRPO run and the driver's own state.

    <dir>/step_N/learner/     DeepSpeed state (weights, optimizer) of every learner rank
    <dir>/step_N/policy/      the policy in its own save format (what `rl.evaluate` loads)
    <dir>/step_N/driver.json  step, data position, random seed, policy version
    <dir>/step_N/sampled_ahead.pkl  asynchronous mode: step N+1, sampled and scored during update N (a pickle)
    <dir>/step_N/config.yaml  the resolved config
    <dir>/latest              the name of the newest COMPLETE step directory, written last and atomically

A step directory without a `latest` pointing at it is incomplete (the job died while writing it) and is ignored.

Asynchronous mode (`grpo.max_staleness: 1`) samples step N+1 during update N, with the weights of version N-1.
The checkpoint keeps those groups (scenes, samples with the log-probabilities recorded at sampling, scores), so a
run resumed from step_N trains step N+1 on exactly what the uninterrupted run trained on. Like the learner's
optimizer state (a torch pickle), the file is a pickle: resume only from checkpoints you wrote.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional


LATEST = "latest"
SAMPLED_AHEAD = "sampled_ahead.pkl"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    pass


@dataclass
class DriverState:
    """Everything besides the weights that a resumed run needs to continue exactly where it stopped.

    Randomness is counter-based: every draw comes from a generator seeded by (seed, step, group) or, for the
    data schedule, (seed, sample type, pass), so the seed and the positions below are the whole RNG state."""

    step: int  # the number of completed GRPO steps
    policy_version: int
    schedule: dict  # SceneSchedule.state_dict(): the cursor into each sample type's shuffled stream
    seed: int


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a reader sees the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict) -> None:
    write_bytes_atomic(path, json.dumps(payload, indent=1).encode())


class CheckpointDir:
    """The checkpoint folder of one run."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def step_dir(self, step: int) -> Path:
        return self.root / f"step_{step}"

    def begin(self, step: int) -> Path:
        """An empty directory for the checkpoint of `step` (a leftover partial one is removed)."""
        path = self.step_dir(step)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def commit(self, step: int, keep_last: Optional[int] = None) -> None:
        """Mark `step` as the latest complete checkpoint, then prune older ones."""
        tmp = self.root / (LATEST + ".tmp")
        tmp.write_text(f"step_{step}\n")
        os.replace(tmp, self.root / LATEST)
        if keep_last:
            for old in self.steps()[:-keep_last]:
                shutil.rmtree(self.step_dir(old), ignore_errors=True)

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)))

    def latest(self) -> Optional[Path]:
        marker = self.root / LATEST
        if not marker.is_file():
            return None
        path = self.root / marker.read_text().strip()
        if not path.is_dir():
            raise CheckpointError(f"{marker} points at {path}, which does not exist")
        return path

    def latest_step(self) -> int:
        """The step of the latest complete checkpoint; 0 when there is none."""
        path = self.latest()
        match = _STEP_DIR.match(path.name) if path is not None else None
        if path is not None and match is None:
            raise CheckpointError(f"{self.root / LATEST} names {path.name!r}, not a step_N directory")
        return int(match.group(1)) if match else 0

    @staticmethod
    def save_driver_state(path: Path, state: DriverState) -> None:
        write_json_atomic(path / "driver.json", asdict(state))

    @staticmethod
    def load_driver_state(path: Path) -> DriverState:
        file = path / "driver.json"
        if not file.is_file():
            raise CheckpointError(f"{file} is missing: {path} is not a complete GRPO checkpoint")
        payload = json.loads(file.read_text())
        expected = set(DriverState.__dataclass_fields__)
        if not isinstance(payload, dict) or set(payload) != expected:
            found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise CheckpointError(f"{file}: expected the fields {sorted(expected)}, found {found} "
                                  "(written by another version of the driver?)")
        return DriverState(**payload)

    @staticmethod
    def save_sampled_ahead(path: Path, batch: Any) -> None:
        """Keep the driver's next step, sampled ahead (`rl.driver.StepRollouts`), with the checkpoint at `path`."""
        write_bytes_atomic(path / SAMPLED_AHEAD, pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def load_sampled_ahead(path: Path) -> Optional[Any]:
        """The step sampled ahead that the checkpoint at `path` keeps; None when it keeps none (a synchronous run,
        or the last step of a run). Trusted input: a pickle can run code when loaded."""
        file = path / SAMPLED_AHEAD
        if not file.is_file():
            return None
        try:
            with open(file, "rb") as f:
                return pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
            raise CheckpointError(f"{file}: cannot read the step sampled ahead ({type(err).__name__}: {err}); "
                                  "it was written by another version of the driver, or is damaged") from err
