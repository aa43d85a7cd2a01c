"""ER-ACE: experience replay with asymmetric cross-entropy (Caccia et al., ICLR 2022, "New Insights on
Reducing Abrupt Representation Change in Online Continual Learning", arXiv 2104.05025), mammoth's form."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsecl.continual.base import MethodContext
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.distributed import current as current_dist
from sparsecl.data.batch import Batch
from sparsecl.contract import StepOutput


def ace_keep(present: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """bool [K]: the logits the current-data CE keeps, from bool [K] masks ``present`` (in this batch) and
    ``seen`` (seen so far, this batch included).

    Kept: the classes present, plus, while the largest seen class c_max < K - 1, every class >= c_max
    (the not-yet-seen ones, and c_max itself, exactly as mammoth's ``mask[:, seen_so_far.max():] = 1``).
    So the current CE never pushes down the logits of old classes absent from the batch.
    """
    k = present.shape[0]
    classes = torch.arange(k, device=present.device)
    c_max = torch.where(seen, classes, -1).amax()
    return present | ((classes >= c_max) & (c_max < k - 1))


@CL_METHODS.register("er_ace")
class ERACE(RehearsalMethod):
    """loss = CE_masked(f(x), y) + CE(f(x'), y'), from the second task on (mammoth: ``task > 0``).

    The current CE masks logits with ``ace_keep`` (then ``masked_head``, when set, on top); the replay CE
    spans all classes. On the first task the current CE is unmasked and there is no replay term.
    """

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.seen = torch.zeros(ctx.stream.num_classes, dtype=torch.bool, device=ctx.device)

    def compute_loss(self, batch: Batch) -> StepOutput:
        present = torch.zeros_like(self.seen).index_fill_(0, batch.y, True)
        present = current_dist().any_(present)  # N processes: the classes of the whole global batch
        self.seen |= present
        logits = self.model(batch.x)
        masked = logits
        if batch.task > 0:
            masked = logits.masked_fill(~ace_keep(present, self.seen), float("-inf"))
        cur, n = self.current_loss(masked, batch, self.cfg.masked_head), len(batch)
        if batch.task == 0 or not self.replays(batch):  # ER-ACE never replays in the first task
            return StepOutput(cur, logits, n)
        rep = self.replay(self.replay_size(batch))
        replay = F.cross_entropy(self.model(rep.x), rep.y)
        n += rep.y.shape[0]
        return StepOutput(cur + replay, logits, n, parts={"current": cur, "buffer": replay})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": self.seen.clone()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.seen.copy_(sd["seen"])
