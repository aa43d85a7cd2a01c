"""Continual-learning methods, one short file each (mammoth style), behind the ``CL_METHODS`` registry.

Every entry is a ``ContinualMethod`` subclass with an ``options`` tuple naming the ``ContinualConfig``
fields it reads; ``ContinualConfig`` rejects a field set away from its default that the method ignores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sparsecl.continual.base import ContinualMethod, MethodContext
from sparsecl.registry import Registry

if TYPE_CHECKING:
    from sparsecl.continual.config import ContinualConfig

CL_METHODS: Registry[type[ContinualMethod]] = Registry("continual method")


def create_method(
    name: str, model: torch.nn.Module, cfg: "ContinualConfig", ctx: MethodContext
) -> ContinualMethod:
    """Build continual method ``name`` (unknown names raise, listing the valid ones). A method whose
    tasks must bring new classes (``needs_new_classes``) refuses a domain-incremental stream."""
    cls = CL_METHODS.get(name)
    if cls.needs_new_classes and ctx.stream.scenario == "domain-il":
        raise ValueError(f"method {name} needs a class- or task-incremental stream (stream=class-il or task-il): "
                         "each of its tasks must bring new classes")
    return cls(model, cfg, ctx)


# registration (after CL_METHODS exists: each module registers into it)
from sparsecl.continual.methods import (  # noqa: E402,F401
    agem, der, derpp, er, er_ace, ewc, icarl, joint, lwf_mc, sgd, si, xder,
)
