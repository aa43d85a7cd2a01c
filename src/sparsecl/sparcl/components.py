"""Assemble SparCL's components (TDM, DDR, DGM) for a run from its config; all off = nothing added."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sparsecl.train.hooks import Component


@dataclass
class SparclParts:
    components: list[Component] = field(default_factory=list)
    grad_density: Any = None  # the DGM component (it reports gradient densities to the FLOPs meter)


def build_sparcl(cfg, model: torch.nn.Module, engine, method, stream, generator: torch.Generator, epochs: int) -> SparclParts:  # noqa: ANN001
    parts = SparclParts()
    return parts
