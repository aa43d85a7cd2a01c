"""Pure mask functions: tensors in, boolean masks out, randomness only from an explicit generator.

Conventions shared by every function here:

* A mask is a ``torch.bool`` tensor of the weight's shape; True = active (kept) weight.
* Counts are exact (``floor(s * N)`` zeros for sparsity ``s``), never Bernoulli per element.
* Ties in a score are broken uniformly at random and reproducibly: entries tied at the selection
  boundary are chosen by a permutation drawn from ``generator``, while every strict ordering is kept
  exactly. (RigL and jaxpruner add tiny random noise to the score instead; noise can reorder genuinely
  different scores closer than the noise.) ``generator`` must live on the scores' device, and is only
  consumed when a tie has to be broken.
* N:M groups run along the input dimension: ``[out, in]`` for Linear and ``[out, kh, kw, in]`` (the
  channels-last GEMM layout of sparse tensor cores) for a conv weight ``[out, in, kh, kw]``.
"""

from __future__ import annotations

import math

import torch

_EPS = 1e-9


def exact_floor(x: float) -> int:
    """``floor(x)`` that forgives float round-off just below an integer: ``(1 - 0.9) * 10`` is
    0.9999999999999998, and gives 1, not 0."""
    return math.floor(x + _EPS * max(1.0, abs(x)))


def count_for_density(numel: int, density: float) -> int:
    """Active entries of a layer of ``numel`` weights at ``density``: ``numel - floor((1 - density) * numel)``."""
    return numel - exact_floor((1.0 - density) * numel)


def _extreme(flat: torch.Tensor, k: int, generator: torch.Generator, largest: bool = True) -> torch.Tensor:
    """Indices of the ``k`` largest (or smallest) entries of 1-D ``flat``, ties broken at random.

    One partial selection (``topk``, O(N), no sort) finds the k-th value v. Entries strictly beyond v are
    all taken; if more entries equal v than places remain, the remaining places go to a uniformly random
    subset of them (a permutation of the tied entries only, drawn from ``generator``).
    """
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=flat.device)
    values, idx = torch.topk(flat, k, largest=largest, sorted=False)
    edge = values.min() if largest else values.max()
    tied = (flat == edge).nonzero().squeeze(1)
    beyond = ((flat > edge) if largest else (flat < edge)).nonzero().squeeze(1)
    need = k - beyond.numel()
    if tied.numel() <= need:  # every tied entry fits: the choice is unique (NaN scores: topk's own)
        return idx
    pick = torch.randperm(tied.numel(), generator=generator, device=flat.device)[:need]
    return torch.cat([beyond, tied[pick]])


def topk_mask(score: torch.Tensor, k: int, generator: torch.Generator,
              among: torch.Tensor | None = None) -> torch.Tensor:
    """Mask of the ``k`` largest entries of ``score`` (clamped to [0, numel]); ties broken at random. With
    ``among`` (flat indices) only those entries are ranked, and at most all of them kept."""
    if among is not None:
        mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        mask[among[topk_mask(score.reshape(-1)[among], k, generator)]] = True
        return mask.view(score.shape)
    flat = score.reshape(-1)
    n = flat.numel()
    k = max(0, min(int(k), n))
    if k <= n // 2:
        mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
        mask[_extreme(flat, k, generator)] = True
    else:  # cheaper to select the n - k smallest and keep the rest
        mask = torch.ones(n, dtype=torch.bool, device=flat.device)
        mask[_extreme(flat, n - k, generator, largest=False)] = False
    return mask.view(score.shape)


