"""Loading OpenScene / NAVSIM log pickles without letting them run code.

A pickle is a program: `pickle.load` calls whatever functions the file names, so a crafted "log" runs code
the moment it is loaded. OpenScene's log pickles hold only plain data (lists, dicts, strings, numbers,
tuples, None) and numpy arrays and scalars, so `load_log_pickle` reads them with an unpickler that resolves
only those: the numpy array / dtype / scalar reconstructors (numpy 1.x and 2.x module paths) and a few
builtin containers. Anything else (`os.system`, `builtins.eval`, a project class, ...) stops loading with an
`UnsafePickleError` naming the file and the global, before it is called.

Before unpickling, a cheap format check rejects what cannot be a log pickle: a missing path, a directory or
other non-regular file, an empty file, a file over `max_bytes`, and a file that does not start with a pickle
protocol 2-5 header (OpenScene writes protocol 4 or 5). `trusted=True` falls back to plain `pickle.load`
(after the same format check) for logs from a source you trust that hold other types.

The restricted unpickler blocks code execution; it does not bound the memory a hostile file can make the
loader allocate beyond the file size check, so logs should still come from OpenScene / NAVSIM's own
distribution.
"""
from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any, Callable

MAX_LOG_BYTES = 4 * 1024 ** 3  # OpenScene log pickles are a few MB to a few hundred MB
PICKLE_PROTOCOLS = (2, 3, 4, 5)


class LogFormatError(ValueError):
    """A log pickle or a camera blob that does not follow the OpenScene format; names the file and key."""


class UnsafePickleError(LogFormatError):
    """A log pickle names a global that OpenScene logs never contain; it was not called."""


def _allowed_globals() -> dict[tuple[str, str], Callable]:
    """(module, name) -> object for every global an OpenScene log pickle may name. numpy 2 pickles name
    `numpy._core.*`, numpy 1.x pickles `numpy.core.*`; both map to the installed numpy's functions."""
    import numpy as np

    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    import codecs

    allowed: dict[tuple[str, str], Callable] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes inside protocol-2 pickles
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):  # protocol-5 arrays
            allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class LogUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `_allowed_globals` and raises `UnsafePickleError` for
    any other (before anything is called)."""

    _allowed: dict[tuple[str, str], Callable] | None = None

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path
        if LogUnpickler._allowed is None:
            LogUnpickler._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.path}: the pickle names {module}.{name}, which OpenScene log pickles never contain; "
                "refused without calling it (a pickle can run code). Load only logs from OpenScene / NAVSIM's "
                "own distribution; for a trusted log holding other types, load it with trusted=True")
        return found


def check_pickle_file(path: str | Path, max_bytes: int = MAX_LOG_BYTES) -> Path:
    """Raise `LogFormatError` naming `path` unless it is a regular, non-empty file of at most `max_bytes`
    bytes that starts with a pickle protocol 2-5 header. Reads 2 bytes; unpickles nothing."""
    path = Path(path)
    if not path.exists():
        raise LogFormatError(f"{path}: no such log pickle")
    if not path.is_file():
        raise LogFormatError(f"{path}: not a regular file (a log pickle is a file <log_name>.pkl)")
    size = path.stat().st_size
    if size == 0:
        raise LogFormatError(f"{path}: empty file, not a log pickle")
    if size > max_bytes:
        raise LogFormatError(f"{path}: {size} bytes, more than the {max_bytes} bytes a log pickle may have "
                             "(raise max_bytes if this log is genuine)")
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) < 2 or head[0] != pickle.PROTO[0] or head[1] not in PICKLE_PROTOCOLS:
        raise LogFormatError(f"{path}: not a pickle: a log pickle starts with a pickle protocol "
                             f"{PICKLE_PROTOCOLS[0]}-{PICKLE_PROTOCOLS[-1]} header, this file starts with {head!r}")
    return path


def load_log_pickle(path: str | Path, max_bytes: int = MAX_LOG_BYTES, trusted: bool = False) -> Any:
    """The object in a log pickle, after `check_pickle_file`. Unless `trusted`, through `LogUnpickler`
    (plain data and numpy only). Every failure is a `LogFormatError` naming the file."""
    path = check_pickle_file(path, max_bytes)
    try:
        with open(path, "rb") as f:
            return pickle.load(f) if trusted else LogUnpickler(f, path).load()
    except LogFormatError:
        raise
    except Exception as e:  # a damaged pickle raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise LogFormatError(f"{path}: cannot read the log pickle ({type(e).__name__}: {e})") from e
