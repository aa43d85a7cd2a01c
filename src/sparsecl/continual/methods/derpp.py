"""DER++ (Buzzega et al., NeurIPS 2020, arXiv 2004.07211), in mammoth's form; SparCL's host method."""

from __future__ import annotations

import torch.nn.functional as F

from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.data.batch import Batch
from sparsecl.train.hooks import StepOutput


@CL_METHODS.register("derpp")
class DERpp(RehearsalMethod):
    """loss = CE(f(x), y) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y'').

    (x', z') and (x'', y'') are two independent draws from the buffer, each forwarded on its own (as in
    mammoth); replay starts as soon as the buffer holds anything. Logits are stored online at every step
    from the augmented view (``out.logits.detach()``).
    """

    store_logits = True
    options = RehearsalMethod.options + ("alpha", "beta")

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.x)
        cur, n = self.current_loss(logits, batch, self.cfg.masked_head), len(batch)
        if self.buffer.empty:
            return StepOutput(cur, logits, n)
        m = self.replay_size(batch)
        r1 = self.replay(m)
        replay = self.cfg.alpha * F.mse_loss(self.model(r1.x), r1.logits)
        r2 = self.replay(m)
        replay = replay + self.cfg.beta * F.cross_entropy(self.model(r2.x), r2.y)
        n += r1.y.shape[0] + r2.y.shape[0]
        return StepOutput(cur + replay, logits, n, parts={"current": cur, "buffer": replay})
