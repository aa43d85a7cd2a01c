"""SGD: plain fine-tuning on each task in turn, the lower bound of every continual-learning table."""

from __future__ import annotations

from sparsecl.continual.base import ContinualMethod
from sparsecl.continual.methods import CL_METHODS
from sparsecl.data.batch import Batch
from sparsecl.contract import StepOutput


@CL_METHODS.register("sgd")
class SGD(ContinualMethod):
    """Fine-tuning (mammoth's ``sgd``): loss = CE(f(x), y) on the current batch only; no memory."""

    options: tuple[str, ...] = ("masked_head",)

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.x)
        return StepOutput(self.current_loss(logits, batch, self.cfg.masked_head), logits, len(batch))
