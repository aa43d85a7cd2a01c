"""Mask patterns: how a score (or randomness) becomes a mask of a given count.

``unstructured`` picks any entries; ``n:m`` keeps N of every M consecutive input-dimension entries
(2:4 is what sparse tensor cores run). A pattern is chosen once per engine; methods only ask it for
``select`` (top-count by score), ``random`` (exact-count random) and ``drop_grow`` (one update).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sparsecl.registry import Registry
from sparsecl.sparse import masks

if TYPE_CHECKING:
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.filters import LayerSpec

MASK_PATTERNS: Registry[type["MaskPattern"]] = Registry("mask pattern")


class MaskPattern:
    """Base: unstructured masks (any position may be active)."""

    @classmethod
    def from_config(cls, cfg: "SparsityConfig") -> "MaskPattern":
        return cls()

    def check(self, spec: "LayerSpec") -> None:
        """Raise ValueError if the layer cannot carry this pattern."""

    def select(self, score: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        return masks.topk_mask(score, count, generator)

    def random(self, like: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        return masks.random_mask(like.shape, count, generator, like.device)

    def drop_grow(self, mask: torch.Tensor, drop_score: torch.Tensor, grow_score: torch.Tensor, n_drop: int,
                  generator: torch.Generator) -> torch.Tensor:
        return masks.drop_and_grow(mask, drop_score, grow_score, n_drop, generator)


MASK_PATTERNS.register("unstructured")(MaskPattern)


@MASK_PATTERNS.register("n:m")
class NMPattern(MaskPattern):
    """N:M fine-grained structured sparsity (Mishra et al., 2021, "Accelerating Sparse Deep Neural
    Networks"): every group of M consecutive input-dimension weights keeps exactly N. Layer density is
    N/M; a layer whose input dimension is not a multiple of M must be kept dense (dense_first/dense_last)
    or left out of ``layers``.
    """

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m

    @classmethod
    def from_config(cls, cfg: "SparsityConfig") -> "NMPattern":
        return cls(cfg.nm_n, cfg.nm_m)

    def check(self, spec: "LayerSpec") -> None:
        if spec.forced_dense:
            return
        if len(spec.shape) < 2 or spec.shape[1] % self.m:
            raise ValueError(f"pattern n:m ({self.n}:{self.m}) needs the input dimension of {spec.name} "
                             f"{tuple(spec.shape)} to be a multiple of {self.m}; "
                             "keep it dense or leave it out of layers")

    def _full(self, like: torch.Tensor, count: int) -> torch.Tensor | None:
        """All-ones for a dense layer; None for an N:M layer; ValueError for any other count."""
        if count >= like.numel():
            return torch.ones_like(like, dtype=torch.bool)
        if count * self.m != like.numel() * self.n:
            raise ValueError(f"pattern n:m keeps {self.n}/{self.m} of a layer; "
                             f"got a count of {count} of {like.numel()}")
        return None

    def select(self, score: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        full = self._full(score, count)
        return full if full is not None else masks.nm_mask(score, self.n, self.m, generator)

    def random(self, like: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        full = self._full(like, count)
        if full is not None:
            return full
        score = torch.rand(like.shape, generator=generator, device=like.device)
        return masks.nm_mask(score, self.n, self.m, generator)

    def drop_grow(self, mask: torch.Tensor, drop_score: torch.Tensor, grow_score: torch.Tensor, n_drop: int,
                  generator: torch.Generator) -> torch.Tensor:
        return masks.nm_drop_and_grow(mask, drop_score, grow_score, n_drop, self.n, self.m, generator)
