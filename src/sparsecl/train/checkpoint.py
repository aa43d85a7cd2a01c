"""Crash-safe, verified checkpoints of a run: ``ckpt.pt`` and the previous one, ``ckpt.prev.pt``.

Writing goes through ``sparsecl.fileio.atomic_write`` (temporary file, fsync, rename, directory fsync);
the previous good checkpoint is kept until the new one is complete, so a kill at any moment, even
mid-write, or a full disk leaves a loadable checkpoint behind. Reading uses ``fileio.load_torch``:
``torch.load(weights_only=True)`` after the CRC-32 of every record is checked, so a run folder from an
untrusted source cannot run code, and a flipped bit is detected instead of resuming with different
numbers. A damaged newest checkpoint falls back to the previous one with a one-line note.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sparsecl.fileio import FileCorrupt, fsync_dir, load_torch, save_torch

FORMAT_VERSION = 1
NAME = "ckpt.pt"
PREV = "ckpt.prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not belong to this run; one line."""


def exists(run_dir: Path) -> bool:
    return any((Path(run_dir) / n).exists() for n in (NAME, PREV))


def save(state: dict[str, Any], run_dir: Path) -> Path:
    """Atomically write ``state`` as ``run_dir/ckpt.pt``; on any failure the previous file is intact."""
    run_dir = Path(run_dir)
    path, prev = run_dir / NAME, run_dir / PREV
    tmp = run_dir / f".{NAME}.next"
    try:
        save_torch({"format_version": FORMAT_VERSION, **state}, tmp)
    except OSError as e:
        kept = f"the previous checkpoint {path} is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint in {run_dir}: {e.strerror or e}; {kept}") from None
    if path.exists():
        path.replace(prev)  # keep the last good one until the new one is in place
    tmp.replace(path)
    fsync_dir(run_dir)
    return path


def load(run_dir: Path, note: Any = None) -> dict[str, Any]:
    """The newest checkpoint that verifies, falling back to the previous one (``note`` gets one line
    saying so; default: stderr). ``CheckpointError`` when there is none, or none verifies."""
    run_dir = Path(run_dir)
    candidates = [p for p in (run_dir / NAME, run_dir / PREV) if p.exists()]
    if not candidates:
        raise CheckpointError(f"{run_dir} has no checkpoint yet (the run stopped before its first one); "
                              f"start it again with: sparsecl train --config {run_dir / 'config.yaml'} "
                              f"--out {run_dir} --overwrite")
    errors = []
    for p in candidates:
        try:
            state = load_torch(p)
        except FileCorrupt as e:
            errors.append(f"{p.name}: {e.reason}")
            continue
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            errors.append(f"{p}: not a sparsecl checkpoint of format {FORMAT_VERSION}")
            continue
        if errors:
            (note or (lambda s: print(s, file=sys.stderr)))(
                f"note: {errors[0]}; resuming from the previous checkpoint {p.name} instead")
        return state
    raise CheckpointError(f"cannot resume from {run_dir}: " + "; ".join(errors))
