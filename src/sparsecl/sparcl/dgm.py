"""Dynamic Gradient Masking (SparCL, Wang et al. NeurIPS 2022, Sec. 3.3): gradient sparsity.

Continual gradient importance CGI = alpha_g |dL~(D_t)/dw| + beta_g |dL(M)/dw| (current-task and buffer
gradients, see ``gradsplit``). Per sparse layer only the entries in the top (1 - g) fraction of the
layer's entries by CGI keep their gradient; the fraction is counted over ALL entries, masked weights
included, as in the release (g = 0.80 at 75 % sparsity): the release ranks gradients that are already
masked, so inactive weights score 0 and the kept entries are the top (1 - g) N among the ACTIVE ones
(about 20 % of the active gradients dropped at g = 0.8, s = 0.75). Here the dense gradient is still
unmasked when DGM runs, so only the active entries are ranked, to the same effect (and O(active) instead
of a top-k over the whole layer: 0.05 vs 2.5 ms per layer of the SparCL MLP at 95 %). The gradient
mask is recomputed every ``interval`` iterations (release: 30) and reused in between, and at once after
any change of the weight masks (TDM's updates: a newly grown weight would otherwise get no gradient until
the next scheduled refresh; the release refreshes after every mask update); dense layers keep dense
gradients.

Deviation: the release scores with the merged gradient of the total loss (alpha_g = beta_g on one
term). Here the paper's two-term form is used when the method reports the split (``StepOutput.parts``),
at the cost of one extra backward on refresh steps only; without a buffer term both forms agree.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.data.batch import Batch
from sparsecl.sparcl.gradsplit import GradientSplit, has_buffer_part
from sparsecl.contract import Component, LoopState, StepOutput


def topk_mask(score: torch.Tensor, keep: int, among: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of the ``keep`` largest entries of ``score`` (ties as torch.topk breaks them); with
    ``among`` (flat indices) only those entries are ranked and at most all of them kept."""
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    flat = score.reshape(-1)
    if among is not None:
        keep = min(keep, among.numel())
        if keep > 0:
            mask[among[torch.topk(flat[among], keep, sorted=False).indices]] = True
    elif keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(score)


