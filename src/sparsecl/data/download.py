"""Downloading dataset files with urllib, and unpacking archives, so that nothing half-written is ever left.

A download streams through ``sparsecl.fileio.atomic_open`` (a temporary file in the destination's directory),
is checked against its MD5 and only then renamed into place; any failure removes the temporary file. An
archive is unpacked into a temporary directory next to the destination, after every member name has been
checked (no absolute paths, no ``..``, no links or devices), and its top-level entries are then renamed
into place.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sparsecl import __version__
from sparsecl.data.checks import one_line
from sparsecl.data.dataset import DataError
from sparsecl.fileio import atomic_open, fsync_dir

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` while a file downloads."""

CHUNK = 1 << 20


@dataclass(frozen=True)
class Download:
    """One published file: its name, mirror URLs tried in order, its MD5, and whether it is an archive
    (tar or zip) to unpack into the dataset's directory and then delete."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    extract: bool = False

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError(f"download {self.filename!r} needs at least one URL")


def _stream(url: str, out, timeout: float, progress: Progress | None) -> str:
    """Copy ``url``'s body into ``out``; return its MD5. Raises DataError on a short body."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": f"sparsecl/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:  # http.client returns a short body silently when cut off
        raise DataError(f"{url}: truncated download: expected {total} bytes, got {done}")
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None, timeout: float = 60.0,
                  progress: Progress | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically; ``md5`` (if given) must match or nothing is written.

    Raises a one-line DataError naming the URL for an HTTP error, a network error, a truncated body or a
    checksum mismatch (with the expected and the received MD5); the temporary file is always removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_open(dest, "wb") as out:  # a failed check raises inside: nothing is written
            got = _stream(url, out, timeout, progress)
            if md5 is not None and got != md5.lower():
                raise DataError(f"{url}: checksum mismatch: expected md5 {md5}, got {got}")
        return dest
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: HTTP error {e.code} {one_line(e.reason)}") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: network error: {one_line(e.reason)}") from None
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, disk full
        raise DataError(f"{url}: download failed: {type(e).__name__}: {one_line(e)}") from None


def _check_name(name: str, archive: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
        raise DataError(f"{archive}: unsafe member {name!r} (absolute path or '..')")


def _extract_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            _check_name(m.name, archive)
            if not (m.isfile() or m.isdir()):
                raise DataError(f"{archive}: unsafe member {m.name!r} (links and devices are refused)")
        # the "data" filter (Python >= 3.11.4) re-checks the same rules; the checks above stand alone
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(staging, members=members, **safe)


def _extract_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_name(info.filename, archive)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # S_IFLNK in the Unix mode bits
                raise DataError(f"{archive}: unsafe member {info.filename!r} (links are refused)")
        zf.extractall(staging)


def extract_archive(archive: Path, target: Path) -> list[Path]:
    """Unpack a tar (any compression) or zip ``archive`` into ``target``; return the top-level paths made.

    Members are checked before anything is written; the unpacking happens in a temporary directory inside
    ``target``, and each top-level entry then replaces any old entry of the same name by a rename.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, staging)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, staging)
            else:
                raise DataError(f"{archive}: not a tar or zip archive")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise DataError(f"{archive}: bad archive: {type(e).__name__}: {one_line(e)}") from None
        placed = []
        for entry in sorted(staging.iterdir()):
            dest = target / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(entry, dest)
            placed.append(dest)
        fsync_dir(target)
        return placed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(downloads: Iterable[Download], target: Path, timeout: float = 60.0,
          progress: Progress | None = None) -> None:
    """Download every file into ``target`` (trying each mirror in turn) and unpack the archives.

    A plain file already in ``target`` is kept: this module only ever leaves complete, verified files.
    """
    target = Path(target)
    for item in downloads:
        dest = target / item.filename
        if not item.extract and dest.exists():
            continue
        errors = []
        for url in item.urls:
            log.info("downloading %s to %s", url, dest)
            try:
                download_file(url, dest, item.md5, timeout, progress)
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(f"could not download {item.filename}: {'; '.join(errors)}")
        if item.extract:
            extract_archive(dest, target)
            dest.unlink()
