"""Knowledge-distillation loss (Hinton, Vinyals and Dean, 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531, sec. 2).

With student logits z, teacher logits v, temperature T and weight alpha:

    p = softmax(v / T),  q = softmax(z / T)
    L = alpha * T^2 * KL(p || q) + (1 - alpha) * CE(z, y)
    KL(p || q) = (1/B) sum_b sum_i p_bi (log p_bi - log q_bi)          (mean over the batch)

The T^2 factor keeps the soft term's gradient on the scale of the hard one: dKL/dz_i = (q_i - p_i) / T,
and for large T with zero-mean logits q_i - p_i ~ (z_i - v_i) / (C T), so T^2 dKL/dz_i ~ (z_i - v_i) / C
(sec. 2.1). The teacher is detached: no gradient reaches it. Deviation: none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from sparsecl.configtools import helpfield


class DistillationLoss(nn.Module):
    """``loss(student_logits [B, C], teacher_logits [B, C], targets [B]) -> scalar``."""

    def __init__(self, temperature: float = 4.0, weight: float = 0.5) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        if not (isinstance(weight, (int, float)) and 0.0 <= weight <= 1.0):
            raise ValueError(f"weight must be in [0, 1]; got {weight!r}")
        self.temperature, self.weight = float(temperature), float(weight)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
            raise ValueError(f"student and teacher logits must both be [B, C]; got "
                             f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
        hard = F.cross_entropy(student_logits, targets)
        return self.weight * self.soft(student_logits, teacher_logits) + (1.0 - self.weight) * hard

    def soft(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """The soft term alone: T^2 KL(p || q), mean over the batch."""
        t = self.temperature
        log_q = F.log_softmax(student_logits / t, dim=1)
        log_p = F.log_softmax(teacher_logits.detach() / t, dim=1)
        return t * t * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)  # KL(p || q)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weight={self.weight}"


@dataclass
class DistillConfig:
    """Knowledge distillation from a trained teacher (off unless ``teacher`` is set)."""

    teacher: str | None = helpfield("a finished run's folder or a `sparsecl export` file: the teacher (off if unset)",
                                    default=None)
    weight: float = helpfield("w: share of the soft (teacher) term in the current-data loss, in [0, 1]", default=0.5)
    temperature: float = helpfield("T: softmax temperature of the soft term (> 0)", default=4.0)

    def __post_init__(self) -> None:
        DistillationLoss(self.temperature, self.weight)  # validates both, one-line errors
