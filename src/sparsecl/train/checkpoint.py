"""Crash-safe checkpoints: write to a temporary file, fsync, then rename over the old one.

The previous good checkpoint is kept (``ckpt.prev.pt``) until the new one is complete and renamed, so a
kill at any moment, even mid-write, or a full disk leaves a loadable checkpoint behind. Loading checks
a format version and the config the run was started with: a corrupt or incompatible checkpoint is one
clear error, never a silent fresh start.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
NAME = "ckpt.pt"
PREV = "ckpt.prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not belong to this run; one line."""


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(state: dict[str, Any], run_dir: Path) -> Path:
    """Atomically write ``state`` as ``run_dir/ckpt.pt``; on any failure the previous file is intact.

    Serialising to memory first means a full disk can only fail the write of the temporary file.
    """
    run_dir = Path(run_dir)
    path, prev, tmp = run_dir / NAME, run_dir / PREV, run_dir / f".{NAME}.tmp"
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = f"the previous checkpoint {path} is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint in {run_dir}: {e.strerror or e}; {kept}") from None
    if path.exists():
        os.replace(path, prev)  # keep the last good one until the new one is in place
    os.replace(tmp, path)
    _fsync_dir(run_dir)
    return path


def load(run_dir: Path) -> dict[str, Any]:
    """Load the newest readable checkpoint (falling back to the previous one if the newest is damaged)."""
    run_dir = Path(run_dir)
    candidates = [p for p in (run_dir / NAME, run_dir / PREV) if p.exists()]
    if not candidates:
        raise CheckpointError(f"no checkpoint in {run_dir} (nothing to resume; start the run without --resume)")
    errors = []
    for p in candidates:
        try:
            state = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
            errors.append(f"{p.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            errors.append(f"{p.name}: not a sparsecl checkpoint of format {FORMAT_VERSION}")
            continue
        return state
    raise CheckpointError(f"cannot resume from {run_dir}: " + "; ".join(errors))
