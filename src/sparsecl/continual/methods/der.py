"""DER: Dark Experience Replay (Buzzega et al., NeurIPS 2020, arXiv 2004.07211), in mammoth's form."""

from __future__ import annotations

from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.continual.replay import der_term
from sparsecl.data.batch import Batch
from sparsecl.contract import StepOutput


@CL_METHODS.register("der")
class DER(RehearsalMethod):
    """loss = CE(f(x), y) + alpha * MSE(f(x'), z'), z' the logits stored with x' (MSE: mean over the
    m x K entries, ``F.mse_loss``). Logits are stored online, at every step, from the augmented view."""

    store_logits = True
    options = RehearsalMethod.options + ("alpha",)

    def compute_loss(self, batch: Batch) -> StepOutput:
        if not self.replays(batch):
            logits = self.model(batch.x)
            return StepOutput(self.current_loss(logits, batch, self.cfg.masked_head), logits, len(batch))
        rep = self.replay(self.replay_size(batch))
        logits, out = self.forward_parts(batch.x, rep.x)
        cur = self.current_loss(logits, batch, self.cfg.masked_head)
        replay = der_term(out, rep.logits, self.cfg.alpha)
        return StepOutput(cur + replay, logits, len(batch) + rep.y.shape[0], parts={"current": cur, "buffer": replay})
