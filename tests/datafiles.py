"""Tiny datasets written in the REAL on-disk formats, for tests (no network, no real data needed).

Each ``write_*`` function fills a dataset directory (the directory ``DatasetSpec.find`` would return) and
returns a :class:`Written` with the arrays a correct reader must produce: uint8 images [N, C, H, W] and
int64 labels. ``WRITERS`` maps every registered dataset name to its writer, so tests can be parametrised
over the registry.

* IDX: big-endian magic 2051/2049 and dimensions, then uint8 values; gzip'ed or raw.
* CIFAR: dicts with bytes keys pickled exactly as Python 2's cPickle wrote the official batches
  (protocol 2, ``numpy.core.multiarray._reconstruct``, py2 ``str`` values), or by this Python's pickle.
* Tiny-ImageNet: the ``tiny-imagenet-200/`` folder layout with JPEG files (needs Pillow).
* digits: scikit-learn's ``digits.csv.gz`` layout (64 pixel columns 0..16, then the label).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Written:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: tuple[np.ndarray, np.ndarray] | None = None  # pixels before a lossy encoding (JPEG), if any


def _uint8(gen: torch.Generator, *shape: int) -> np.ndarray:
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).numpy()


def _labels(gen: torch.Generator, n: int, num_classes: int) -> np.ndarray:
    return torch.randint(0, num_classes, (n,), generator=gen).numpy()


# --- IDX --------------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0x00 0x00, type 0x08 (uint8), ndim, big-endian uint32 dims, then the values."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data``, gzip'ed when ``path`` ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def write_idx_dataset(directory: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0,
                      size: tuple[int, int] = (28, 28), num_classes: int = 10) -> Written:
    gen = torch.Generator().manual_seed(seed)
    out = Written(_uint8(gen, n_train, 1, *size), _labels(gen, n_train, num_classes),
                  _uint8(gen, n_test, 1, *size), _labels(gen, n_test, num_classes))
    ext = ".gz" if gz else ""
    for prefix, x, y in (("train", out.x_train, out.y_train), ("t10k", out.x_test, out.y_test)):
        write_bytes(directory / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(x[:, 0]))
        write_bytes(directory / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(y.astype(np.uint8)))
    return out


# --- Python 2 pickles, as the official CIFAR batches were written ---------------------------------------------
def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b


def _py2_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def _py2_value(v: Any) -> bytes:
    if isinstance(v, (bytes, str)):
        return _py2_str(v.encode("latin1") if isinstance(v, str) else v)
    if isinstance(v, (int, np.integer)):
        return _py2_int(int(v))
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(i) for i in v) + b"e"  # EMPTY_LIST MARK ... APPENDS
    if isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 2:
        # numpy.core.multiarray._reconstruct(ndarray, (0,), 'b') then __setstate__ with
        # (version 1, shape, dtype('u1'), fortran False, raw bytes) -- numpy 1.x under Python 2
        dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"|")
                 + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        shape = b"(" + b"".join(_py2_int(d) for d in v.shape) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"tR"
                + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(v.tobytes()) + b"tb")
    raise TypeError(f"py2 pickle writer: unsupported {type(v).__name__}")


def py2_pickle(d: dict) -> bytes:
    """A protocol-2 pickle of a dict, opcode for opcode what Python 2's cPickle wrote (minus memo opcodes)."""
    items = b"".join(_py2_value(k) + _py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + items + b"u."  # PROTO 2, EMPTY_DICT, MARK, ..., SETITEMS, STOP


def _write_pickle(path: Path, d: dict, protocol: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle(d) if protocol is None else pickle.dumps(d, protocol=protocol))


def _cifar_entry(batch: str, x: np.ndarray, y: np.ndarray, label_keys: dict[bytes, list[int]]) -> dict:
    names = [f"img_{batch}_{i}.png".encode() for i in range(len(x))]
    return {b"batch_label": f"{batch} of 1".encode(), **label_keys, b"data": x.reshape(len(x), 3072),
            b"filenames": names}


def write_cifar10(directory: Path, n_per_batch: int = 3, n_test: int = 4, seed: int = 0,
                  protocol: int | None = None) -> Written:
    """cifar-10-batches-py/data_batch_1..5 and test_batch; ``protocol`` None = the Python 2 layout."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_per_batch
        x, y = _uint8(gen, n, 3, 32, 32), _labels(gen, n, 10)
        _write_pickle(directory / "cifar-10-batches-py" / name, _cifar_entry(name, x, y, {b"labels": y.tolist()}),
                      protocol)
        xs.append(x)
        ys.append(y)
    return Written(np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5])


def write_cifar100(directory: Path, n_train: int = 6, n_test: int = 4, seed: int = 0,
                   protocol: int | None = None) -> Written:
    """cifar-100-python/train and test, with fine (the labels read) and coarse labels."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        x, y, coarse = _uint8(gen, n, 3, 32, 32), _labels(gen, n, 100), _labels(gen, n, 20)
        keys = {b"fine_labels": y.tolist(), b"coarse_labels": coarse.tolist()}
        _write_pickle(directory / "cifar-100-python" / name, _cifar_entry(name, x, y, keys), protocol)
        out += [x, y]
    return Written(*out)


# --- Tiny-ImageNet ----------------------------------------------------------------------------------------
WNIDS = ("n09999999", "n01443537", "n02085620", "n01629819")  # not sorted: labels follow the sorted order


def _blocky(gen: torch.Generator, grey: bool) -> np.ndarray:
    """A 64x64 image of flat 16x16 blocks, which JPEG at quality 100 keeps almost exactly."""
    blocks = _uint8(gen, 4, 4, 1 if grey else 3)
    return np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)


