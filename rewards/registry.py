"""The reward plug-in contract and registry.

A reward function scores a batch of samples (typically the G samples of one scene) and returns, per sample,
a dict of named components or None (unscorable):

    @register_reward("my_reward")
    def my_reward(batch: list[ScoringInput], **kwargs) -> list[dict[str, float] | None]: ...

Every dict must hold the key "reward" (the value the function's configured weight multiplies); any other keys
are diagnostics, logged as `reward/<function>/<key>`. A function that cannot score one sample returns None or
{"error": "why"} for it (the others keep their values). The total reward of a sample is
sum_f weight_f * out_f["reward"]; if any function gives None or an error, raises (anything, `SystemExit` and
`KeyboardInterrupt` included, see `CompositeReward`), times out or returns a non-finite value, the sample is
unscorable: it is left out of its group's baseline with advantage 0 and counted, never silently scored 0.

Every sample's trajectory is checked first (`sim.conventions.check_plan`: NAVSIM's 4 s plan, 8 poses at
0.5 s or N = 4 s / interval_s, finite); a sample that fails is unscorable (counted as "invalid_plan") and is
not passed to the functions.

Functions are named in the config by registry name, by `package.module:attr` or by `path/to/file.py:attr`,
and are imported inside the scorer actors (never pickled closures).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from sim.conventions import check_plan
from sim.scene import Scene

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list]
_REGISTRY: dict[str, RewardFn] = {}


class RewardError(ValueError):
    """A reward function that cannot be found or loaded; the message names the spec."""


@dataclass
class ScoringInput:
    """One sampled trajectory to score, with its scene's reference data.

    trajectory: (N, 3) rear-axle poses (x, y, heading) in the ego frame at t = interval_s, 2 * interval_s, ...
    reasoning: the text inside <think> ... </think> ("" when the policy wrote none); reasoning_mode: fast|slow.
    scene: the reference data (ground truth, negative / recovery trajectory, map, agents, cached PDM-Closed).
    plan: the policy's plan before its pace (N, 3), same frame and times, when the pace action drove `trajectory`
      slower along it; None when the trajectory is the plan itself. `planned` gives whichever applies.
    cache: a dict shared by all samples of the same scene inside one scorer worker, where reward functions keep
      per-scene work (e.g. the PDM scorer's prepared geometry). Keys should be namespaced by function.
    """

    scene: Scene
    trajectory: np.ndarray
    reasoning: str = ""
    reasoning_mode: str = "fast"
    interval_s: float = 0.5
    cache: dict = field(default_factory=dict)
    plan: Optional[np.ndarray] = None

    @property
    def planned(self) -> np.ndarray:
        """The plan before its pace (N, 3): `plan`, or the trajectory when there was no pace."""
        return self.trajectory if self.plan is None else self.plan

    @property
    def scene_token(self) -> str:
        return self.scene.token

    @property
    def sample_type(self) -> str:
        return self.scene.sample_type


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a reward function to the registry under `name`."""

    def add(fn: RewardFn) -> RewardFn:
        old = _REGISTRY.get(name)
        same = old is not None and (old.__module__, old.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and not same:
            raise RewardError(f"a reward named {name!r} is already registered ({_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return add


def registered_rewards() -> list[str]:
    _import_builtin_rewards()
    return sorted(_REGISTRY)


def _import_builtin_rewards() -> None:
    # The built-in functions register themselves when their modules are imported.
    import rewards.builtin  # noqa: F401


def resolve_reward(spec: str) -> RewardFn:
    """Find a reward function by registry name, `package.module:attr` or `path/to/file.py:attr`."""
    _import_builtin_rewards()
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if ":" not in spec:
        raise RewardError(
            f"unknown reward {spec!r}: not a registered name (known: {', '.join(sorted(_REGISTRY))}) "
            "and not of the form 'package.module:function' or 'path/to/file.py:function'"
        )
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise RewardError(f"reward {spec!r}: file {path} not found")
        module_name = f"_reward_plugin_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            raise RewardError(f"reward {spec!r}: importing {path} failed: {err!r}") from err
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise RewardError(f"reward {spec!r}: cannot import module {where!r}: {err}") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: {where} has no callable {attr!r}")
    return fn


@dataclass
class RewardTerm:
    """One configured reward function: how to find it, its weight and its keyword arguments."""

    name: str
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)
    label: Optional[str] = None  # how its components are logged; defaults to the name's last part

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        return self.name.rsplit(":", 1)[-1]


@dataclass
class RewardOutcome:
    """The reward of one sample: the weighted total (None = unscorable), the components, and why it failed."""

    total: Optional[float]
    components: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None


class CallTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: Optional[float]):
    """Raise CallTimeout in the calling code after `seconds` (SIGALRM; only possible on the main thread).

    Off the main thread no limit can interrupt Python code; the limit is then not enforced and a warning is logged.
    """
    if not seconds or seconds <= 0:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        logger.warning("reward time limit of %.1f s not enforced off the main thread", seconds)
        yield
        return

    def on_alarm(signum, frame):
        raise CallTimeout(f"took longer than {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


INVALID_PLAN = "invalid_plan"  # the failure counter of samples whose trajectory is not a NAVSIM plan


def in_ray_worker() -> bool:
    """True inside a Ray worker process (an actor or a task), False in a driver or without Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    try:
        return ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:  # an unexpected Ray version: assume a driver, so Ctrl-C keeps working
        return False


class CompositeReward:
    """The configured sum of reward functions, evaluated on a batch with failures isolated per function.

    r = sum_f weight_f * out_f["reward"]; a function that raises, times out, returns the wrong number of
    results or a non-finite value makes the affected samples unscorable (total None) and is counted
    (`failures[term key]`, the error text in `RewardOutcome.error`); a sample whose trajectory is not a NAVSIM
    plan is unscorable before any function sees it (`failures["invalid_plan"]`).

    Containment: `SystemExit` (a plug-in's `sys.exit()`) is always contained. `KeyboardInterrupt` is contained
    when `contain_interrupts` is True; the default (None) decides by process: inside a Ray worker (the scorer
    actors) it is contained, since nobody types Ctrl-C there and the worker must survive a plug-in that raises
    it; in a driver process (a script scoring locally) it propagates, so Ctrl-C still stops the program.
    """

    def __init__(self, terms: list[RewardTerm], timeout_s: Optional[float] = None,
                 contain_interrupts: Optional[bool] = None):
        if not terms:
            raise RewardError("no reward functions configured")
        self.terms = terms
        self.functions = [resolve_reward(t.name) for t in terms]
        self.timeout_s = timeout_s
        self.contain_interrupts = in_ray_worker() if contain_interrupts is None else contain_interrupts
        self.failures: dict[str, int] = {t.key: 0 for t in terms}
        self.seconds: dict[str, float] = {t.key: 0.0 for t in terms}

    def __call__(self, batch: list[ScoringInput]) -> list[RewardOutcome]:
        outcomes = [RewardOutcome(total=0.0) for _ in batch]
        valid = []
        for i, item in enumerate(batch):
            try:
                check_plan(item.trajectory, item.interval_s, where=f"sample {i} ({item.scene_token}): trajectory")
            except ValueError as err:
                outcomes[i] = RewardOutcome(total=None, error=str(err))
                self.failures[INVALID_PLAN] = self.failures.get(INVALID_PLAN, 0) + 1
                continue
            valid.append(i)
        scored = [outcomes[i] for i in valid]
        sub_batch = [batch[i] for i in valid]
        for term, fn in zip(self.terms, self.functions):
            if not sub_batch:
                break
            results, error = self._call(term, fn, sub_batch)
            for outcome, result in zip(scored, results):
                if outcome.total is None:
                    continue
                problem = error or _check_result(result)
                if problem is not None:
                    outcome.total = None
                    outcome.error = f"{term.key}: {problem}"
                    self.failures[term.key] += 1
                    continue
                outcome.total += term.weight * float(result["reward"])
                outcome.components[term.key] = float(result["reward"])
                for key, value in result.items():
                    if key != "reward" and _is_number(value):
                        outcome.components[f"{term.key}/{key}"] = float(value)
        for outcome in outcomes:
            if outcome.error:
                logger.warning("unscorable sample: %s", outcome.error)
        return outcomes

    def _call(self, term: RewardTerm, fn: RewardFn, batch: list[ScoringInput]) -> tuple[list, Optional[str]]:
        start = time.perf_counter()
        try:
            with time_limit(self.timeout_s):
                results = fn(batch, **term.kwargs)
        except BaseException as err:  # a plug-in may raise anything; the sample becomes unscorable, not 0
            if isinstance(err, KeyboardInterrupt) and not self.contain_interrupts:
                raise  # Ctrl-C in a driver process: stop (see the class docstring)
            if not isinstance(err, (Exception, SystemExit, KeyboardInterrupt)):
                raise  # GeneratorExit and the like belong to the interpreter
            logger.warning("reward %s raised %r", term.key, err)
            return [None] * len(batch), f"raised {type(err).__name__}: {err}"
        finally:
            self.seconds[term.key] += time.perf_counter() - start
        if not isinstance(results, (list, tuple)) or len(results) != len(batch):
            n = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            return [None] * len(batch), f"returned {n} results for a batch of {len(batch)}"
        return list(results), None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def _check_result(result: Any) -> Optional[str]:
    if result is None:
        return "returned None (unscorable)"
    if isinstance(result, dict) and result.get("reward") is None and result.get("error"):
        return f"unscorable: {result['error']}"
    if not isinstance(result, dict) or "reward" not in result:
        return f"returned {type(result).__name__} without a 'reward' key"
    value = result["reward"]
    if not _is_number(value) or not math.isfinite(float(value)):
        return f"returned a non-finite reward {value!r}"
    return None
