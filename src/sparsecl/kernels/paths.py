"""Per-layer choice of execution path: "csr" (SparseLinear) or "masked" (dense weights times a mask).

PLACEHOLDER during calibration.
"""

from __future__ import annotations

import torch

PATH_CHOICES = ("auto", "csr", "masked")


def choose_path(
    out_features: int, in_features: int, batch: int, density: float, threads: int | None = None,
    path: str = "auto",
) -> str:
    return "masked" if path == "auto" else path
