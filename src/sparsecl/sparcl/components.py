"""Assemble SparCL's components (TDM, DDR, DGM) for a run from its config; all off adds nothing.

TDM and DGM share one ``GradientSplit``: a step on which both score importance takes the current-task
gradient once. Their order in the run (TDM before DGM: TDM reads the dense gradient before DGM masks it)
is declared with the run's other components in ``sparsecl.train.build.PIPELINE_ORDER``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sparsecl.contract import Component
from sparsecl.sparcl.ddr import DynamicDataRemoval
from sparsecl.sparcl.dgm import DynamicGradientMasking
from sparsecl.sparcl.gradsplit import GradientSplit
from sparsecl.sparcl.tdm import TaskAwareDynamicMasking
from sparsecl.sparse.filters import select_layers


@dataclass
class SparclParts:
    components: dict[str, Component] = field(default_factory=dict)  # name -> component, in calling order
    grad_density: Any = None  # the DGM component (it reports gradient densities to the FLOPs meter)


def build_sparcl(cfg, model: torch.nn.Module, engine, method, stream, generator: torch.Generator,  # noqa: ANN001
                 device: torch.device) -> SparclParts:
    sc = cfg.sparcl
    parts = SparclParts()
    split = GradientSplit({})
    if sc.tdm:
        parts.components["tdm"] = TaskAwareDynamicMasking(engine, sc, generator, split=split)
    if sc.ddr:
        n = method.index_space()  # Joint on Domain-IL numbers task k's example i as k N + i
        parts.components["ddr"] = DynamicDataRemoval.from_config(sc, n, generator, device)
    if sc.dgm:
        names = [layer.name for layer in engine.layers] or [s.name for s in select_layers(model, sc.layers, False, False)]
        params = dict(model.named_parameters())
        dgm = DynamicGradientMasking.from_config(sc, {n: params[n] for n in names}, engine if engine.layers else None,
                                                 split=split)
        parts.components["dgm"] = dgm
        parts.grad_density = dgm
    return parts
