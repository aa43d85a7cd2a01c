"""``log=csv``: one CSV per event kind (``csv/epoch.csv``, ``csv/task_end.csv``, ``csv/mask_update.csv``),
columns the flattened record keys (``class_il/0``, ...). A record with a key the file has no column for
rewrites that file with the wider header (old rows get empty cells), so every file stays rectangular."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sparsecl.fileio import atomic_write
from sparsecl.loggers.base import LOGGERS, Logger, flatten


@LOGGERS.register("csv")
class CsvLogger(Logger):
    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        super().__init__(out, config)
        self.dir = self.out / "csv"
        self.columns: dict[str, list[str]] = {}  # event -> header of its file

    def write(self, record: dict[str, Any]) -> None:
        event = str(record.get("event", "log"))
        row = flatten({k: v for k, v in record.items() if k != "event"})
        path = self.dir / f"{event}.csv"
        cols = self.columns.get(event)
        if cols is None and path.is_file():  # a resumed run appends to the file it left behind
            with open(path, newline="") as f:
                cols = next(csv.reader(f), [])
        if cols is None or not set(row) <= set(cols):
            self._rewrite(path, [*(cols or []), *sorted(k for k in row if k not in (cols or []))])
            cols = self.columns[event]
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, cols).writerow(row)

    def _rewrite(self, path: Path, cols: list[str]) -> None:
        rows = []
        if path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        self.dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, cols)
        w.writeheader()
        w.writerows(rows)
        atomic_write(path, buf.getvalue())  # a kill mid-rewrite keeps the old file
        self.columns[path.stem] = cols

    def rewind(self, records: list[dict[str, Any]]) -> None:
        """Rebuild every file from the records metrics.jsonl still holds."""
        for path in self.dir.glob("*.csv"):
            path.unlink()
        self.columns = {}
        for r in records:
            self.write(r)
