"""Layer-wise sparsity distributions: how many weights each sparse layer keeps.

Every distribution returns exact integer ACTIVE counts, one per layer, for an overall target ``density``
over the engine's layers (forced-dense layers included). Entries take the same keyword arguments:

    fn(specs, density, *, custom=None, scores=None) -> list[int]

* ``uniform``: every layer at ``density`` (``floor((1 - density) N_l)`` zeros), forced-dense layers at 1,
  so the overall density is above target when a layer is forced dense (RigL's "first layer dense").
* ``er`` / ``erk``: Erdos-Renyi(-Kernel) (Mocanu et al., 2018; Evci et al., 2020): density_l = eps * raw_l
  with raw_l = (sum of dims) / (product of dims) of the weight (ER: of its two channel dims only). The
  budget is exact over ALL layers, as in RigL's ``get_sparsities_erdos_renyi``: forced-dense layers spend
  their full size out of it and the others get sparser. Layers whose density would exceed 1 are made dense,
  the largest raw_l first, and eps is solved again until none does. Real-valued counts eps raw_l N_l are
  rounded by largest remainder so they sum to the budget exactly (RigL rounds each layer on its own).
* ``custom``: a map of layer name (parameter or module name) -> density; unlisted layers get ``density``.
* ``global``: one magnitude ranking across layers (SNIP as published, global IMP); needs ``scores``, so it
  only serves methods whose masks come from scores (snip, gmp, lth).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

from sparsecl.registry import Registry
from sparsecl.sparse.filters import LayerSpec
from sparsecl.sparse.masks import count_for_density

Distribution = Callable[..., list[int]]
DISTRIBUTIONS: Registry[Distribution] = Registry("sparsity distribution")
SCORED_DISTRIBUTIONS = frozenset({"global"})  # need per-weight scores, not just shapes


def budget(specs: Sequence[LayerSpec], density: float) -> int:
    """Active weights allowed over all layers: ``N - floor((1 - density) N)``."""
    return count_for_density(sum(s.numel for s in specs), density)


@DISTRIBUTIONS.register("uniform")
def uniform(specs: Sequence[LayerSpec], density: float, **_: object) -> list[int]:
    return [s.numel if s.forced_dense else count_for_density(s.numel, density) for s in specs]


def _erk_raw(shape: torch.Size) -> float:
    """(k_h + k_w + c_in + c_out) / (k_h k_w c_in c_out) for a conv; (n_in + n_out) / (n_in n_out) for a Linear."""
    return sum(shape) / math.prod(shape)


def _er_raw(shape: torch.Size) -> float:
    """(c_in + c_out) / (c_in c_out): the kernel size is ignored."""
    return (shape[0] + shape[1]) / (shape[0] * shape[1]) if len(shape) > 1 else 1.0


def _apportion(targets: dict[int, float], total: int) -> dict[int, int]:
    """Integers near ``targets`` summing to ``total``: floors, then +1 to the largest remainders."""
    counts = {i: math.floor(v) for i, v in targets.items()}
    left = total - sum(counts.values())
    for i in sorted(targets, key=lambda i: counts[i] - targets[i])[:max(left, 0)]:
        counts[i] += 1
    return counts


def _scaled(specs: Sequence[LayerSpec], density: float, raw: Callable[[torch.Size], float]) -> list[int]:
    """Solve sum_{l free} eps raw_l N_l = B - sum_{l dense} N_l for eps, capping densities at 1."""
    target = budget(specs, density)
    dense = {i for i, s in enumerate(specs) if s.forced_dense}
    scale = {i: raw(s.shape) for i, s in enumerate(specs)}
    while True:
        rest = target - sum(specs[i].numel for i in dense)
        if rest < 0:
            raise ValueError(f"density {density} is too low: the dense layers alone hold more than "
                             f"{target} weights; lower dense_first/dense_last or raise the density")
        free = [i for i in range(len(specs)) if i not in dense]
        if not free:
            return [s.numel for s in specs]
        eps = rest / sum(scale[i] * specs[i].numel for i in free)
        top = max(scale[i] for i in free)
        if eps * top <= 1.0:
            break
        dense |= {i for i in free if scale[i] == top}  # the largest raw density saturates first
    counts = _apportion({i: eps * scale[i] * specs[i].numel for i in free}, rest)
    return [specs[i].numel if i in dense else counts[i] for i in range(len(specs))]


@DISTRIBUTIONS.register("er")
def erdos_renyi(specs: Sequence[LayerSpec], density: float, **_: object) -> list[int]:
    return _scaled(specs, density, _er_raw)


@DISTRIBUTIONS.register("erk")
def erdos_renyi_kernel(specs: Sequence[LayerSpec], density: float, **_: object) -> list[int]:
    return _scaled(specs, density, _erk_raw)


@DISTRIBUTIONS.register("custom")
def custom(specs: Sequence[LayerSpec], density: float, *, custom: Mapping[str, float] | None = None,
           **_: object) -> list[int]:
    custom = dict(custom or {})
    known = {s.name for s in specs} | {s.module_name for s in specs}
    unknown = sorted(k for k in custom if k not in known)
    if unknown:
        raise ValueError(f"custom_densities names {', '.join(unknown)} that are not sparse layers; "
                         f"valid: {', '.join(s.name for s in specs)}")
    out = []
    for s in specs:
        d = custom.get(s.name, custom.get(s.module_name, density))
        out.append(s.numel if s.forced_dense else count_for_density(s.numel, d))
    return out


@DISTRIBUTIONS.register("global")
def global_magnitude(specs: Sequence[LayerSpec], density: float, *,
                     scores: Sequence[torch.Tensor] | None = None, **_: object) -> list[int]:
    """Keep the ``budget`` highest scores over all free layers (ties go to the earlier layer)."""
    if scores is None:
        raise ValueError("distribution 'global' ranks weights across layers and needs scores; "
                         "use it with snip, gmp or lth")
    target = budget(specs, density)
    free = [i for i, s in enumerate(specs) if not s.forced_dense]
    rest = target - sum(s.numel for s in specs if s.forced_dense)
    if rest < 0:
        raise ValueError(f"density {density} is too low: the dense layers alone hold more than {target} weights")
    counts = [s.numel for s in specs]
    if not free:
        return counts
    flat = torch.cat([scores[i].reshape(-1).float() for i in free])
    owner = torch.cat([torch.full((specs[i].numel,), j, device=flat.device) for j, i in enumerate(free)])
    top = torch.sort(flat, descending=True, stable=True).indices[:rest]
    per_layer = torch.bincount(owner[top], minlength=len(free)).tolist()
    for j, i in enumerate(free):
        counts[i] = int(per_layer[j])
    return counts


def refuse_empty_layers(specs: Sequence[LayerSpec], counts: Sequence[int], cfg: object) -> None:
    """A layer with no active weight cuts the network (every output of it is its bias): refuse the density,
    naming the layer and the smallest density at which this distribution keeps a weight in every layer
    (found by bisection; the counts are monotone in the density)."""
    empty = [s.name for s, c in zip(specs, counts) if c == 0 and s.numel > 0]
    if not empty:
        return
    fn, custom = DISTRIBUTIONS.get(cfg.distribution), getattr(cfg, "custom_densities", None)

    def ok(d: float) -> bool:
        try:
            return all(c > 0 for s, c in zip(specs, fn(specs, d, custom=custom)) if s.numel > 0)
        except ValueError:
            return False

    lo, hi = float(cfg.density), 1.0
    if not ok(hi):
        raise ValueError(f"sparsity.custom_densities leave layer {empty[0]} with no active weight")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    smallest = float(f"{hi:.3g}")
    while not ok(smallest):  # rounding for the message must not round below the valid range
        smallest = float(f"{smallest * 1.001:.4g}")
    raise ValueError(f"sparsity.density={cfg.density} leaves layer {empty[0]} with no active weight under the "
                     f"{cfg.distribution} distribution; the smallest density that keeps one in every layer is "
                     f"{smallest}")
