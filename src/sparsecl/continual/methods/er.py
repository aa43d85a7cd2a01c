"""ER: experience replay (Chaudhry et al., 2019, "On Tiny Episodic Memories in Continual Learning";
Riemer et al., ICLR 2019), in mammoth's form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.data.batch import Batch
from sparsecl.contract import StepOutput


@CL_METHODS.register("er")
class ER(RehearsalMethod):
    """One forward on [x ; x'] (current batch, one replay draw), mean CE over the b + m examples.

    The mean is written as (b * CE_cur + m * CE_replay) / (b + m), which equals CE over the concatenation
    and lets ``masked_head`` mask the current part only. One joint forward (not two) matters with
    BatchNorm, whose batch statistics then span both parts, as in mammoth.
    """

    def compute_loss(self, batch: Batch) -> StepOutput:
        b = len(batch)
        if not self.replays(batch):
            logits = self.model(batch.x)
            return StepOutput(self.current_loss(logits, batch, self.cfg.masked_head), logits, b)
        rep = self.replay(self.replay_size(batch))
        m = rep.y.shape[0]
        out = self.model(torch.cat([batch.x, rep.x]))
        logits = out[:b]
        cur = b / (b + m) * self.current_loss(logits, batch, self.cfg.masked_head)
        replay = m / (b + m) * F.cross_entropy(out[b:], rep.y)
        return StepOutput(cur + replay, logits, b + m, parts={"current": cur, "buffer": replay})
