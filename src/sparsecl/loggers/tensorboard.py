"""``log=tensorboard``: every numeric entry of a record as a scalar ``event/key`` at the record's step, in
``<run>/tensorboard`` (torch.utils.tensorboard; needs the ``tensorboard`` package).

On resume the writer opens with ``purge_step`` = the last step metrics.jsonl still holds, so TensorBoard
drops what the interrupted process wrote from that step on, and the kept records of that step are written
again: the scalars match the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsecl.loggers.base import LOGGERS, Logger, require, scalars


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Logger):
    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        super().__init__(out, config)
        require("tensorboard", "tensorboard", "log=tensorboard")
        self._writer_cls = require("torch.utils.tensorboard", "tensorboard", "log=tensorboard").SummaryWriter
        self.dir = self.out / "tensorboard"
        self.writer: Any = None

    def _open(self, purge_step: int | None = None) -> Any:
        if self.writer is None:
            self.writer = self._writer_cls(log_dir=str(self.dir), purge_step=purge_step)
        return self.writer

    def write(self, record: dict[str, Any]) -> None:
        w = self._open()
        step = int(record.get("step", 0))
        for tag, value in scalars(record).items():
            w.add_scalar(tag, value, step)

    def rewind(self, records: list[dict[str, Any]]) -> None:
        self.close()
        last = max((int(r.get("step", 0)) for r in records), default=0)
        self._open(purge_step=last)
        for r in records:
            if int(r.get("step", 0)) == last:
                self.write(r)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
