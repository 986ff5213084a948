"""The project's one tracker: console, a JSONL file (what tests and reports read) and wandb.

Metrics are flat dicts with namespaced keys (`rollout/`, `reward/<component>`, `train/`, `sync/`, `timing/`,
`eval/`). wandb runs offline unless the user configures a mode (WANDB_MODE or `logging.wandb_mode`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

logger = logging.getLogger(__name__)


def setup_console_logging(level: int = logging.INFO) -> None:
    """One format for every entry point."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strict_json(value: Any, indent: int | None = 1) -> str:
    """`value` as strict JSON text: NaN and infinities (a std over one seed, a ratio over zero) become null,
    numpy scalars plain numbers, so every JSON reader (jq, JavaScript, pandas) accepts the file."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return _jsonable(v)

    return json.dumps(clean(value), indent=indent, allow_nan=False)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics JSONL file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class PhaseTimer:
    """Wall-clock seconds of the named phases of one unit of work (a GRPO step), as `timing/<phase>_s` metrics.

        timer = PhaseTimer()
        with timer("learner"):
            ...
        timer.metrics()  # {"timing/learner_s": ..., "timing/step_s": seconds since the timer was made}

    A phase entered twice adds up; `record` adds seconds measured elsewhere (e.g. on another thread)."""

    def __init__(self, total: str = "step"):
        self._start = time.perf_counter()
        self._total = total
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(phase, time.perf_counter() - start)

    def record(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def metrics(self, phases: tuple[str, ...] = ()) -> dict[str, float]:
        """`timing/<phase>_s` for every phase timed, 0.0 for those of `phases` that did not run, and
        `timing/<total>_s` (the whole unit)."""
        out = {f"timing/{p}_s": 0.0 for p in phases}
        out.update({f"timing/{p}_s": s for p, s in self.seconds.items()})
        out[f"timing/{self._total}_s"] = time.perf_counter() - self._start
        return out


class Tracker:
    """Logs metric dicts per step to a JSONL file, the console and (optionally) wandb."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        run_name: str,
        config: Optional[dict] = None,
        use_wandb: bool = True,
        wandb_project: str = "spanvla-rl",
        wandb_mode: Optional[str] = None,
        console_every: int = 1,
        resume: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.out_dir / "metrics.jsonl"
        self._file = open(self.jsonl_path, "a" if resume else "w")
        self.console_every = max(1, console_every)
        self._wandb = None
        if use_wandb:
            self._wandb = self._start_wandb(run_name, config, wandb_project, wandb_mode, resume)

    def _start_wandb(self, run_name, config, project, mode, resume):
        try:
            import wandb
        except ImportError:  # wandb is a dependency, but a stripped environment should still train
            logger.warning("wandb is not installed: logging to JSONL and console only")
            return None
        mode = mode or os.environ.get("WANDB_MODE", "offline")
        return wandb.init(
            project=project,
            name=run_name,
            dir=str(self.out_dir),
            config=config or {},
            mode=mode,
            resume="allow" if resume else None,
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        record = {"step": int(step), "time": time.time()}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k not in ("step", "time") and v is not None}, step=step)
        if step % self.console_every == 0:
            shown = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
            summary = "  ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())[:12])
            logger.info("step %d  %s", step, summary)

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Record a picture written to disk (path in the JSONL; the image itself in wandb)."""
        self._file.write(json.dumps({"step": int(step), "time": time.time(), key: str(path)}) + "\n")
        self._file.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
