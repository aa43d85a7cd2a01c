"""The base class every sparse-training method overrides, and the method registry.

A method is a small object the ``MaskEngine`` consults; it never touches the training loop. Override
points, each with a working default (the default is the "static" method: a random mask, never updated):

* ``initial_scores(loss_closure)``: scores that pick the initial mask (None: exact-count random);
* ``initial_counts(scores)``: active weights per layer at the start (default: the distribution's);
* ``is_update(t)`` / ``update(t)``: whether step t updates masks, and the new masks (layer index -> mask);
* ``needs_dense_grad(t)`` / ``observe_grads(t)``: read the dense weight gradients of step t before the
  engine masks them (RigL on update steps, SNFS every step);
* ``observe_weights(t)``: look at the weights once step t is complete (t = 0: after ``begin``);
* class flags: ``uses_masks`` (False: dense training), ``scored`` (masks come from scores, so the
  ``global`` distribution applies), ``supports_nm``, ``skip_step_on_update`` (RigL skips the optimizer
  step on update steps, as its reference code does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from sparsecl.registry import Registry

if TYPE_CHECKING:
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.engine import MaskEngine

LossClosure = Callable[[], torch.Tensor]
SPARSE_METHODS: Registry[type["SparseMethod"]] = Registry("sparse method")


class SparseMethod:
    """Static sparse training ("scratch" in RigL's tables): a random exact-count mask drawn per layer from
    the distribution at ``begin`` and never changed."""

    uses_masks: ClassVar[bool] = True
    scored: ClassVar[bool] = False
    supports_nm: ClassVar[bool] = True
    skip_step_on_update: ClassVar[bool] = False

    def __init__(self, engine: "MaskEngine") -> None:
        self.engine = engine
        self.cfg = engine.cfg

    @classmethod
    def validate(cls, cfg: "SparsityConfig") -> None:
        """Method-specific config checks (ValueError, one line)."""

    @property
    def train_multiplier(self) -> int:
        """How many times the loop runs the nominal training (LTH: once per round)."""
        return self.rounds(self.cfg)

    @classmethod
    def rounds(cls, cfg: "SparsityConfig") -> int:
        """``train_multiplier`` known from the config alone, before an engine exists (the loop plans with it)."""
        return 1

    # -- initial masks ---------------------------------------------------------------------------------
    def initial_scores(self, loss_closure: LossClosure | None) -> list[torch.Tensor] | None:
        return None

    def initial_counts(self, scores: list[torch.Tensor] | None) -> list[int]:
        return self.engine.counts_for(scores=scores)

    def initial_masks(self, loss_closure: LossClosure | None) -> list[torch.Tensor]:
        scores = self.initial_scores(loss_closure)
        out = []
        for i, (layer, count) in enumerate(zip(self.engine.layers, self.initial_counts(scores), strict=True)):
            gen = self.engine.generator_for(layer.param.device)
            if scores is None:
                out.append(self.engine.pattern.random(layer.param, count, gen))
            else:
                out.append(self.engine.pattern.select(scores[i], count, gen))
        return out

    # -- every step ------------------------------------------------------------------------------------
    def is_update(self, t: int) -> bool:
        return False

    def needs_dense_grad(self, t: int) -> bool:
        return False

    def observe_grads(self, t: int) -> None:
        """Called before the engine masks the gradients of step t, when ``needs_dense_grad(t)``."""

    def update(self, t: int) -> dict[int, torch.Tensor]:
        """New masks (layer index -> bool mask) for an update step, after the optimizer step (or its skip)."""
        return {}

    def observe_weights(self, t: int) -> None:
        """Called once the weights of step t are final (masks applied); t = 0 right after ``begin``."""

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass


def magnitudes(engine: "MaskEngine", active_only: bool = False) -> list[torch.Tensor]:
    """|w| of every sparse layer; with ``active_only`` inactive entries score -inf (never kept)."""
    out = []
    for layer in engine.layers:
        score = layer.param.detach().abs()
        out.append(score.masked_fill(~layer.mask, -torch.inf) if active_only else score)
    return out
