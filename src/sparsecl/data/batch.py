"""The data contract of one training step (what the loop, the methods and the SparCL parts exchange)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """One minibatch of the current task.

    x:     float [B, C, H, W], augmented and normalised: what the model trains on.
    y:     int64 [B], labels in the global label space.
    x_raw: uint8 [B, C, H, W], the NON-augmented input (after the task's domain transform, if any):
           what a rehearsal buffer stores; replay re-applies the training transform to it.
    idx:   int64 [B], example indices into the dataset's training split (Dynamic Data Removal keys on them).
    task:  the id of the task the batch belongs to.
    """

    x: torch.Tensor
    y: torch.Tensor
    x_raw: torch.Tensor
    idx: torch.Tensor
    task: int

    def __len__(self) -> int:
        return int(self.y.shape[0])