def random_mask(shape: torch.Size | tuple[int, ...], count: int, generator: torch.Generator,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Exactly ``count`` active entries at uniformly random positions (not Bernoulli per element)."""
    numel = math.prod(shape)
    mask = torch.zeros(numel, dtype=torch.bool, device=device)
    mask[torch.randperm(numel, generator=generator, device=device)[: max(0, min(int(count), numel))]] = True
    return mask.view(tuple(shape))


def drop_smallest(mask: torch.Tensor, score: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Deactivate the ``n`` active entries with the smallest ``score`` (RigL/SET drop, score = |w|).

    Only the active entries are ranked (O(active), cheap at high sparsity).
    """
    active = mask.reshape(-1).nonzero().squeeze(1)
    out = mask.clone()
    n = max(0, min(int(n), active.numel()))
    out.view(-1)[active[_extreme(score.reshape(-1)[active], n, generator, largest=False)]] = False
    return out


def grow_largest(mask: torch.Tensor, score: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Activate the ``n`` inactive entries with the largest ``score`` (RigL: |dense gradient|)."""
    grown = topk_mask(score.masked_fill(mask, -math.inf), n, generator)
    return mask | grown


def drop_and_grow(mask: torch.Tensor, drop_score: torch.Tensor, grow_score: torch.Tensor, n: int,
                  generator: torch.Generator) -> torch.Tensor:
    """One RigL-family update of one layer: drop ``n`` by ``drop_score``, regrow ``n`` by ``grow_score``.

    Growth ranks every entry inactive AFTER the drop, so a just-dropped entry may be regrown; it then never
    left the mask, and the engine keeps its value and optimizer state (as RigL's code does, which only
    re-initialises connections that were inactive before the update). The active count is unchanged.
    """
    if n <= 0:
        return mask.clone()
    return grow_largest(drop_smallest(mask, drop_score, n, generator), grow_score, n, generator)


# ----------------------------------------------------------------------------------------------------
# N:M (fine-grained structured) masks


def to_groups(x: torch.Tensor, m: int) -> torch.Tensor:
    """View ``x`` as ``[groups, m]`` with groups of ``m`` consecutive input-dimension entries."""
    if x.dim() > 2:  # conv [out, in, *k] -> [out, *k, in]: the input channel becomes the inner dim
        x = x.movedim(1, -1)
    return x.reshape(-1, m)


def from_groups(g: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_groups` for a tensor of the original ``shape``."""
    if len(shape) > 2:
        moved = (shape[0], *shape[2:], shape[1])
        return g.reshape(moved).movedim(-1, 1).contiguous()
    return g.reshape(tuple(shape))


def _group_ranked(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per row of ``groups`` [G, m]: column indices from the largest score down, ties at random."""
    perm = torch.rand(groups.shape, generator=generator, device=groups.device).argsort(dim=1)
    order = torch.sort(groups.gather(1, perm), dim=1, descending=True, stable=True).indices
    return perm.gather(1, order)


def nm_mask(score: torch.Tensor, n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """Keep the ``n`` largest scores of every ``m`` consecutive input-dimension entries."""
    groups = to_groups(score, m)
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=score.device)
    keep.scatter_(1, _group_ranked(groups, generator)[:, :n], True)
    return from_groups(keep, score.shape)


def nm_drop_and_grow(mask: torch.Tensor, drop_score: torch.Tensor, grow_score: torch.Tensor, n_drop: int,
                     n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """Drop/grow that preserves an N:M mask: drop ``n_drop`` smallest across the layer, regrow in place.

    Each group that lost k entries regrows its k best inactive-after-drop entries by ``grow_score``, so
    every group again holds exactly ``n`` and the layer's count is unchanged. (Our generalisation of the
    unstructured update; jaxpruner only projects the final mask onto N:M.)
    """
    if n_drop <= 0:
        return mask.clone()
    kept = to_groups(drop_smallest(mask, drop_score, n_drop, generator), m)
    deficit = n - kept.sum(dim=1, keepdim=True)  # [G, 1] entries to regrow per group
    ranked = _group_ranked(to_groups(grow_score, m).masked_fill(kept, -math.inf), generator)
    take = torch.arange(m, device=mask.device).expand_as(ranked) < deficit
    grown = torch.zeros_like(kept).scatter_(1, ranked, take)
    return from_groups(kept | grown, mask.shape)
