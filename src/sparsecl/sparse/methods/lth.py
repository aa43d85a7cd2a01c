"""Lottery tickets by iterative magnitude pruning (Frankle & Carbin, ICLR 2019, "The Lottery Ticket
Hypothesis"; rewinding to step k: Frankle et al., 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis").

With R = ``lth_rounds`` the run is R + 1 trainings of the nominal length L = total_steps // (R + 1)
(``train_multiplier`` = R + 1; the loop repeats its schedule that often): train dense; then at the end of
training r (t = r L, r = 1..R) prune to density d_l^(r/R) per layer (each round removes
p = 1 - d^(1/R) of the remaining weights; ``distribution=global``: overall density d^(r/R) by one
ranking across layers), rewind EVERY parameter to its value after step ``lth_rewind_step`` (0: the
initialisation), re-apply the masks and reset the optimizer state. Training R + 1 runs at the target.

Deviation: with k > 0 the paper resumes each round at step k; here every round trains the full nominal
length L from the rewound weights (the loop restarts its lr schedule each repetition). Buffers such as
BatchNorm running statistics are not rewound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sparsecl.sparse.methods.base import SPARSE_METHODS, LossClosure, SparseMethod, magnitudes

if TYPE_CHECKING:
    from sparsecl.sparse.engine import MaskEngine
    from sparsecl.sparse.config import SparsityConfig


@SPARSE_METHODS.register("lth")
class LTH(SparseMethod):
    scored = True
    supports_nm = False

    def __init__(self, engine: "MaskEngine") -> None:
        super().__init__(engine)
        self.n_rounds = self.cfg.lth_rounds
        self.round_len = engine.total_steps // (self.n_rounds + 1)
        if not 0 <= self.cfg.lth_rewind_step < self.round_len:
            raise ValueError(f"lth needs lth_rewind_step ({self.cfg.lth_rewind_step}) below the round length "
                             f"{self.round_len} = total_steps {engine.total_steps} // (lth_rounds + 1)")
        self._snapshot: dict[str, torch.Tensor] | None = None

    @classmethod
    def rounds(cls, cfg: SparsityConfig) -> int:
        return cfg.lth_rounds + 1

    def initial_masks(self, loss_closure: LossClosure | None) -> list[torch.Tensor]:
        return [torch.ones_like(layer.param, dtype=torch.bool) for layer in self.engine.layers]

    def observe_weights(self, t: int) -> None:
        if t == self.cfg.lth_rewind_step:
            self._snapshot = {n: p.detach().clone() for n, p in self.engine.model.named_parameters()}

    def is_update(self, t: int) -> bool:
        return t % self.round_len == 0 and 1 <= t // self.round_len <= self.n_rounds

    def update(self, t: int) -> dict[int, torch.Tensor]:
        r = t // self.round_len
        scores = magnitudes(self.engine, active_only=True)
        counts = self.engine.counts_for(lambda d: d ** (r / self.n_rounds), scores)
        new = {}
        for i, (layer, count) in enumerate(zip(self.engine.layers, counts, strict=True)):
            gen = self.engine.generator_for(layer.param.device)
            new[i] = self.engine.pattern.select(scores[i], min(count, layer.count), gen)
        self._rewind(new)
        return new

    def _rewind(self, new: dict[int, torch.Tensor]) -> None:
        """Weights back to the snapshot (masked by the new masks); optimizer state cleared."""
        if self._snapshot is None:
            raise RuntimeError("lth has no rewind snapshot: engine.begin() was not called before training")
        with torch.no_grad():
            for name, p in self.engine.model.named_parameters():
                p.copy_(self._snapshot[name])
            for i, mask in new.items():
                self.engine.layers[i].param.mul_(mask)
        self.engine.optimizer.state.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"snapshot": None if self._snapshot is None else {n: v.clone() for n, v in self._snapshot.items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        snap = sd["snapshot"]
        params = dict(self.engine.model.named_parameters())
        self._snapshot = None if snap is None else {n: v.to(params[n].device) for n, v in snap.items()}