def _save_jpeg(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Save as JPEG; return (reference decode by Pillow, as RGB [3, H, W]), the values a reader must give."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    img.save(path, "JPEG", quality=100, subsampling=0)
    with Image.open(path) as back:
        return np.asarray(back.convert("RGB")).transpose(2, 0, 1)


def write_tiny_imagenet(directory: Path, n_classes: int = 4, n_train_per_class: int = 2, n_val: int = 5,
                        seed: int = 0) -> Written:
    """tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG + <wnid>_boxes.txt,
    val/val_annotations.txt + val/images/*.JPEG, test/images/*.JPEG}. The first val image is grey (mode L),
    as some real ones are. ``Written.source`` holds the pixels before JPEG, [N, 3, H, W]."""
    gen = torch.Generator().manual_seed(seed)
    base = directory / "tiny-imagenet-200"
    wnids = WNIDS[:n_classes]
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    label = {w: i for i, w in enumerate(sorted(wnids))}
    xs, ys, src = [], [], []
    for w in sorted(wnids):
        rows = []
        for i in range(n_train_per_class):
            name = f"{w}_{i}.JPEG"
            pixels = _blocky(gen, grey=False)
            xs.append(_save_jpeg(base / "train" / w / "images" / name, pixels))
            src.append(pixels.transpose(2, 0, 1))
            ys.append(label[w])
            rows.append(f"{name}\t0\t0\t63\t63\n")
        (base / "train" / w / f"{w}_boxes.txt").write_text("".join(rows))
    val_x, val_y, val_src, notes = [], [], [], []
    for i in range(n_val):
        w = wnids[int(torch.randint(0, n_classes, (1,), generator=gen))]
        pixels = _blocky(gen, grey=i == 0)
        val_x.append(_save_jpeg(base / "val" / "images" / f"val_{i}.JPEG", pixels))
        val_src.append(np.broadcast_to(pixels, (64, 64, 3)).transpose(2, 0, 1))
        val_y.append(label[w])
        notes.append(f"val_{i}.JPEG\t{w}\t1\t2\t60\t61\n")
    (base / "val" / "val_annotations.txt").write_text("".join(notes))
    _save_jpeg(base / "test" / "images" / "test_0.JPEG", _blocky(gen, grey=False))
    return Written(np.stack(xs), np.array(ys), np.stack(val_x), np.array(val_y), (np.stack(src), np.stack(val_src)))


# --- scikit-learn digits -------------------------------------------------------------------------------------
def write_digits(directory: Path, per_class: int = 40, seed: int = 0, num_classes: int = 10) -> Written:
    """``digits.csv.gz`` with ``per_class`` rows of each class (shuffled). The reader's split is its own
    business, so the returned Written holds ALL rows as 'train', in file order, scaled as the reader must
    (round(v * 255 / 16)), and an empty 'test'."""
    gen = torch.Generator().manual_seed(seed)
    y = np.repeat(np.arange(num_classes), per_class)[torch.randperm(num_classes * per_class, generator=gen).numpy()]
    v = torch.randint(0, 17, (len(y), 64), generator=gen).numpy()
    lines = "".join(",".join(f"{p:.1f}" for p in row) + f",{lab:.1f}\n" for row, lab in zip(v, y, strict=True))
    write_bytes(directory / "digits.csv.gz", lines.encode())
    scaled = np.round(v * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    return Written(scaled, y, scaled[:0], y[:0])


WRITERS: dict[str, Callable[..., Written]] = {
    "fashion-mnist": write_idx_dataset,
    "mnist": write_idx_dataset,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "tiny-imagenet": write_tiny_imagenet,
    "digits": write_digits,
}


# --- sparsecl's own export format, edited and re-signed (tests of what lies behind the checksums) -----------
EXPORT_PREAMBLE = struct.Struct("<8sIQ32s")  # magic, version, header length, header sha256 (export/format.py)


def resign_export(data: bytes, mutate: Callable[[dict], Any]) -> bytes:
    """``data`` (an export file's bytes) with ``mutate`` applied to its JSON header, re-signed: a file whose
    checksums pass over a malformed header."""
    import hashlib
    import json

    magic, version, hlen, _ = EXPORT_PREAMBLE.unpack_from(data)
    header = json.loads(data[EXPORT_PREAMBLE.size:EXPORT_PREAMBLE.size + hlen])
    mutate(header)
    raw = json.dumps(header).encode()
    return (EXPORT_PREAMBLE.pack(magic, version, len(raw), hashlib.sha256(raw).digest()) + raw
            + data[EXPORT_PREAMBLE.size + hlen:])
