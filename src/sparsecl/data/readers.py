"""Readers of the on-disk formats: IDX (MNIST, Fashion-MNIST), CIFAR python pickles, Tiny-ImageNet folders,
scikit-learn's digits CSV.

A reader is a small frozen dataclass called as ``reader(directory, num_classes, opener)``; it returns
:class:`Splits` of uint8 images [N, C, H, W] and int64 labels. Every format error is a one-line
:class:`DataError` naming the file (bad magic number, truncation, wrong shape, count mismatch, label out
of range, bad pickle); no numpy, gzip or pickle traceback escapes.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsecl.data.checks import Opener, locate_file, one_line, read_payload
from sparsecl.data.dataset import DataError


class MissingDependencyError(DataError):
    """A reader needs an optional package that is not installed."""


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor  # uint8 [N, C, H, W]
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor


def _labels(y: np.ndarray, num_classes: int, path: Path) -> torch.Tensor:
    """int64 labels, checked to lie in [0, num_classes)."""
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
        raise DataError(f"{path}: label {int(bad[0])} outside [0, {num_classes})")
    return torch.from_numpy(y.astype(np.int64))


def _count_match(n_images: int, images: Path, n_labels: int, labels: Path) -> None:
    if n_images != n_labels:
        raise DataError(f"{labels}: count mismatch: {n_labels} labels for {n_images} images in {images.name}")


# --- IDX (http://yann.lecun.com/exdb/mnist/): big-endian header, then raw uint8 values -------------------
IDX_IMAGES = 2051  # 0x00000803: two zero bytes, type 0x08 (uint8), 3 dimensions [N, H, W]
IDX_LABELS = 2049  # 0x00000801: uint8, 1 dimension [N]


def parse_idx(data: bytes, path: Path, magic: int) -> np.ndarray:
    """The uint8 array an IDX file holds, after checking its magic number and exact size (no copy)."""
    kind = "images" if magic == IDX_IMAGES else "labels"
    if len(data) < 4:
        raise DataError(f"{path}: truncated: expected at least 4 bytes, got {len(data)}")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{path}: bad magic number {got} (expected {magic} for IDX {kind})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim  # magic, then one uint32 per dimension
    if len(data) < header:
        raise DataError(f"{path}: truncated: expected at least {header} bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "wrong size"
        raise DataError(f"{path}: {what}: expected {expected} bytes for dims {list(dims)}, got {len(data)}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


@dataclass(frozen=True)
class IdxReader:
    """MNIST-style IDX pairs ``train-images-idx3-ubyte[.gz]`` / ``t10k-labels-idx1-ubyte[.gz]``."""

    image_size: tuple[int, int] = (28, 28)

    def __call__(self, directory: Path, num_classes: int, opener: Opener = read_payload) -> Splits:
        return Splits(*self.split(directory, "train", num_classes, opener),
                      *self.split(directory, "t10k", num_classes, opener))

    def split(self, directory: Path, prefix: str, num_classes: int, opener: Opener) -> tuple[torch.Tensor, ...]:
        images = locate_file(directory, f"{prefix}-images-idx3-ubyte.gz")
        labels = locate_file(directory, f"{prefix}-labels-idx1-ubyte.gz")
        x = parse_idx(opener(images), images, IDX_IMAGES)
        if x.shape[1:] != self.image_size:
            raise DataError(f"{images}: wrong shape: images are {x.shape[1]}x{x.shape[2]}, "
                            f"expected {self.image_size[0]}x{self.image_size[1]}")
        y = parse_idx(opener(labels), labels, IDX_LABELS)
        _count_match(len(x), images, len(y), labels)
        # frombuffer views read-only bytes; one copy gives torch a writable [N, 1, H, W] tensor
        return torch.from_numpy(x[:, None].copy()), _labels(y, num_classes, labels)


# --- python pickles, restricted to what numpy arrays need ---------------------------------------------------
@cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a data pickle may name: numpy array/dtype/scalar reconstruction and bytes decoding.

    The functions are taken from what this numpy's own pickles reference, so both old
    (``numpy.core.*``, as in the Python 2 CIFAR files) and new (``numpy._core.*``) names resolve.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise DataError(f"forbidden global {module}.{name} (only numpy arrays are allowed)") from None


def safe_unpickle(data: bytes, path: Path) -> Any:
    """Unpickle a data file with bytes keys (as the CIFAR authors' ``unpickle`` does), refusing any global
    other than numpy array reconstruction, so a crafted file cannot run code."""
    try:
        return _DataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as e:
        raise DataError(f"{path}: bad pickle: {e}") from None
    except Exception as e:  # a corrupt pickle can raise nearly anything: report it as one line
        raise DataError(f"{path}: bad pickle: {type(e).__name__}: {one_line(e)}") from None


# --- CIFAR-10 / CIFAR-100 (https://www.cs.toronto.edu/~kriz/cifar.html) -------------------------------------
@dataclass(frozen=True)
class CifarReader:
    """Pickled batches: a dict with b'data' uint8 [N, 3072] (1024 red, 1024 green, 1024 blue values of a
    row-major 32x32 image) and a list of N labels under ``label_key``."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str

    def __call__(self, directory: Path, num_classes: int, opener: Opener = read_payload) -> Splits:
        return Splits(*self.read(directory, self.train_files, num_classes, opener),
                      *self.read(directory, self.test_files, num_classes, opener))

    def read(self, directory: Path, names: tuple[str, ...], num_classes: int, opener: Opener):
        parts = [self.batch(locate_file(directory, f"{self.folder}/{n}"), num_classes, opener) for n in names]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def batch(self, path: Path, num_classes: int, opener: Opener) -> tuple[torch.Tensor, torch.Tensor]:
        entry = safe_unpickle(opener(path), path)
        if not isinstance(entry, dict):
            raise DataError(f"{path}: bad pickle: expected a dict, got {type(entry).__name__}")
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        for key in ("data", self.label_key):
            if key not in entry:
                raise DataError(f"{path}: missing key {key!r} (keys: {', '.join(map(str, entry))})")
        data = entry["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise DataError(f"{path}: wrong shape: 'data' must be uint8 [N, 3072], got "
                            f"{getattr(data, 'dtype', type(data).__name__)} {list(shape) if shape else ''}".rstrip())
        try:
            y = np.asarray(entry[self.label_key], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{path}: {self.label_key!r} is not a list of integers") from None
        if y.ndim != 1:
            raise DataError(f"{path}: wrong shape: {self.label_key!r} must be a flat list, got shape {list(y.shape)}")
        _count_match(len(data), path, len(y), path)
        return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), _labels(y, num_classes, path)


# --- Tiny-ImageNet (http://cs231n.stanford.edu/tiny-imagenet-200.zip) ---------------------------------------
def pillow(what: str = "Tiny-ImageNet") -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError(f"{what} needs Pillow: pip install pillow") from None
    return Image


@dataclass(frozen=True)
class TinyImageNetReader:
    """``wnids.txt``; ``train/<wnid>/images/*.JPEG``; ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>box``)
    with ``val/images/*.JPEG``. The labelled val split serves as the test split (the test split has no
    labels). Label i is the i-th wnid in sorted order (the ImageFolder convention); train images are ordered
    by label, then file name; val images in annotation order. Grey JPEGs are converted to RGB."""

    folder: str = "tiny-imagenet-200"
    image_size: tuple[int, int] = (64, 64)

    def __call__(self, directory: Path, num_classes: int, opener: Opener = read_payload) -> Splits:
        base = directory / self.folder
        wnids_path = locate_file(base, "wnids.txt")
        wnids = sorted(opener(wnids_path).decode("utf-8", "replace").split())
        if len(wnids) != num_classes or len(set(wnids)) != num_classes:
            raise DataError(f"{wnids_path}: expected {num_classes} distinct wnids, got {len(set(wnids))}")
        label = {w: i for i, w in enumerate(wnids)}
        train = [(f, label[w]) for w in wnids for f in self.class_images(base / "train" / w / "images")]
        val = self.val_entries(base, label, opener)
        return Splits(*self.decode(train, opener), *self.decode(val, opener))

    @staticmethod
    def class_images(folder: Path) -> list[Path]:
        files = sorted(folder.glob("*.JPEG")) if folder.is_dir() else []
        if not files:
            raise DataError(f"{folder}: missing training images (*.JPEG)")
        return files

    @staticmethod
    def val_entries(base: Path, label: dict[str, int], opener: Opener) -> list[tuple[Path, int]]:
        path = locate_file(base, "val/val_annotations.txt")
        entries = []
        for n, line in enumerate(opener(path).decode("utf-8", "replace").splitlines(), 1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in label or Path(fields[0]).name != fields[0]:
                raise DataError(f"{path}: line {n}: expected 'file<TAB>wnid', a bare file name and a wnid "
                                "from wnids.txt")
            entries.append((base / "val" / "images" / fields[0], label[fields[1]]))
        return entries

    def decode(self, entries: list[tuple[Path, int]], opener: Opener) -> tuple[torch.Tensor, torch.Tensor]:
        image_lib = pillow()
        h, w = self.image_size
        x = np.empty((len(entries), h, w, 3), np.uint8)  # filled in place: no list of 100 000 arrays
        for i, (path, _) in enumerate(entries):
            try:
                with image_lib.open(io.BytesIO(opener(path))) as img:
                    rgb = img.convert("RGB")
            except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
                raise DataError(f"{path}: bad image: {one_line(e)}") from None
            if rgb.size != (w, h):
                raise DataError(f"{path}: wrong shape: image is {rgb.size[1]}x{rgb.size[0]}, expected {h}x{w}")
            x[i] = np.asarray(rgb)
        y = torch.tensor([lab for _, lab in entries], dtype=torch.int64)
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y


# --- scikit-learn's digits (UCI optdigits test set: 1 797 images, 8x8, values 0..16) -------------------------
def stratified_test_mask(y: torch.Tensor, n_test: int, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask choosing ``n_test`` examples with class proportions as close as possible to ``y``'s.

    Class c gets floor(n_test * n_c / N) test examples, and the leftover ones go to the classes with the
    largest remainders (ties: lower class first); within a class, the examples are a uniform draw from
    ``generator`` (classes drawn in increasing order, so a seed fixes the split).
    """
    counts = torch.bincount(y)
    exact = counts.double() * n_test / len(y)
    quota = exact.floor().long()
    leftover = n_test - int(quota.sum())
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - quota[c]).item(), c))
    quota[order[:leftover]] += 1
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(len(counts)):
        members = (y == c).nonzero().flatten()
        mask[members[torch.randperm(len(members), generator=generator)[: quota[c]]]] = True
    return mask


@dataclass(frozen=True)
class DigitsReader:
    """``digits.csv.gz`` as shipped inside scikit-learn (what ``sklearn.datasets.load_digits`` reads): 64
    pixel columns with values 0..16, then the label. Pixels are scaled to uint8 as round(v * 255 / 16),
    computed exactly as (255 v + 8) // 16 (only v = 8 sits on a half, 127.5 -> 128). The split is fixed:
    ``n_test`` = 360 stratified test examples drawn with torch.Generator seed ``seed`` = 0, the other
    1 437 for training, each in the file's order. (The digits have no official split.)"""

    filename: str = "digits.csv.gz"
    n_test: int = 360
    seed: int = 0

    def __call__(self, directory: Path, num_classes: int, opener: Opener = read_payload) -> Splits:
        path = locate_file(directory, self.filename)
        try:
            table = np.loadtxt(io.BytesIO(opener(path)), delimiter=",", ndmin=2)
        except ValueError as e:
            raise DataError(f"{path}: not a numeric CSV: {one_line(e)}") from None
        if table.shape[1] != 65 or table.shape[0] <= self.n_test:
            raise DataError(f"{path}: wrong shape: expected more than {self.n_test} rows of 65 values, "
                            f"got {list(table.shape)}")
        pixels = table[:, :64]
        if (pixels != np.round(pixels)).any() or pixels.min() < 0 or pixels.max() > 16:
            raise DataError(f"{path}: pixel values must be integers in 0..16")
        x = torch.from_numpy(((pixels.astype(np.int64) * 255 + 8) // 16).astype(np.uint8).reshape(-1, 1, 8, 8))
        y = _labels(table[:, 64].astype(np.int64), num_classes, path)
        test = stratified_test_mask(y, self.n_test, torch.Generator().manual_seed(self.seed))
        return Splits(x[~test], y[~test], x[test], y[test])
