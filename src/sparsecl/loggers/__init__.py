"""Loggers beside ``metrics.jsonl`` (which stays the source of truth), chosen by the ``log=`` config key:
``csv`` (one CSV per event kind), ``tensorboard`` (torch.utils.tensorboard; extra ``sparsecl[tensorboard]``),
``wandb`` (Weights & Biases, offline unless ``WANDB_MODE`` says otherwise; extra ``sparsecl[wandb]``).

Every logger receives the records the loop writes to metrics.jsonl, in order, and on resume the records
that remain after metrics.jsonl was cut back to the checkpoint (``rewind``), so what it shows matches the
file. A missing optional package is one line naming the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsecl.loggers.base import LOGGERS, Logger, MissingDependency, flatten
from sparsecl.loggers import csvlog, tensorboard, wandb  # noqa: F401  (register the loggers)


def create_loggers(names: tuple[str, ...] | list[str], out: Path, config: dict[str, Any]) -> list[Logger]:
    """One logger per name (unknown names and missing packages fail before anything is written)."""
    return [LOGGERS.create(name, Path(out), config) for name in names]


__all__ = ["LOGGERS", "Logger", "MissingDependency", "create_loggers", "flatten"]