class DynamicGradientMasking(Component):
    def __init__(self, params: dict[str, torch.nn.Parameter], ratio: float, interval: int,
                 alpha: float, beta: float, engine: Any = None, split: GradientSplit | None = None) -> None:
        self.params = params
        # the current-task gradient, shared with TDM when both run (one extra backward per step)
        self.split = split if split is not None else GradientSplit({})
        self.split.register(params)
        self.ratio, self.interval, self.alpha, self.beta = ratio, interval, alpha, beta
        self.engine = engine  # the mask engine (weight masks), or None for a dense model
        self.masks: dict[str, torch.Tensor] = {}
        self._gcur: list[torch.Tensor] | None = None
        self._densities: dict[str, float] = {}
        self._key: tuple[int, int] | None = None  # (refreshes, engine.mask_version) the densities belong to
        self.refreshes = 0
        self.since = 0  # iterations since the last refresh
        self.scored_under: int | None = None  # the engine's mask_version the gradient masks were scored under
        self.refreshed = False  # this step rescored (it computed the whole active gradient)
        self._active: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (weight mask, its flat nonzeros)
        self._dropped_at: dict[str, tuple[tuple[int, int], torch.Tensor]] = {}  # name -> (key, flat indices)

    @classmethod
    def from_config(cls, cfg: Any, params: dict[str, torch.nn.Parameter], engine: Any = None,
                    split: GradientSplit | None = None) -> "DynamicGradientMasking":
        """From ``SparclConfig``'s ``dgm_*`` fields (``dgm_ratio`` must be set: ``TrainConfig`` derives it)."""
        if cfg.dgm_ratio is None:
            raise ValueError("sparcl.dgm_ratio is unset: give it (the run's config derives 1 - 0.8 x density)")
        return cls(params, cfg.dgm_ratio, cfg.dgm_interval, cfg.dgm_alpha_g, cfg.dgm_beta_g, engine=engine,
                   split=split)

    def refresh_due(self) -> bool:
        return not self.masks or self.since >= self.interval or self.scored_under != self._mask_version()

    def _mask_version(self) -> int:
        return getattr(self.engine, "mask_version", 0)

    def before_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        if self.refresh_due() and has_buffer_part(out):
            self._gcur = self.split.current(out, list(self.params))

    def after_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        self.refreshed = self.refresh_due()
        if self.refreshed:
            self._refresh()
        self.since += 1
        for name, p in self.params.items():
            if p.grad is None:
                continue
            if self.engine is None:
                p.grad.mul_(self.masks[name])
            else:  # zero the dropped ACTIVE entries; the engine's weight mask zeroes the inactive ones
                p.grad.view(-1).index_fill_(0, self._dropped(name), 0.0)

    def _dropped(self, name: str) -> torch.Tensor:
        """Flat indices of the active weights whose gradient the gradient mask drops (O(active) per change
        of either mask; the fill then touches only those entries, not the whole dense gradient)."""
        key = (self.refreshes, self._mask_version())
        hit = self._dropped_at.get(name)
        if hit is None or hit[0] != key:
            active = self._active_index(name, self.engine.masks[name])
            hit = (key, active[self.masks[name].reshape(-1)[active] == 0])
            self._dropped_at[name] = hit
        return hit[1]

    def _applied(self, name: str) -> torch.Tensor:
        """The gradient mask times the weight mask of a sparse layer: the entries whose gradient is kept."""
        weights = self.engine.masks if self.engine is not None else {}
        return self.masks[name] * weights[name] if name in weights else self.masks[name]

    def _refresh(self) -> None:
        weights = self.engine.masks if self.engine is not None else {}
        for i, (name, p) in enumerate(self.params.items()):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if self._gcur is not None:
                gc = self._gcur[i]
                score = self.alpha * gc.abs() + self.beta * (g - gc).abs()
            else:
                score = (self.alpha + self.beta) * g.abs()
            keep = int(round((1.0 - self.ratio) * p.numel()))
            among = None
            if name in weights:
                # inactive weights have no gradient to keep (the release ranks masked gradients: they
                # score 0). Rank the active entries with a positive score: when fewer than ``keep`` score
                # above 0, the release fills the top-k with zero-score entries, which are inactive ones
                # but for a few (95 % of the layer at 95 % sparsity), so it keeps no zero-score gradient.
                active = self._active_index(name, weights[name])
                among = active[score.reshape(-1)[active] > 0]
            self.masks[name] = topk_mask(score, keep, among).to(p.dtype)
        self._gcur = None
        self.since = 0
        self.refreshes += 1
        self.scored_under = self._mask_version()

    def _active_index(self, name: str, mask: torch.Tensor) -> torch.Tensor:
        """Flat indices of the active weights, cached per mask tensor (the engine replaces it on change)."""
        cached = self._active.get(name)
        if cached is None or cached[0] is not mask:
            cached = (mask, mask.reshape(-1).nonzero().squeeze(1))
            self._active[name] = cached
        return cached[1]

    def step_grad_densities(self) -> dict[str, float] | None:
        """The weight-gradient densities this step is charged at (FLOPs): None (the weight densities) on a
        refresh step, whose scores need the whole active gradient; else ``grad_densities()``."""
        return None if self.refreshed else self.grad_densities()

    def grad_densities(self) -> dict[str, float]:
        """Weight-gradient density per layer: entries with an active weight AND a kept gradient
        (recomputed only when the gradient masks or the weight masks changed)."""
        key = (self.refreshes, self._mask_version())
        if key != self._key:
            self._densities = {name: float(self._applied(name).sum()) / m.numel() for name, m in self.masks.items()}
            self._key = key
        return self._densities

    def on_task_start(self, state: LoopState, task: Any) -> None:
        self.masks = {}  # a new task's gradients differ: score afresh on its first step
        self.refreshes += 1

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks), "since": self.since, "refreshes": self.refreshes,
                "scored_under": self.scored_under}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.masks = {k: v.to(self.params[k].device) for k, v in sd["masks"].items()}
        self.since, self.refreshes = sd["since"], sd["refreshes"]
        self.scored_under = sd.get("scored_under", self._mask_version())  # older checkpoints: as loaded
        self._key = None
        self._dropped_at = {}
