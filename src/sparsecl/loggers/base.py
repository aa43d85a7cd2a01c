"""The logger interface, its registry, and the flattening of a metrics record into scalar columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsecl.configtools import ConfigError
from sparsecl.registry import Registry


class MissingDependency(ConfigError):
    """An optional package a chosen logger or the report needs is not installed (one line: what to install)."""


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise MissingDependency naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs the {module.split('.')[0]} package: pip install 'sparsecl[{extra}]'") from None


class Logger:
    """Receives every metrics.jsonl record as it is written (``write``); after a resume cut the log back,
    the records that remain (``rewind``); ``close`` at the end of the run."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        self.out, self.config = Path(out), config

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def rewind(self, records: list[dict[str, Any]]) -> None:
        """The log now holds exactly ``records`` (a resume truncated it); default: nothing to undo."""

    def close(self) -> None:
        """Flush and release files."""


LOGGERS: Registry[type[Logger]] = Registry("logger")


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """Nested dicts and lists as ``/``-joined keys (``class_il/0``, ``layers/fc.weight``); None dropped.

    >>> flatten({"a": {"b": 1}, "c": [2.5, 3]})
    {'a/b': 1, 'c/0': 2.5, 'c/1': 3}
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}/"))
        elif value is not None:
            out[name] = value
    return out


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a record as ``event/key`` tags (``event`` and ``step`` themselves excluded)."""
    event = record.get("event", "log")
    flat = flatten({k: v for k, v in record.items() if k not in ("event", "step")})
    return {f"{event}/{k}": float(v) for k, v in flat.items() if isinstance(v, (int, float))}
