"""Compressed-row index structure of a sparse ``[out, in]`` weight, plus its transpose.

A weight ``W`` with boolean mask ``M`` is stored as the values of its active entries in row-major order
(CSR order) and the index arrays

    crow [out + 1]   row i owns positions crow[i] .. crow[i+1]-1
    col  [nnz]       column of each position

and, so that ``W^T`` is also a fast CSR product in the backward pass, the CSR structure of ``W^T``
(= the CSC structure of ``W``):

    t_crow [in + 1], t_col [nnz] (= the rows of W), perm [nnz]  with  values_T = values[perm].

Everything here is index bookkeeping: O(nnz) memory, no dense float tensor is ever built. Indices are
int32 whenever ``out * in < 2**31`` (measured as fast as int64 in MKL's CSR kernels on this CPU), so the
whole structure costs 12 bytes per nonzero (col, t_col, perm) plus the two pointer arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CsrStructure:
    """Index arrays of a CSR ``[out, in]`` matrix and of its transpose (one integer dtype, one device)."""

    shape: tuple[int, int]
    crow: torch.Tensor
    col: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    perm: torch.Tensor

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    def rows(self) -> torch.Tensor:
        """Row of each nonzero (int64): ``crow`` expanded, row i repeated crow[i+1] - crow[i] times."""
        counts = self.crow.diff().long()
        return torch.repeat_interleave(torch.arange(self.shape[0], device=self.col.device), counts)

    def flat_index(self) -> torch.Tensor:
        """Row-major flat position ``row * in + col`` (int64) of each nonzero; ascending (CSR is sorted)."""
        return self.rows() * self.shape[1] + self.col.long()


def index_dtype(shape: tuple[int, int]) -> torch.dtype:
    """int32 while every flat position fits in it, else int64."""
    return torch.int32 if shape[0] * shape[1] < 2**31 else torch.int64


def _crow_from_sorted(major: torch.Tensor, n_major: int) -> torch.Tensor:
    """Compressed pointer array: crow[i] = number of entries whose major index is < i."""
    crow = torch.zeros(n_major + 1, dtype=torch.long, device=major.device)
    crow[1:] = torch.bincount(major, minlength=n_major).cumsum(0)
    return crow


def structure_from_indices(row: torch.Tensor, col: torch.Tensor, shape: tuple[int, int]) -> CsrStructure:
    """Build the structure from row-major sorted ``(row, col)`` coordinate arrays."""
    out_f, in_f = shape
    row, col = row.long(), col.long()
    # Transpose: sort the nonzeros by (col, row). A stable sort on col keeps rows ascending within a
    # column because the input is row-major sorted, so perm maps W^T's CSR order to W's CSR order.
    perm = torch.sort(col, stable=True).indices
    dt = index_dtype((out_f, in_f))
    return CsrStructure(
        shape=(out_f, in_f),
        crow=_crow_from_sorted(row, out_f).to(dt),
        col=col.to(dt),
        t_crow=_crow_from_sorted(col[perm], in_f).to(dt),
        t_col=row[perm].to(dt),
        perm=perm.to(dt),
    )


def structure_from_mask(mask: torch.Tensor) -> CsrStructure:
    """CSR structure of the True entries of a 2-D boolean mask (row-major order)."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a 2-D bool tensor, got dim={mask.dim()} dtype={mask.dtype}")
    idx = mask.nonzero()  # [nnz, 2], row-major sorted
    return structure_from_indices(idx[:, 0], idx[:, 1], (mask.shape[0], mask.shape[1]))


def structure_from_crow_col(crow: torch.Tensor, col: torch.Tensor, shape: tuple[int, int]) -> CsrStructure:
    """Rebuild the full structure from the two arrays a checkpoint stores."""
    counts = crow.diff().long()
    row = torch.repeat_interleave(torch.arange(shape[0], device=col.device), counts)
    return structure_from_indices(row, col, shape)


def csr_tensor(s: CsrStructure, values: torch.Tensor) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` view of W (no copy of the index arrays; invariants hold by construction)."""
    return torch.sparse_csr_tensor(s.crow, s.col, values, s.shape, check_invariants=False)


def csr_tensor_t(s: CsrStructure, values: torch.Tensor) -> torch.Tensor:
    """CSR tensor of W^T ``[in, out]``: its values are ``values[perm]`` (one O(nnz) gather).

    index_select, not ``values[perm]``: advanced indexing measured 5-10x slower for this 1-D gather.
    """
    shape_t = (s.shape[1], s.shape[0])
    values_t = values.index_select(0, s.perm)
    return torch.sparse_csr_tensor(s.t_crow, s.t_col, values_t, shape_t, check_invariants=False)


def position_map(old: CsrStructure, new: CsrStructure) -> torch.Tensor:
    """``old_to_new[k]`` = position in ``new`` of old nonzero k, or -1 where it is no longer active.

    Both flat-index arrays are ascending, so a binary search finds each old entry in the new ones.
    """
    old_flat, new_flat = old.flat_index(), new.flat_index()
    if new_flat.numel() == 0:
        return torch.full_like(old_flat, -1)
    pos = torch.searchsorted(new_flat, old_flat).clamp_(max=new_flat.numel() - 1)
    return torch.where(new_flat[pos] == old_flat, pos, torch.full_like(pos, -1))
