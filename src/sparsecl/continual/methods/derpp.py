"""DER++ (Buzzega et al., NeurIPS 2020, arXiv 2004.07211), in mammoth's form; SparCL's host method."""

from __future__ import annotations

from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.continual.replay import derpp_terms
from sparsecl.data.batch import Batch
from sparsecl.contract import StepOutput


@CL_METHODS.register("derpp")
class DERpp(RehearsalMethod):
    """loss = CE(f(x), y) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y'').

    (x', z') and (x'', y'') are two independent draws from the buffer; with BatchNorm each batch is
    forwarded on its own (as in mammoth), otherwise all three in one forward (``forward_parts``: same
    logits, far less overhead on small batches); replay starts as soon as the buffer holds anything. Logits are stored online at every step
    from the augmented view (``out.logits.detach()``).
    """

    store_logits = True
    replay_draws = 2
    options = RehearsalMethod.options + ("alpha", "beta")

    def compute_loss(self, batch: Batch) -> StepOutput:
        if not self.replays(batch):
            logits = self.model(batch.x)
            return StepOutput(self.current_loss(logits, batch, self.cfg.masked_head), logits, len(batch))
        m = self.replay_size(batch)
        r1, r2 = self.replay(m), self.replay(m)
        logits, o1, o2 = self.forward_parts(batch.x, r1.x, r2.x)
        cur = self.current_loss(logits, batch, self.cfg.masked_head)
        replay = derpp_terms(o1, r1.logits, o2, r2.y, self.cfg.alpha, self.cfg.beta)
        n = len(batch) + r1.y.shape[0] + r2.y.shape[0]
        return StepOutput(cur + replay, logits, n, parts={"current": cur, "buffer": replay})
