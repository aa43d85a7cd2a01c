"""Writing and reading back the files of a run, so that nothing is half-written, lost or trusted blindly.

* ``atomic_open`` / ``atomic_write``: every file sparsecl writes goes to a temporary file in the same
  directory, is flushed and fsynced, renamed over the destination with ``os.replace`` (atomic on POSIX)
  and the directory is fsynced, so the rename itself survives a power cut. A kill, a full disk or an
  exception at any moment leaves either the old file or the new one, never a truncated one, and never a
  stray temporary file (an exception removes it; a SIGKILL can leave one, named ``.NAME.*.tmp``, which
  the next write ignores).
* ``load_torch``: torch files (``ckpt.pt``, ``final_model.pt``, a teacher's weights) are read with
  ``torch.load(weights_only=True)``, which refuses any pickle that would build an object other than
  tensors and plain containers (a run folder from someone else cannot run code), after every record's
  CRC-32 in the file's zip container has been checked (a flipped bit or a truncated file is one clear
  error, not a silently different model).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import secrets
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


class FileCorrupt(ValueError):
    """A file sparsecl wrote earlier cannot be trusted any more (damaged, truncated, or not what it says).
    ``str()`` is ``"PATH: REASON"``; ``reason`` alone is kept for messages that name the file themselves."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears complete when the block ends without an
    exception, and is untouched (old content or absent) otherwise."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x" + mode[1:], **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str | Iterable[bytes | memoryview]) -> int:
    """Write ``data`` (bytes, text, or an iterable of byte chunks) to ``path`` atomically; the byte count."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    n = 0
    with atomic_open(path, "wb") as f:
        for c in chunks:
            f.write(c)
            n += memoryview(c).nbytes
    return n


def save_torch(obj: Any, path: str | os.PathLike) -> int:
    """``torch.save`` into memory, then ``atomic_write``: a full disk fails only the temporary file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, buf.getbuffer())


def load_torch(path: str | os.PathLike) -> Any:
    """Load a torch file without unpickling code, after checking its integrity; ``FileCorrupt`` (one line)
    for a damaged, truncated or unsafe file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            bad = zf.testzip()  # reads every record and compares its CRC-32
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, NotImplementedError) as e:
        raise FileCorrupt(path, f"damaged or not a torch file ({_first_line(e)})") from None
    if bad is not None:
        raise FileCorrupt(path, f"damaged: record {bad!r} fails its CRC-32 check")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FileCorrupt(path, "refused: UnpicklingError: it holds pickled objects other than tensors and plain "
                                "containers (loaded with weights_only=True; nothing in it was run)") from None
    except Exception as e:  # noqa: BLE001 - the unpickler raises many types; every one means "refused"
        raise FileCorrupt(path, f"refused: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
