"""Rehearsal for your own loop: a buffer and the replay term of ER, DER or DER++, without sparsecl's loop.

    replay = DERppReplay(Buffer(200, (64,), 10, device="cpu", generator=g, store_logits=True,
                                dtype=torch.float32), alpha=0.3, beta=0.5, generator=g)
    logits = model(x)
    loss = F.cross_entropy(logits, y) + replay.loss(model, len(x))   # 0 while the buffer is empty
    loss.backward(); optimizer.step()
    replay.observe(x, y, logits)                                      # reservoir update of the buffer

The terms are the ones the registered methods (``continual/methods/er.py``, ``der.py``, ``derpp.py``) add to
the current-task loss, through the same functions (``der_term``, ``derpp_terms``). One difference, by
design: ER's method weights current and replayed examples by their counts in one joint mean,
(b CE_cur + m CE_replay) / (b + m); here the replay term is its own mean, added to your loss.
``transform`` (optional) maps stored inputs to what the model trains on at replay time (augmentation);
stored inputs are what you pass to ``observe``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sparsecl.continual.buffer import Buffer, BufferItems


def der_term(out: torch.Tensor, stored_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """DER's replay term: alpha * MSE(f(x'), z') (mean over the m x K entries, Buzzega et al. 2020)."""
    return alpha * F.mse_loss(out, stored_logits)


def derpp_terms(out1: torch.Tensor, stored_logits: torch.Tensor, out2: torch.Tensor, y2: torch.Tensor,
                alpha: float, beta: float) -> torch.Tensor:
    """DER++'s replay terms on two independent draws: alpha * MSE(f(x'), z') + beta * CE(f(x''), y'')."""
    return der_term(out1, stored_logits, alpha) + beta * F.cross_entropy(out2, y2)


class Replay:
    """A buffer plus the replay draws of one method; subclasses define ``loss``."""

    draws = 1

    def __init__(self, buffer: Buffer, generator: torch.Generator,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.buffer, self.generator, self.transform = buffer, generator, transform

    def draw(self, n: int) -> BufferItems:
        """min(n, held) examples without replacement; ``x`` through ``transform`` if one is set."""
        items = self.buffer.get(self.buffer.sample(n, self.generator))
        return items if self.transform is None else items._replace(x=self.transform(items.x))

    def loss(self, model: torch.nn.Module, n: int) -> torch.Tensor:
        raise NotImplementedError

    def observe(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None, task: int = 0) -> None:
        """Offer this step's examples to the buffer (logits are detached; stored only if the buffer keeps them)."""
        keep = logits.detach() if logits is not None and self.buffer.logits is not None else None
        self.buffer.add(x, y, keep, task=task)

    def _zero(self, model: torch.nn.Module) -> torch.Tensor:
        return next(model.parameters()).new_zeros(())

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.buffer.load_state_dict(sd["buffer"])
        self.generator.set_state(sd["generator"])


class ERReplay(Replay):
    """Experience replay (Chaudhry et al. 2019): CE on one draw of n buffered examples."""

    def loss(self, model: torch.nn.Module, n: int) -> torch.Tensor:
        if self.buffer.empty:
            return self._zero(model)
        r = self.draw(n)
        return F.cross_entropy(model(r.x), r.y)


class DERReplay(Replay):
    """Dark Experience Replay (Buzzega et al., NeurIPS 2020): the buffer must store logits."""

    def __init__(self, buffer: Buffer, alpha: float, generator: torch.Generator,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if buffer.logits is None:
            raise ValueError("DER replay needs a buffer built with store_logits=True")
        super().__init__(buffer, generator, transform)
        self.alpha = alpha

    def loss(self, model: torch.nn.Module, n: int) -> torch.Tensor:
        if self.buffer.empty:
            return self._zero(model)
        r = self.draw(n)
        return der_term(model(r.x), r.logits, self.alpha)


class DERppReplay(DERReplay):
    """DER++ (Buzzega et al., NeurIPS 2020): two independent draws, logit MSE plus label CE."""

    draws = 2

    def __init__(self, buffer: Buffer, alpha: float, beta: float, generator: torch.Generator,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__(buffer, alpha, generator, transform)
        self.beta = beta

    def loss(self, model: torch.nn.Module, n: int) -> torch.Tensor:
        if self.buffer.empty:
            return self._zero(model)
        r1, r2 = self.draw(n), self.draw(n)
        out1, out2 = model(torch.cat([r1.x, r2.x])).split([r1.y.shape[0], r2.y.shape[0]])
        return derpp_terms(out1, r1.logits, out2, r2.y, self.alpha, self.beta)
