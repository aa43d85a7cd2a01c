"""``debug_sync=true``: fingerprint every replicated piece of state and compare it across ranks.

Data-parallel sparse training has a known silent failure: masks drift apart between ranks (sparseml
#429) and each rank then trains a different network. Here every rank's masks, weights, buffer and
component state are meant to be bit-identical after every step (see sparsecl.distributed.step); the
check hashes each tensor (SHA-1 of its bytes), gathers the digests and stops on the first difference,
naming the step, the piece of state and the ranks.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from sparsecl.distributed.runtime import Dist


class DivergenceError(RuntimeError):
    """Ranks hold different state where they must be identical (``debug_sync``)."""


def digest(t: torch.Tensor) -> str:
    flat = t.detach().reshape(-1).contiguous().cpu()
    return hashlib.sha1(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def fingerprint(obj: Any, path: str = "") -> dict[str, str]:
    """Path -> digest of every tensor (and repr of every scalar) in a nest of dicts/lists/tuples."""
    if torch.is_tensor(obj):
        return {path: digest(obj)}
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(fingerprint(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(fingerprint(v, f"{path}[{i}]"))
        return out
    return {path: repr(obj)}


def check_identical(dist: Dist, state: dict[str, Any], step: int) -> dict[str, str]:
    """Raise DivergenceError unless every rank's ``state`` has the same fingerprint; returns it."""
    mine = fingerprint(state)
    for r, theirs in enumerate(dist.gather_object(mine)):
        if theirs == mine:
            continue
        bad = next((k for k in mine if theirs.get(k) != mine[k]), None) or next(iter(set(theirs) - set(mine)))
        raise DivergenceError(f"ranks diverged after step {step}: {bad} differs between rank {dist.rank} and "
                              f"rank {r} (debug_sync); the run stopped before training on diverged state")
    return mine
