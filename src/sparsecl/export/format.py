"""Compressed sparse checkpoints: a versioned, checksummed, pickle-free file of raw arrays.

File layout (all integers little-endian)::

    offset 0   8 bytes   magic  b"SPCLCKPT"
    offset 8   uint32    format version (1)
    offset 12  uint64    H = header length in bytes
    offset 20  32 bytes  sha256(header)
    offset 52  H bytes   header: UTF-8 JSON (fmt, values, payload_bytes, payload_sha256, meta, tensors)
    52 + H     payload   the arrays of every tensor, back to back, in header order; the file ends there

Each tensor record lists its shape, dtype, value codec (``codecs.py``: raw / fp16 / int8), layout
(``layouts.py``: dense / bitmask / indices) and its arrays as ``[role, dtype, count]``; offsets follow from
the counts, so every length is checked against the payload before anything is decoded. Loading never
unpickles, so a checkpoint from an untrusted source cannot run code.

Per float tensor the chosen sparse layout is used only when it is smaller than the dense one (biases and
BN statistics stay dense). ``values``: ``fp32`` keeps the tensor's own dtype bit-exactly (a sparse
layout returns -0.0 as +0.0, see ``layouts.py``); ``fp16`` casts every float tensor; ``int8`` quantises
float tensors with dim >= 2 per output channel and loads them back dequantised in their original dtype
(fp32 for sparsecl models), so a plain model loads the result; ``meta["export"]`` records it.
Deviation from "per-tensor int8 otherwise": tensors with dim < 2 (biases, BN affine and running
statistics) stay exact under ``int8``. They are < 1 % of the bytes, and a per-tensor int8 grid rounds
small BN running variances to 0, which multiplies that channel by 1/sqrt(eps) ~ 316 at inference.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from sparsecl.export.codecs import CODECS, Encoded
from sparsecl.export.layouts import LAYOUTS
from sparsecl.fileio import atomic_write
from sparsecl.registry import Registry, UnknownNameError

MAGIC = b"SPCLCKPT"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIQ32s")  # magic, version, header length, header sha256 -> 52 bytes
META_KEY = "export"  # reserved key of the meta returned by load_compressed
Arrays = dict[str, Tensor]  # role -> 1-D tensor
DECODE_FLOOR = 64 << 20  # bytes any file may decode to ...
DECODE_RATIO = 4096  # ... or this many times its own length, if more (a 99.98 %-sparse tensor in ``indices``)

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


_DTYPES = {_dtype_name(d): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.bool, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.uint16, torch.uint32, torch.uint64)}


class ExportError(ValueError):
    """A compressed checkpoint that cannot be read (or written); the message names the file."""


# values scheme -> which codec a tensor gets. Non-float tensors are always stored raw.
VALUE_SCHEMES: Registry[Callable[[Tensor], str]] = Registry("values scheme")
VALUE_SCHEMES.register("fp32")(lambda t: "raw")
VALUE_SCHEMES.register("fp16")(lambda t: "fp16")
VALUE_SCHEMES.register("int8")(lambda t: "int8" if t.dim() >= 2 and t.numel() > 0 else "raw")


@dataclass(frozen=True)
class ExportOptions:
    """fmt: the sparse layout to try per float tensor (``dense`` = never sparse); values: value scheme."""

    fmt: str = "bitmask"
    values: str = "fp32"

    def __post_init__(self) -> None:
        if self.fmt not in LAYOUTS:
            raise ValueError(f"unknown fmt {self.fmt!r}; valid: {', '.join(LAYOUTS.names())}")
        if self.values not in VALUE_SCHEMES:
            raise ValueError(f"unknown values {self.values!r}; valid: {', '.join(VALUE_SCHEMES.names())}")


def _raw_bytes(t: Tensor) -> memoryview:
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _encode_tensor(name: str, t: Tensor, opts: ExportOptions) -> tuple[dict, list[Tensor]]:
    """One header record and its arrays (in record order)."""
    floating = t.is_floating_point()
    codec_name = VALUE_SCHEMES.get(opts.values)(t) if floating else "raw"
    try:
        enc = CODECS.create(codec_name).encode(t)
    except ValueError as e:
        raise ValueError(f"tensor {name!r}: {e}") from None
    flat = enc.data.reshape(-1)
    packed = LAYOUTS.create("dense").encode(flat)
    layout_name = "dense"
    if floating and opts.fmt != "dense":
        sparse = LAYOUTS.create(opts.fmt).encode(flat)
        if sparse.nbytes < packed.nbytes:
            packed, layout_name = sparse, opts.fmt
    arrays = {**packed.arrays, **enc.extras}
    record = {
        "name": name, "shape": list(t.shape), "dtype": _dtype_name(t.dtype),
        "codec": codec_name, "layout": layout_name, "nnz": int(packed.arrays["values"].numel()),
        "fields": packed.fields,
        "arrays": [[role, _dtype_name(a.dtype), a.numel()] for role, a in arrays.items()],
    }
    return record, [a.contiguous() for a in arrays.values()]


def _check_state_dict(state_dict: dict) -> None:
    for key, t in state_dict.items():
        if not isinstance(key, str) or not isinstance(t, Tensor):
            raise ValueError(f"state_dict entry {key!r} is not a str -> Tensor pair ({type(t).__name__})")
        if t.layout != torch.strided or t.is_quantized or _dtype_name(t.dtype) not in _DTYPES:
            raise ValueError(f"tensor {key!r} has unsupported layout/dtype ({t.layout}, {t.dtype})")


def save_compressed(state_dict: dict[str, Tensor], path: str | os.PathLike, *, fmt: str = "bitmask",
                    values: str = "fp32", meta: dict | None = None) -> int:
    """Write ``state_dict`` as a compressed checkpoint at ``path`` atomically; returns the file size.

    ``meta`` (JSON-serialisable, key ``"export"`` reserved) is stored in the header and returned by
    ``load_compressed``. Raises ``ValueError`` for bad options, tensors or meta.
    """
    opts = ExportOptions(fmt, values)
    if sys.byteorder != "little":
        raise ExportError(f"{path}: writing needs a little-endian host")
    meta = dict(meta or {})
    if META_KEY in meta:
        raise ValueError(f"meta key {META_KEY!r} is reserved")
    _check_state_dict(state_dict)
    records, chunks = [], []
    for name, t in state_dict.items():
        record, arrays = _encode_tensor(name, t.detach().cpu().contiguous(), opts)
        records.append(record)
        chunks.extend(_raw_bytes(a) for a in arrays)
    digest = hashlib.sha256()
    for c in chunks:
        digest.update(c)
    try:
        header = json.dumps({
            "fmt": opts.fmt, "values": opts.values, "byteorder": "little",
            "payload_bytes": sum(c.nbytes for c in chunks), "payload_sha256": digest.hexdigest(),
            "meta": meta, "tensors": records,
        }).encode("utf-8")
    except TypeError as e:  # the records are plain ints/strs/lists, so this is the user's meta
        raise ValueError(f"meta is not JSON-serialisable: {e}") from None
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header), hashlib.sha256(header).digest())
    return atomic_write(path, [memoryview(preamble), memoryview(header), *chunks])


def load_compressed(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint written by ``save_compressed``: ``(state_dict, meta)``.

    ``meta`` is the stored meta plus ``meta["export"]``: format_version, fmt, values, lossy (True when any
    tensor went through fp16/int8) and per tensor ``{layout, codec, nnz}`` (+ ``index_code`` for indices).
    Any corrupt, truncated or malformed file raises ``ExportError`` with one line naming the file and the
    problem.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ExportError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        header, payload = _split(data)
        _check_records(header, len(data))
        state, info = {}, {}
        for record, layout_arrays, extras in _records(header, payload):
            state[record["name"]] = _decode(record, layout_arrays, extras)
            info[record["name"]] = {"layout": record["layout"], "codec": record["codec"],
                                    "nnz": record["nnz"], **record["fields"]}
        meta = dict(header["meta"])
        meta[META_KEY] = {
            "format_version": FORMAT_VERSION, "fmt": header["fmt"], "values": header["values"],
            "lossy": any(v["codec"] != "raw" for v in info.values()), "tensors": info,
        }
    except UnknownNameError as e:
        raise ExportError(f"{path}: {e}") from None
    except KeyError as e:
        raise ExportError(f"{path}: malformed header (missing key {e})") from None
    except (ValueError, TypeError, IndexError, RuntimeError, OverflowError) as e:  # LayoutError is a ValueError
        raise ExportError(f"{path}: {str(e) or type(e).__name__}") from None
    return state, meta


def _split(data: bytes) -> tuple[dict, memoryview]:
    """Check preamble, header and payload integrity; return the parsed header and the payload bytes."""
    n = len(data)
    if n < _PREAMBLE.size:
        raise ValueError(f"truncated: {n} bytes, shorter than the {_PREAMBLE.size}-byte preamble")
    magic, version, hlen, hsha = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a sparsecl compressed checkpoint (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version} is not supported (this reader reads {FORMAT_VERSION})")
    body = memoryview(data)[_PREAMBLE.size:]
    if hlen > len(body):
        raise ValueError(f"truncated: header needs {hlen} bytes, {len(body)} left")
    raw_header = body[:hlen]
    if hashlib.sha256(raw_header).digest() != hsha:
        raise ValueError("header sha256 mismatch (corrupt file)")
    try:
        header = json.loads(bytes(raw_header).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"malformed header ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise ValueError("malformed header (not a JSON object)")
    if header.get("byteorder") != sys.byteorder:
        raise ValueError(f"byte order {header.get('byteorder')!r} differs from this host's {sys.byteorder!r}")
    expected = header.get("payload_bytes")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise ValueError(f"malformed header (payload_bytes {expected!r})")
    payload = body[hlen:]
    if len(payload) < expected:
        raise ValueError(f"truncated: payload has {len(payload)} of {expected} bytes")
    if len(payload) > expected:
        raise ValueError(f"{len(payload) - expected} unexpected bytes after the payload")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ValueError("payload sha256 mismatch (corrupt file)")
    return header, payload


_RECORD_TYPES = {"name": str, "shape": list, "dtype": str, "codec": str, "layout": str, "nnz": int,
                 "fields": dict, "arrays": list}


def _check_records(header: dict, file_bytes: int) -> None:
    """Field types of every record, unique names, and the decoded size bounded by the file's own length,
    all before anything is allocated: a 2 KB file declaring a [2^29] tensor is refused here."""
    tensors = header.get("tensors")
    if not isinstance(tensors, list) or not isinstance(header.get("meta"), dict):
        raise ValueError("malformed header (tensors must be a list, meta an object)")
    names, total = set(), 0
    for i, record in enumerate(tensors):
        if not isinstance(record, dict):
            raise ValueError(f"malformed header: tensor record {i} is not an object")
        for key, kind in _RECORD_TYPES.items():
            value = record.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"malformed header: tensor record {i} field {key!r} must be "
                                 f"{kind.__name__}, got {type(value).__name__}")
        name = record["name"]
        if name in names:
            raise ValueError(f"malformed header: tensor {name!r} appears twice")
        names.add(name)
        if record["dtype"] not in _DTYPES:
            raise ValueError(f"tensor {name!r}: unknown dtype {record['dtype']!r}")
        if not all(isinstance(a, list) and len(a) == 3 and isinstance(a[0], str) and isinstance(a[1], str)
                   for a in record["arrays"]):
            raise ValueError(f"tensor {name!r}: arrays must be [role, dtype, count] lists")
        total += _numel(record["shape"]) * _DTYPES[record["dtype"]].itemsize
    limit = max(DECODE_FLOOR, DECODE_RATIO * file_bytes)
    if total > limit:
        raise ValueError(f"declares {total} bytes of tensors, more than a {file_bytes}-byte file can hold "
                         f"(limit {limit}); refusing to allocate")


def _records(header: dict, payload: memoryview) -> Iterator[tuple[dict, Arrays, Arrays]]:
    """Yield (record, layout arrays, codec extras), after checking roles, dtypes and counts against specs."""
    offset = 0
    for record in header["tensors"]:
        name, numel, nnz = record["name"], _numel(record["shape"]), int(record["nnz"])
        if record["dtype"] not in _DTYPES:
            raise ValueError(f"tensor {name!r}: unknown dtype {record['dtype']!r}")
        codec, layout = CODECS.create(record["codec"]), LAYOUTS.create(record["layout"])
        layout_spec = layout.array_spec(numel, nnz, record["fields"])
        spec = {**layout_spec, **codec.extras_spec(tuple(record["shape"]))}
        storage = codec.storage_dtype(_DTYPES[record["dtype"]])
        roles = [a[0] for a in record["arrays"]]
        if roles != list(spec):
            raise ValueError(f"tensor {name!r}: arrays {roles} != expected {list(spec)}")
        arrays = {}
        for role, dtype_name, count in record["arrays"]:
            want_dtype, want_count = spec[role]
            want_dtype, dtype = want_dtype or storage, _DTYPES.get(dtype_name)
            bad_count = not isinstance(count, int) or count < 0 or want_count not in (None, count)
            if dtype != want_dtype or bad_count:
                raise ValueError(f"tensor {name!r}: array {role!r} is {dtype_name}[{count}], "
                                 f"expected {_dtype_name(want_dtype)}[{want_count}]")
            nbytes = count * dtype.itemsize
            if offset + nbytes > len(payload):
                raise ValueError(f"tensor {name!r}: array {role!r} runs past the end of the payload")
            arrays[role] = _frombuffer(payload[offset:offset + nbytes], dtype)
            offset += nbytes
        extras = {k: v for k, v in arrays.items() if k not in layout_spec}
        yield record, {k: arrays[k] for k in layout_spec}, extras
    if offset != len(payload):
        raise ValueError(f"payload has {len(payload) - offset} bytes not claimed by any tensor")


def _numel(shape: list) -> int:
    if (not isinstance(shape, list) or len(shape) > 16
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40 for s in shape)):
        raise ValueError(f"bad shape {shape!r}")
    n = 1
    for s in shape:
        n *= s
    return n


def _frombuffer(buf: memoryview, dtype: torch.dtype) -> Tensor:
    if len(buf) == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(buf), dtype=dtype)  # bytearray: an aligned, owned, writable copy


def _decode(record: dict, layout_arrays: dict[str, Tensor], extras: dict[str, Tensor]) -> Tensor:
    shape, dtype = tuple(record["shape"]), _DTYPES[record["dtype"]]
    flat = LAYOUTS.create(record["layout"]).decode(layout_arrays, _numel(record["shape"]), int(record["nnz"]),
                                                   record["fields"])
    return CODECS.create(record["codec"]).decode(Encoded(flat.reshape(shape), extras), dtype)
