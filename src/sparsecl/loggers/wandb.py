"""``log=wandb``: Weights & Biases, every record's flattened numbers as ``event/key`` at its step; the
run's resolved config as the W&B config. Offline by default (files under ``<run>/wandb``, upload later with
``wandb sync``); ``WANDB_MODE=online`` logs live. One W&B run id per run folder (``wandb_id``), reused with
``resume="allow"`` when the run is resumed. Needs the ``wandb`` package (``sparsecl[wandb]``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from sparsecl.fileio import atomic_write
from sparsecl.loggers.base import LOGGERS, Logger, require, scalars


@LOGGERS.register("wandb")
class WandbLogger(Logger):
    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        super().__init__(out, config)
        self._wandb = require("wandb", "wandb", "log=wandb")
        self.run: Any = None

    def _open(self) -> Any:
        if self.run is None:
            self.out.mkdir(parents=True, exist_ok=True)
            id_file = self.out / "wandb_id"
            if not id_file.is_file():
                atomic_write(id_file, secrets.token_hex(4) + "\n")
            self.run = self._wandb.init(
                project=os.environ.get("WANDB_PROJECT", "sparsecl"), name=self.out.name, dir=str(self.out),
                id=id_file.read_text().strip(), resume="allow", config=self.config,
                mode=os.environ.get("WANDB_MODE", "offline"))
        return self.run

    def write(self, record: dict[str, Any]) -> None:
        self._open().log(scalars(record), step=int(record.get("step", 0)))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
