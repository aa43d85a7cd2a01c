"""The run folder: who may write into it (a lock), what may be deleted (only a sparsecl run), and what it is.

* ``.sparsecl-run`` marks a folder as a sparsecl run. ``--overwrite`` removes only a folder that holds
  one; any other non-empty folder is refused, so a mistyped ``--out`` never deletes someone's data.
* ``.sparsecl.lock`` is an advisory lock: ``fcntl.flock`` on it (released by the kernel when the owner
  dies, however it dies) plus the owner's pid and host written inside for the message. A second run on
  the same folder stops at once with that pid; a lock file left by a process that is gone is taken over
  with a one-line note.
* ``state()`` tells a new, a finished, an unfinished and a not-yet-checkpointed run apart, so the
  messages can say the one thing to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sparsecl import __version__
from sparsecl.configtools import ConfigError
from sparsecl.fileio import atomic_write
from sparsecl.train import checkpoint

MARKER = ".sparsecl-run"
LOCK = ".sparsecl.lock"


class RunLock:
    """Holds ``run_dir/.sparsecl.lock`` until ``release()`` (or the process ends)."""

    def __init__(self, run_dir: Path, note: Callable[[str], None] = print) -> None:
        self.path = Path(run_dir) / LOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            f: IO[str] = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while locked
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = _owner(f.read())
                f.close()
                raise ConfigError(f"run folder {run_dir} is in use by {owner}; wait for it to finish or stop it "
                                  f"first (two runs in one folder would mix their files)") from None
            try:  # the owner may have released (and unlinked) it between our open and our flock
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        f.seek(0)
        previous = f.read().strip()
        if previous:
            note(f"note: took over the lock of {run_dir} left by {_owner(previous)}, which is no longer running")
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        f.flush()
        self._file: IO[str] | None = f

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _owner(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {int(info['pid'])} on {info['host']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def is_run(run_dir: Path) -> bool:
    return (Path(run_dir) / MARKER).is_file()


def state(run_dir: Path) -> str:
    """``empty`` | ``foreign`` (not empty, no marker) | ``finished`` | ``unfinished`` (has a checkpoint) |
    ``no-checkpoint`` (a run stopped before its first checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or not any(p.name != LOCK for p in run_dir.iterdir()):
        return "empty"
    if not is_run(run_dir):
        return "foreign"
    if (run_dir / "summary.json").is_file():
        return "finished"
    return "unfinished" if checkpoint.exists(run_dir) else "no-checkpoint"


def finished_note(run_dir: Path) -> str:
    """What ``--resume`` of a finished run (``state`` "finished": its summary.json exists) says."""
    summary = Path(run_dir) / "summary.json"
    try:
        tasks = int(json.loads(summary.read_text())["config"]["tasks"])
        trained = f" ({tasks} of {tasks} tasks trained)"
    except (OSError, ValueError, KeyError, TypeError):
        trained = ""
    return (f"{run_dir} is finished{trained}; its results are in {summary}. Nothing to resume; to train it "
            f"again, start it with --overwrite")


def check_new(out: Path, overwrite: bool) -> str:
    """Refuse (``ConfigError`` saying what to do) an ``--out`` a new run may not use; else its ``state``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    kind = state(out)
    if kind == "foreign":
        raise ConfigError(f"output folder {out} is not empty and holds no sparsecl run (no {MARKER}); "
                          f"choose another --out (--overwrite only replaces a sparsecl run folder)")
    if kind != "empty" and not overwrite:
        advice = {
            "finished": "it holds a finished run; pass --overwrite to replace it, or choose another --out",
            "unfinished": f"it holds an unfinished run; continue it with: sparsecl train --resume {out} "
                          "(or pass --overwrite to start again)",
            "no-checkpoint": "it holds a run stopped before its first checkpoint; pass --overwrite to start it again",
        }[kind]
        raise ConfigError(f"output folder {out} is not empty: {advice}")
    return kind


def open_new(out: Path, overwrite: bool, note: Callable[[str], None] = print,
             config: dict | None = None) -> RunLock:
    """Lock ``out`` for a new run, clearing it first when ``overwrite`` and it holds a sparsecl run; mark
    it, and write ``config`` (the run's resolved config, when given) as its ``config.yaml``."""
    out = Path(out)
    kind = check_new(out, overwrite)
    lock = RunLock(out, note)
    if kind != "empty":
        for p in out.iterdir():
            if p.name == LOCK:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    atomic_write(out / MARKER, json.dumps({"sparsecl": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    if config is not None:
        import yaml

        atomic_write(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return lock


def open_existing(run_dir: Path, note: Callable[[str], None] = print) -> RunLock:
    """Lock ``run_dir`` to resume it; a folder written before the marker existed gets one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"no run folder at {run_dir} (nothing to resume)")
    lock = RunLock(run_dir, note)
    if not is_run(run_dir) and checkpoint.exists(run_dir):
        atomic_write(run_dir / MARKER, json.dumps({"sparsecl": __version__, "created": "resumed"}) + "\n")
    return lock
