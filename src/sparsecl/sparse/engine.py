"""The mask engine: wraps an optimizer, owns the masks and everything that decides their future.

Used like an optimizer (the training loop stays intact)::

    engine = MaskEngine(model, optimizer, cfg, total_steps=N, generator=torch.Generator().manual_seed(s))
    engine.begin(loss_closure)           # initial masks; inactive weights zeroed
    for batch in data:
        optimizer.zero_grad(set_to_none=True); loss(batch).backward()
        engine.step()                    # replaces optimizer.step()

One ``step()`` (t = 1-based step index, see ``schedule``):
1. if the method needs the dense weight gradient at t (RigL update windows, SNFS), it reads it now;
2. gradients of inactive weights are zeroed (``grad *= mask``), so momentum and Adam moments of inactive
   weights never move (1-2 are ``mask_grads()``, which a loop calls earlier when it reads the gradients
   before the step, e.g. to clip their norm);
3. the optimizer steps (skipped on RigL update steps);
4. weights are re-masked (``w *= mask``) after optimizers that could move a weight with zero gradient and
   zero state. torch's SGD (momentum, Nesterov, weight decay), Adam and AdamW (decoupled decay) map an
   exact 0 with zero gradient and zero state to an exact 0, so after exactly those classes the re-mask is
   skipped (a multi-tensor multiply per step saved); any other optimizer, subclasses included, is re-masked;
5. on a scheduled step the method returns new masks; weights and optimizer state (momentum_buffer,
   exp_avg, exp_avg_sq, ... every state tensor shaped like the weight) are zeroed at every position whose
   mask changed: newly inactive weights are 0, newly grown weights start at 0 with zero state. A weight
   dropped and regrown in the same update never changed, so it keeps its value and state.

Per step the work is one or two fused multi-tensor multiplies over precomputed float masks and no host sync;
masks change only on update steps (top-k/sort on flattened tensors). Non-finite values are out of scope
(0 * inf is NaN): the loop's NumericalFault check stops such runs first.

Randomness comes only from ``generator`` (for tensors on another device a device generator is seeded
from it per use), so the same seed on every DDP rank gives identical masks. ``state_dict()`` holds the
masks, step counter, generator state and the method's state (accumulated gradients, momentum, LTH
snapshot): restoring it together with the model and optimizer resumes bit-identically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.distributions import DISTRIBUTIONS, SCORED_DISTRIBUTIONS, refuse_empty_layers
from sparsecl.sparse.filters import LayerSpec, select_layers
from sparsecl.sparse.masks import count_for_density
from sparsecl.sparse.methods import SPARSE_METHODS, LossClosure
from sparsecl.sparse.patterns import MASK_PATTERNS


# Optimizers (exact classes) under which a weight that is 0, with zero gradient and zero state, stays 0.
ZERO_PRESERVING_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


@dataclass
class StepInfo:
    """What the last ``engine.step()`` did. ``step`` is its 1-based index (0: no step yet)."""

    step: int = 0
    updated: bool = False  # some mask changed
    dense_weight_grad: bool = False  # the step needed the dense weight gradient
    optimizer_skipped: bool = False


@dataclass(eq=False)
class SparseLayer:
    """A sparse layer's weight, its mask, the mask's active count and a float copy for in-place masking."""

    spec: LayerSpec
    param: nn.Parameter
    mask: torch.Tensor
    count: int
    fmask: torch.Tensor

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def numel(self) -> int:
        return self.spec.numel


class MaskEngine:
    """Masks + schedule + method state around one optimizer (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: SparsityConfig,
                 total_steps: int, generator: torch.Generator | None = None) -> None:
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.total_steps = int(total_steps)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.pattern = MASK_PATTERNS.get(cfg.pattern).from_config(cfg)
        method_cls = SPARSE_METHODS.get(cfg.method)
        specs = select_layers(model, cfg.layers, cfg.dense_first, cfg.dense_last) if method_cls.uses_masks else []
        params = dict(model.named_parameters())
        self.layers = [self._layer(s, params[s.name]) for s in specs]
        self._index = {layer.name: i for i, layer in enumerate(self.layers)}
        self._final_counts: list[int] | None = None
        self.method = method_cls(self)
        self.step_count = 0
        self.mask_version = 0  # bumped whenever a mask changes (consumers cache densities on it)
        self.mask_changes: dict[str, tuple[int, int]] = {}  # name -> (dropped, grown) since pop_mask_changes()
        self._remask_weights = type(optimizer) not in ZERO_PRESERVING_OPTIMIZERS
        self.last_step = StepInfo()
        self._begun = False
        self._grads_masked_for = 0  # the step whose gradients mask_grads() has prepared (0: none)
        self._premasked: tuple[int, set[int]] = (0, set())  # (step, ids of weights whose gradients are masked)
        self.lr_factors: dict[str, float] = {}  # sparse layer -> its lr factor (``sparsity.lr_scaling``)
        self._refresh()

    def _layer(self, spec: LayerSpec, param: nn.Parameter) -> SparseLayer:
        self.pattern.check(spec)
        ones = torch.ones_like(param, dtype=torch.bool)
        return SparseLayer(spec, param, ones, spec.numel, torch.ones_like(param))

    # -- the public surface -----------------------------------------------------------------------------
    @property
    def train_multiplier(self) -> int:
        return self.method.train_multiplier

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Parameter name -> bool mask of every sparse layer (read-only: change masks with ``set_mask``)."""
        return {layer.name: layer.mask for layer in self.layers}

    def begin(self, loss_closure: LossClosure | None = None) -> None:
        """Create the initial masks and zero inactive weights. A no-op once begun (or after
        ``load_state_dict``), so resume code may call it unconditionally."""
        if self._begun:
            return
        if self.layers:
            dense = [layer.param.detach().clone() for layer in self.layers] if self.cfg.init == "rescale" else None
            self._install(dict(enumerate(self.method.initial_masks(loss_closure))))
            if dense is not None:
                self._rescale_survivors(dense)
            self.lr_factors = self._scale_learning_rates()
        self.method.observe_weights(0)
        self._begun = True

    def step(self) -> StepInfo:
        """Replaces ``optimizer.step()`` (see the module docstring for what one step does)."""
        t = self.step_count + 1
        if self.layers:
            info = self._sparse_step(t)  # its mask_grads() refuses a step before begin()
        else:
            self.optimizer.step()
            info = StepInfo(t)
        self.step_count, self.last_step = t, info
        return info

    def mask_grads(self) -> None:
        """Steps 1-2 of the coming ``step()``: the method reads the dense gradient if it needs it now, then
        the gradients of inactive weights are zeroed. Once per step: ``step()`` calls it, and whatever reads
        the gradients the optimizer will apply before that (gradient clipping in the loop) calls it first,
        so a clipping norm never counts gradients that are masked away."""
        t = self.step_count + 1
        if not self.layers or self._grads_masked_for == t:
            return
        if not self._begun:
            raise RuntimeError("call engine.begin(loss_closure) before the first engine.step()")
        if self.method.needs_dense_grad(t):
            self.method.observe_grads(t)
        skip = self._premasked[1] if self._premasked[0] == t else ()
        grads = [(layer.param.grad, layer.fmask) for layer in self._masked
                 if layer.param.grad is not None and id(layer.param) not in skip]
        if grads:
            torch._foreach_mul_([g for g, _ in grads], [m for _, m in grads])
        self._grads_masked_for = t

    def premasked(self, params: list[torch.Tensor]) -> None:
        """Tell the coming step that these weights' gradients are already zero outside their weight masks
        (a CSR backward writes them at the active positions only), so step 2 skips them. Valid for the
        coming step only; several calls before it add up."""
        t = self.step_count + 1
        before = self._premasked[1] if self._premasked[0] == t else set()
        self._premasked = (t, before | {id(p) for p in params})

    def needs_dense_grad(self) -> bool:
        """Whether the NEXT step reads the dense weight gradient (a sparse backward could skip it otherwise)."""
        return bool(self.layers) and self.method.needs_dense_grad(self.step_count + 1)

    def set_mask(self, name: str, mask: torch.Tensor) -> None:
        """Replace one layer's mask: newly active weights start at 0 with zero optimizer state, newly
        inactive weights are zeroed (with their state)."""
        if name not in self._index:
            raise ValueError(f"{name!r} is not a sparse layer; valid: {', '.join(self._index) or '(none)'}")
        layer = self.layers[self._index[name]]
        if tuple(mask.shape) != tuple(layer.param.shape):
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(layer.param.shape)}")
        self._install({self._index[name]: mask.to(device=layer.param.device, dtype=torch.bool, copy=True)})

    def densities(self) -> dict[str, Any]:
        """Active fraction over the sparse layers ("overall") and per layer (no host sync)."""
        total = sum(layer.numel for layer in self.layers)
        overall = sum(layer.count for layer in self.layers) / total if total else 1.0
        return {"overall": overall, "layers": {layer.name: layer.count / layer.numel for layer in self.layers}}

    def model_density(self) -> float:
        """Active fraction over ALL parameters (dense ones count fully)."""
        sparse = {id(layer.param): layer.count for layer in self.layers}
        params = list(self.model.parameters())
        total = sum(p.numel() for p in params)
        active = sum(sparse.get(id(p), p.numel()) for p in params)
        return active / total if total else 1.0

    # -- helpers for methods -------------------------------------------------------------------------
    @property
    def specs(self) -> list[LayerSpec]:
        return [layer.spec for layer in self.layers]

    def counts_for(self, density_of: Callable[[float], float] | None = None,
                   scores: list[torch.Tensor] | None = None) -> list[int]:
        """Active counts per layer when every layer's final density d_l (from the distribution at
        ``cfg.density``) becomes ``density_of(d_l)`` (None: d_l itself). Under a scored distribution
        (``global``) ``density_of`` maps the overall density and ``scores`` rank the weights."""
        cfg = self.cfg
        if cfg.distribution in SCORED_DISTRIBUTIONS:
            density = cfg.density if density_of is None else density_of(cfg.density)
            return DISTRIBUTIONS.get(cfg.distribution)(self.specs, density, scores=scores)
        if self._final_counts is None:
            self._final_counts = DISTRIBUTIONS.get(cfg.distribution)(self.specs, cfg.density,
                                                                     custom=cfg.custom_densities)
            refuse_empty_layers(self.specs, self._final_counts, cfg)
        if density_of is None:
            return list(self._final_counts)
        return [count_for_density(s.numel, density_of(c / s.numel)) for s, c in zip(self.specs, self._final_counts)]

    def generator_for(self, device: torch.device) -> torch.Generator:
        """The engine's generator, or for another device a generator seeded from it (reproducible)."""
        if torch.device(device) == self.generator.device:
            return self.generator
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return torch.Generator(device=device).manual_seed(seed)

    # -- internals -------------------------------------------------------------------------------------
    def _sparse_step(self, t: int) -> StepInfo:
        self.mask_grads()
        method = self.method
        update = method.is_update(t)
        dense = method.needs_dense_grad(t)
        skipped = update and method.skip_step_on_update
        if not skipped:
            self.optimizer.step()
        if self._masked and self._remask_weights:
            with torch.no_grad():
                torch._foreach_mul_([layer.param for layer in self._masked], [layer.fmask for layer in self._masked])
        changed = self._install(method.update(t)) if update else False
        method.observe_weights(t)
        return StepInfo(t, changed, dense, skipped)

    def _install(self, new: dict[int, torch.Tensor]) -> bool:
        """Put new masks in place; True if any position changed (one host sync, update steps only).
        The dropped and grown counts per layer add up in ``mask_changes`` until ``pop_mask_changes()``."""
        moved = []
        for i, mask in new.items():
            layer = self.layers[i]
            diff = layer.mask ^ mask
            with torch.no_grad():
                layer.param.masked_fill_(diff, 0)
                for state in self.optimizer.state.get(layer.param, {}).values():
                    if torch.is_tensor(state) and state.shape == layer.param.shape:
                        state.masked_fill_(diff, 0)
            moved.append(torch.stack([(diff & layer.mask).sum(), (diff & mask).sum()]))  # dropped, grown
            layer.mask, layer.count = mask, int(mask.sum())
            layer.fmask = mask.to(layer.param.dtype)
        counts = torch.stack(moved).tolist() if moved else []
        for i, (dropped, grown) in zip(new, counts):
            if dropped or grown:
                old = self.mask_changes.get(self.layers[i].name, (0, 0))
                self.mask_changes[self.layers[i].name] = (old[0] + dropped, old[1] + grown)
        changed = any(d or g for d, g in counts)
        if changed:
            self.mask_version += 1
            self._refresh()
        return changed

    def pop_mask_changes(self) -> dict[str, tuple[int, int]]:
        """Layer name -> (dropped, grown) positions since the last call (layers that changed only)."""
        out, self.mask_changes = self.mask_changes, {}
        return out

    def _rescale_survivors(self, dense: list[torch.Tensor]) -> None:
        """``init=rescale``: per output unit r (row of the [out, fan-in] weight), multiply the surviving
        weights by sqrt(sum_all w_r^2 / sum_active w_r^2), so that each unit's pre-activation variance at
        initialisation is the dense network's instead of about ``density`` times it. The signal-propagation
        argument of Lee et al. (ICLR 2020, arXiv:1906.06307) and the sparsity-aware initialisation of
        Evci et al. (AAAI 2022, arXiv:2010.03533), who re-draw the survivors with the fan-in of the sparse
        unit; here they are rescaled instead, which keeps the magnitude ranking a magnitude-pruned
        initial mask was chosen by. A unit with no surviving weight stays at 0."""
        with torch.no_grad():
            for layer, w0 in zip(self.layers, dense):
                sq = w0.flatten(1).pow(2)
                kept = (sq * layer.fmask.flatten(1)).sum(1)
                ratio = torch.where(kept > 0, (sq.sum(1) / kept.clamp_min(torch.finfo(sq.dtype).tiny)).sqrt(), 0.0)
                layer.param.mul_(ratio.view(-1, *[1] * (layer.param.dim() - 1)))

    def _scale_learning_rates(self) -> dict[str, float]:
        """``lr_scaling``: multiply the learning rate of each sparse layer's param group by
        ``clamp(d^-p, 1, max(1, lr_max * (1 - m) / lr))``, d the layer's density after the initial mask,
        p = 1/2 (``sqrt``) or 1 (``inverse``), lr and m the group's learning rate and SGD momentum (0 for
        Adam/AdamW, whose steps are lr-sized); ``none`` leaves every lr as it is (the RigL paper's setting,
        Evci et al., ICML 2020).

        Why: a unit with fan-in n keeps d*n inputs. One SGD step changes its pre-activation by
        dz = lr * delta * sum_active x_j^2, about d times the dense unit's change, so a sparse layer learns
        about d times slower per step (the poor gradient flow of sparse networks, Evci et al., AAAI 2022,
        "Gradient Flow in Sparse Neural Networks and How Lottery Tickets Win", arXiv:2010.03533; RigL
        compensates by training 100+ epochs with momentum 0.9). 1/d restores the dense unit's dz (the fan-in
        argument); 1/sqrt(d) restores only the RELATIVE weight change |dw|/|w| once ``init=rescale`` has made
        the survivors 1/sqrt(d) larger. The cap is on the layer's EFFECTIVE step lr / (1 - m), not on the
        factor: the compensation is for small steps, and must not carry a layer past the steps dense
        training is stable at. Measured (benchmarks/RESULTS.md, issue 21; digits, MLP, RigL-ERK 90 %, batch
        32, 5 epochs, 3 seeds): at the default lr 0.03 without momentum 1/d up to 8 (lr_max 0.24) ends 0.5
        points under dense, 1/d up to 4 2.8, 1/sqrt(d) 4.1, no scaling far more; at lr 0.1 + momentum 0.9
        (the RigL paper's) a factor of up to 6 lost 10 points and 10 collapsed to 42 %, so there the cap
        leaves 1; at lr 0.1 without momentum the cap of 2.4 gains 2.4 points over none. Any factor > 1
        diverged under a stiff online-EWC penalty (the step lr * lambda * F must stay below 1): ``auto`` is
        1/d, and none under ewc_on/si (TrainConfig resolves it). Deviation: neither paper scales learning
        rates; this is this library's default for short runs, not a paper's setting; set
        ``lr_scaling=none`` (with ``init=dense``) for the RigL paper's. Dense-to-sparse methods (gmp, lth)
        start at d = 1 and keep factor 1. A MaskEngine built directly with ``auto`` scales nothing (its
        optimizer's groups are the caller's).

        Each sparse layer's weight must be the only parameter of its param group (``make_optimizer`` with
        ``own_groups``): otherwise a ValueError."""
        mode = self.cfg.lr_scaling
        if mode in ("none", "auto"):  # "auto" is resolved by the run's config (TrainConfig); alone: none
            return {}
        power = {"sqrt": 0.5, "inverse": 1.0}[mode]
        factors = {}
        for layer in self.layers:
            groups = [g for g in self.optimizer.param_groups if any(p is layer.param for p in g["params"])]
            if len(groups) != 1 or len(groups[0]["params"]) != 1:
                raise ValueError(f"sparsity.lr_scaling={mode} needs {layer.name} alone in its optimizer param "
                                 "group (build the optimizer with own_groups); or set sparsity.lr_scaling=none")
            g = groups[0]
            cap = max(1.0, self.cfg.lr_max * (1.0 - g.get("momentum", 0.0)) / g["lr"])
            factor = min(cap, (layer.numel / max(layer.count, 1)) ** power)
            g["lr"] *= factor
            g["lr_scale"] = factor
            factors[layer.name] = factor
        return factors

    def _refresh(self) -> None:
        self._masked = [layer for layer in self.layers if layer.count < layer.numel]

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.cfg.method,
            "total_steps": self.total_steps,
            "step": self.step_count,
            "begun": self._begun,
            "mask_version": self.mask_version,
            "last_step": asdict(self.last_step),
            "masks": {layer.name: layer.mask.clone() for layer in self.layers},
            "generator": self.generator.get_state(),
            "method_state": self.method.state_dict(),
            "lr_factors": dict(self.lr_factors),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore masks, counters, generator and method state. Weights and optimizer state are the
        model's and optimizer's own state dicts; this does not touch them."""
        if sd["method"] != self.cfg.method or sd["total_steps"] != self.total_steps:
            raise ValueError(f"engine state of method {sd['method']!r} over {sd['total_steps']} steps cannot load "
                             f"into {self.cfg.method!r} over {self.total_steps} steps")
        if set(sd["masks"]) != set(self._index):
            raise ValueError(f"engine state has layers {sorted(sd['masks'])}, this engine {sorted(self._index)}")
        for layer in self.layers:
            mask = sd["masks"][layer.name].to(device=layer.param.device, dtype=torch.bool)
            layer.mask, layer.count, layer.fmask = mask, int(mask.sum()), mask.to(layer.param.dtype)
        self._refresh()
        self.generator.set_state(sd["generator"])
        self.method.load_state_dict(sd["method_state"])
        self.step_count, self._begun, self.mask_version = sd["step"], sd["begun"], sd["mask_version"]
        self._grads_masked_for = 0
        self.last_step = StepInfo(**sd["last_step"])
        self.lr_factors = dict(sd.get("lr_factors", {}))  # the lrs themselves are in the optimizer's state
