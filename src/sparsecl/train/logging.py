"""What a run leaves behind: metrics.jsonl (one JSON object per event) and summary.json; a progress bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sparsecl.fileio import atomic_write


class MetricsLog:
    """Append-only ``metrics.jsonl``. ``offset()`` is checkpointed; resume truncates back to it, so the
    log of a resumed run equals the uninterrupted one line for line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.touch()

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def offset(self) -> int:
        return self.path.stat().st_size

    def truncate(self, offset: int) -> str | None:
        """Cut the log back to ``offset`` (the checkpoint's). Never extends it: a log found shorter than
        that (edited or damaged since) is kept as it is, less any torn last line, and the returned note
        says so; otherwise returns None."""
        size = self.offset()
        if size >= offset:
            with open(self.path, "r+b") as f:
                f.truncate(offset)
            return None
        data = self.path.read_bytes()
        keep = data[: data.rfind(b"\n") + 1]  # whole lines only
        lines = keep.count(b"\n")
        with open(self.path, "r+b") as f:
            f.truncate(len(keep))
        return (f"note: {self.path} is shorter than when the checkpoint was written ({size} < {offset} bytes); "
                f"the missing lines cannot be restored, the log continues after the {lines} intact ones")


class LogFanOut:
    """``metrics.jsonl`` (the source of truth: resume offsets are its own) plus the loggers of ``log=``:
    every record goes to the file first, then to each logger; after a resume cut the file back, each
    logger is told which records remain (``Logger.rewind``). Same surface as MetricsLog."""

    def __init__(self, jsonl: MetricsLog, loggers: list[Any]) -> None:
        self.jsonl, self.loggers = jsonl, loggers

    @property
    def path(self) -> Path:
        return self.jsonl.path

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(record)
        for lg in self.loggers:
            lg.write(record)

    def offset(self) -> int:
        return self.jsonl.offset()

    def truncate(self, offset: int) -> str | None:
        note = self.jsonl.truncate(offset)
        if self.loggers:
            records = [json.loads(x) for x in self.jsonl.path.read_text().splitlines() if x.strip()]
            for lg in self.loggers:
                lg.rewind(records)
        return note

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def open_log(out: Path, names: tuple[str, ...], config: dict[str, Any]) -> LogFanOut:
    """metrics.jsonl in ``out`` and the named loggers (``sparsecl.loggers``) beside it."""
    from sparsecl.loggers import create_loggers

    return LogFanOut(MetricsLog(Path(out) / "metrics.jsonl"), create_loggers(names, Path(out), config))


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (sparsecl.fileio.atomic_write)."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Progress:
    """A tqdm bar per task with live loss/accuracy; silent when disabled or not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: tqdm | None = None

    def start(self, desc: str, total: int, initial: int = 0) -> None:
        self.close()
        if self.enabled:
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=True, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def postfix(self, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(kw, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
