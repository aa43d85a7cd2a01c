"""LwF-MC: Learning without Forgetting (Li & Hoiem, ECCV 2016, arXiv 1606.09282) in the multi-class form
of the iCaRL paper (Rebuffi et al., CVPR 2017, Sec. 4: "LwF.MC"), as mammoth's ``lwf_mc``: iCaRL's
distillation loss with neither exemplars nor the nearest-mean classifier.

loss = BCE with logits over the classes seen so far; targets: the one-hot label on the current task's
classes, the previous task's frozen network's sigmoid outputs on the earlier ones (``frozen``).
"""

from __future__ import annotations

from typing import Any

from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.frozen import DistilsPreviousNetwork
from sparsecl.data.stream import Task


@CL_METHODS.register("lwf_mc")
class LwFMC(DistilsPreviousNetwork):
    """See the module docstring. Class- and task-incremental streams only (a task's classes must be new)."""

    options: tuple[str, ...] = ()
    needs_new_classes = True

    def on_task_end(self, state: Any, task: Task) -> None:
        self.freeze(task.classes)

    def state_dict(self) -> dict[str, Any]:
        return self.previous_state()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.load_previous(sd)
