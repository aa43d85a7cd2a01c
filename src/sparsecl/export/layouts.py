"""Layouts: where the stored values of one flattened tensor sit.

* ``dense``   -- every element: ``values[numel]``.
* ``bitmask`` -- ``mask[ceil(numel / 8)]`` (np.packbits, MSB first, padding bits 0) + ``values[nnz]``:
  numel / 8 + nnz * b bytes for b-byte values.
* ``indices`` -- an index stream + ``values[nnz]``. The stream is the smallest of these codes (ties: first):
  ``delta8`` / ``delta16`` / ``delta32``: per nonzero the number of zeros skipped since the previous one,
  d_k = i_k - i_{k-1} - 1 (i_{-1} = -1), as an unsigned integer of width w with escape code E = 2^w - 1:
  d is written as floor(d / E) escape codes ("skip E positions, no value") then d mod E.
  Decoding: each escape contributes E and each direct code c contributes c + 1 to a running sum; the
  sum taken at the k-th direct code, minus 1, is i_k.
  ``plain16`` / ``plain32`` / ``plain64``: the flat indices themselves (numel <= 2^w).
  At density p the gaps are geometric with mean 1/p, so at 90 % sparsity delta8 needs ~1 byte per
  nonzero (an escape only for gaps >= 255, probability 0.9^255 ~ 2e-12) against the bitmask's 1 bit per
  element (1.25 bytes per nonzero at 10 % density): indices win below 1/8 density, the bitmask above.
  Format 1 only ever writes what ``encode`` picks; any listed code is accepted on load.

"Nonzero" means ``x != 0``: NaN is stored, and both zeros are dropped, so a sparse layout returns every
value bit-exactly except that -0.0 comes back as +0.0 (equal under ``==`` and ``torch.equal``; masking
by multiplication, ``w * mask``, leaves -0.0 at every pruned negative weight, so keeping the sign of
zeros would cost a bit per zero). The dense layout is byte-exact. A layout only sees storage-dtype data;
the codec (``codecs.py``) maps to and from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from sparsecl.registry import Registry

_CODE_DTYPES = {8: torch.uint8, 16: torch.uint16, 32: torch.uint32, 64: torch.uint64}
# index code name -> width in bits
_CODES = {f"{kind}{bits}": bits for kind, widths in (("delta", (8, 16, 32)), ("plain", (16, 32, 64)))
          for bits in widths}
INDEX_CODES = tuple(_CODES)
# role -> (dtype, count) a stored array must have; dtype None = the codec's storage dtype, count None =
# checked by ``decode`` (the delta stream holds nnz codes plus escapes)
ArraySpec = tuple[torch.dtype | None, int | None]


class LayoutError(ValueError):
    """Arrays that do not describe a valid tensor (the container turns this into an ExportError)."""


@dataclass(frozen=True)
class Packed:
    """Arrays to store (role -> 1-D tensor, in order) and small header fields (JSON-able)."""

    arrays: dict[str, Tensor]
    fields: dict[str, object] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.arrays.values())


class Layout(Protocol):
    """encode: flat storage-dtype data -> arrays; array_spec: what a loader must find; decode: the inverse."""

    def encode(self, flat: Tensor) -> Packed: ...

    def array_spec(self, numel: int, nnz: int, fields: dict) -> dict[str, ArraySpec]: ...

    def decode(self, arrays: dict[str, Tensor], numel: int, nnz: int, fields: dict) -> Tensor: ...


LAYOUTS: Registry[Layout] = Registry("layout")


def nonzero_mask(flat: Tensor) -> Tensor:
    """Elements that are stored by a sparse layout: ``x != 0`` (NaN included, +-0.0 excluded)."""
    return flat != 0


@LAYOUTS.register("dense")
class DenseLayout:
    def encode(self, flat: Tensor) -> Packed:
        return Packed({"values": flat})

    def array_spec(self, numel: int, nnz: int, fields: dict) -> dict[str, ArraySpec]:
        return {"values": (None, numel)}

    def decode(self, arrays: dict[str, Tensor], numel: int, nnz: int, fields: dict) -> Tensor:
        return arrays["values"]


@LAYOUTS.register("bitmask")
class BitmaskLayout:
    def encode(self, flat: Tensor) -> Packed:
        mask = nonzero_mask(flat)
        bits = torch.from_numpy(np.packbits(mask.numpy()))
        return Packed({"mask": bits, "values": flat[mask]})

    def array_spec(self, numel: int, nnz: int, fields: dict) -> dict[str, ArraySpec]:
        return {"mask": (torch.uint8, (numel + 7) // 8), "values": (None, nnz)}

    def decode(self, arrays: dict[str, Tensor], numel: int, nnz: int, fields: dict) -> Tensor:
        bits = np.unpackbits(arrays["mask"].numpy())
        if bits[numel:].any():
            raise LayoutError("bitmask padding bits are set")
        mask = torch.from_numpy(bits[:numel].astype(np.bool_))
        if int(mask.sum()) != nnz:
            raise LayoutError(f"bitmask has {int(mask.sum())} set bits, header says nnz={nnz}")
        out = torch.zeros(numel, dtype=arrays["values"].dtype)
        out[mask] = arrays["values"]
        return out


def _delta_codes(idx: Tensor, escape: int) -> Tensor:
    """Gap stream with escapes (module docstring), as int64."""
    d = torch.diff(idx, prepend=idx.new_tensor([-1])) - 1  # zeros skipped before each nonzero
    n_esc = torch.div(d, escape, rounding_mode="floor")
    slot = torch.cumsum(n_esc + 1, 0) - 1  # where each direct code lands
    out = torch.full((int(slot[-1]) + 1 if idx.numel() else 0,), escape, dtype=torch.int64)
    out[slot] = d - n_esc * escape
    return out


def index_stream(idx: Tensor, code: str) -> Tensor:
    """The stream of index code ``code`` (e.g. ``delta8``) for sorted flat indices ``idx``."""
    bits = _CODES[code]
    if code.startswith("plain") and idx.numel() and int(idx[-1]) >= 2**bits:
        raise ValueError(f"index {int(idx[-1])} does not fit {code}")
    stream = _delta_codes(idx, 2**bits - 1) if code.startswith("delta") else idx
    return stream.to(_CODE_DTYPES[bits])


def _index_candidates(idx: Tensor, numel: int) -> list[tuple[str, int]]:
    """(code name, bytes) for every code that can hold these indices, in tie-break order."""
    d = torch.diff(idx, prepend=idx.new_tensor([-1])) - 1
    out = []
    for bits in (8, 16, 32):
        n_codes = idx.numel() + int(torch.div(d, 2**bits - 1, rounding_mode="floor").sum())
        out.append((f"delta{bits}", n_codes * bits // 8))
    for bits in (16, 32, 64):
        if numel <= 2**bits:
            out.append((f"plain{bits}", idx.numel() * bits // 8))
    return out


@LAYOUTS.register("indices")
class IndicesLayout:
    def encode(self, flat: Tensor) -> Packed:
        mask = nonzero_mask(flat)
        idx = torch.nonzero(mask).flatten()
        code, _ = min(_index_candidates(idx, flat.numel()), key=lambda c: c[1])  # min keeps the first tie
        return Packed({"index": index_stream(idx, code), "values": flat[mask]}, {"index_code": code})

    def array_spec(self, numel: int, nnz: int, fields: dict) -> dict[str, ArraySpec]:
        code = fields.get("index_code")
        if code not in _CODES:
            raise LayoutError(f"unknown index code {code!r}; valid: {', '.join(_CODES)}")
        count = nnz if code.startswith("plain") else None
        return {"index": (_CODE_DTYPES[_CODES[code]], count), "values": (None, nnz)}

    def decode(self, arrays: dict[str, Tensor], numel: int, nnz: int, fields: dict) -> Tensor:
        code = str(fields["index_code"])
        stream = arrays["index"].to(torch.int64)
        if code.startswith("delta"):
            escape = 2 ** _CODES[code] - 1
            direct = stream != escape
            if int(direct.sum()) != nnz or (stream.numel() and not bool(direct[-1])):
                n_direct = int(direct.sum())
                raise LayoutError(f"index stream has {n_direct} values or ends in an escape; nnz={nnz}")
            idx = torch.cumsum(torch.where(direct, stream + 1, stream), 0)[direct] - 1
        else:
            idx = stream
            if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
                raise LayoutError("plain indices are not strictly increasing")
        if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= numel):
            raise LayoutError(f"indices out of range [0, {numel})")
        out = torch.zeros(numel, dtype=arrays["values"].dtype)
        out[idx] = arrays["values"]
        return out
