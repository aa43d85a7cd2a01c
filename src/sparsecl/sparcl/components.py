"""Assemble SparCL's components (TDM, DDR, DGM) for a run from its config; all off adds nothing.

Hook order within a step is TDM, then DGM: TDM reads the dense gradient before DGM masks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sparsecl.sparcl.ddr import DynamicDataRemoval
from sparsecl.sparcl.dgm import DynamicGradientMasking
from sparsecl.sparcl.tdm import TaskAwareDynamicMasking
from sparsecl.sparse.filters import select_layers
from sparsecl.contract import Component


@dataclass
class SparclParts:
    components: list[Component] = field(default_factory=list)
    grad_density: Any = None  # the DGM component (it reports gradient densities to the FLOPs meter)


def build_sparcl(cfg, model: torch.nn.Module, engine, method, stream, generator: torch.Generator,  # noqa: ANN001
                 device: torch.device) -> SparclParts:
    sc = cfg.sparcl
    parts = SparclParts()
    if sc.tdm:
        parts.components.append(TaskAwareDynamicMasking(engine, sc, generator))
    if sc.ddr:
        n = method.index_space()  # Joint on Domain-IL numbers task k's example i as k N + i
        parts.components.append(DynamicDataRemoval.from_config(sc, n, generator, device))
    if sc.dgm:
        names = [layer.name for layer in engine.layers] or [s.name for s in select_layers(model, sc.layers, False, False)]
        params = dict(model.named_parameters())
        dgm = DynamicGradientMasking.from_config(sc, {n: params[n] for n in names}, engine if engine.layers else None)
        parts.components.append(dgm)
        parts.grad_density = dgm
    return parts
