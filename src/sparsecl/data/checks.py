"""Reading a data file's bytes, and checking them against published checksums.

Every failure is a one-line :class:`DataError` that starts with the file's path, so a user can tell at a
glance which file is missing, unreadable, not gzip, or not the published one.

A file is checked by MD5 because that is what the dataset authors (and torchvision) publish. A ``.gz``
file passes if either the file itself has the published MD5, or its decompressed content has the
published MD5 of the uncompressed file: Debian's ``dataset-fashion-mnist`` re-compresses the official
files (new gzip header, same content), and users often keep the ``gunzip``-ed files instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sparsecl.data.dataset import DataError
from sparsecl.fileio import atomic_write

Opener = Callable[[Path], bytes]
"""A function that returns a file's content, decompressed if it is gzip; readers take one."""

GZIP_MAGIC = b"\x1f\x8b"


def one_line(message: object) -> str:
    """``message`` as a single line (library error texts sometimes span several)."""
    return " ".join(str(message).split())


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def alternatives(relpath: str) -> tuple[str, ...]:
    """The names under which a distributed file may be kept: ``x.gz`` may also be stored gunzipped as ``x``."""
    return (relpath, relpath[: -len(".gz")]) if relpath.endswith(".gz") else (relpath,)


def locate_file(directory: Path, relpath: str) -> Path:
    """The first existing variant of ``relpath`` under ``directory``; a DataError naming it when none exists."""
    for name in alternatives(relpath):
        if (directory / name).exists():
            return directory / name
    also = " or ".join(alternatives(relpath)[1:])
    raise DataError(f"{directory / relpath}: missing file" + (f" (also looked for {also})" if also else ""))


def read_raw(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {one_line(e.strerror or e)}") from None


def gunzip_if_needed(raw: bytes, path: Path) -> bytes:
    """``raw`` decompressed when it is gzip (by name or by magic number), else ``raw`` itself."""
    if not (path.suffix == ".gz" or raw[:2] == GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut stream is an EOFError
        raise DataError(f"{path}: bad gzip: {one_line(e)}") from None


def read_payload(path: Path) -> bytes:
    """The default :data:`Opener`: the file's bytes, gunzipped when it is gzip."""
    return gunzip_if_needed(read_raw(path), path)


@dataclass(frozen=True)
class FileSpec:
    """One file a dataset needs, by its path relative to the dataset's directory, as distributed.

    ``md5`` is the published checksum of the file as distributed; ``payload_md5`` that of its
    decompressed content (for ``.gz`` files). Either may be None when nothing is published; a directory
    entry (e.g. Tiny-ImageNet's ``train`` folder) has neither and is only checked for existence.
    """

    path: str
    md5: str | None = None
    payload_md5: str | None = None

    def locate(self, directory: Path) -> Path | None:
        return next((directory / n for n in alternatives(self.path) if (directory / n).exists()), None)

    @property
    def checked(self) -> bool:
        return self.md5 is not None or self.payload_md5 is not None

    def mismatch(self, path: Path, raw: bytes, payload: bytes) -> str | None:
        """None when the bytes match a published checksum, else a one-line description of the mismatch."""
        got = md5_hex(raw)
        if not self.checked or got == self.md5:
            return None
        got_payload = got if payload is raw else md5_hex(payload)
        if self.payload_md5 is not None and got_payload == self.payload_md5:
            return None
        wanted = [f"md5 {self.md5}"] if self.md5 else []
        wanted += [f"content md5 {self.payload_md5}"] if self.payload_md5 else []
        seen = f"md5 {got}" + (f", content md5 {got_payload}" if payload is not raw else "")
        return f"{path}: checksum mismatch: expected {' or '.join(wanted)}, got {seen}"


@dataclass
class VerifyingOpener:
    """An :data:`Opener` that also checks each file it opens against its :class:`FileSpec`.

    Passing it to a reader checks checksums and parses in a single read of every file; :meth:`finish`
    then checks the listed files the reader did not open. Mismatches collect in ``problems``.
    """

    directory: Path
    files: Iterable[FileSpec]
    problems: list[str] = field(default_factory=list)

    verified: list[Path] = field(default_factory=list)  # files that matched their published checksum

    def __post_init__(self) -> None:
        located = ((spec.locate(self.directory), spec) for spec in self.files)
        self._pending = {path: spec for path, spec in located if path is not None and spec.checked}

    def __call__(self, path: Path) -> bytes:
        raw = read_raw(path)
        payload = gunzip_if_needed(raw, path)
        spec = self._pending.pop(path, None)
        problem = spec.mismatch(path, raw, payload) if spec else None
        if problem:
            self.problems.append(problem)
        elif spec is not None:
            self.verified.append(path)
        return payload

    def finish(self) -> list[str]:
        """Check the files not opened yet; return every problem found."""
        for path in list(self._pending):
            try:
                self(path)
            except DataError as e:
                self.problems.append(str(e))
        return self.problems


class VerifiedCache:
    """Files whose checksum matched, by absolute path -> [size, mtime_ns], in one JSON file (written
    atomically; a damaged or missing cache only means the checksums are computed again)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            entries = json.loads(self.path.read_text())
            self.entries = {k: v for k, v in entries.items() if isinstance(v, list)} if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def known(self, path: Path | None) -> bool:
        """True when ``path`` was verified before and its size and mtime have not changed since."""
        if path is None or not path.is_file():
            return False
        try:
            return self.entries.get(str(path.resolve())) == self._stamp(path)
        except OSError:
            return False

    def remember(self, paths: Iterable[Path]) -> None:
        paths = list(paths)
        if not paths:
            return
        for p in paths:
            self.entries[str(p.resolve())] = self._stamp(p)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache costs a checksum next time, nothing else
