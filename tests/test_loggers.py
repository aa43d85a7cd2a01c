"""Loggers beside metrics.jsonl (issue 20): CSV, TensorBoard and W&B (offline) receive exactly what the
file holds, also across a resume cut; optional packages missing -> one line, exit 2. And the mask-update
records the report draws from (per-layer density and turnover)."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from sparsecl import cli
from sparsecl.loggers import LOGGERS, create_loggers, flatten
from sparsecl.loggers.base import scalars
from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.engine import MaskEngine
from sparsecl.train.logging import LogFanOut, MetricsLog

TINY = ["dataset=digits", "model=mlp", "hidden=32", "tasks=2", "epochs=1", "batch_size=64", "lr=0.1",
        "progress=false", "seed=0"]


def records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_registry_and_flattening():
    assert LOGGERS.names() == ["csv", "tensorboard", "wandb"]
    assert flatten({"a": {"b.c": 1, "d": None}, "l": [2.5, 3], "s": "x"}) == {"a/b.c": 1, "l/0": 2.5, "l/1": 3, "s": "x"}
    assert scalars({"event": "epoch", "step": 7, "loss": 0.5, "layers": {"fc": 0.25}, "ok": True}) == {
        "epoch/loss": 0.5, "epoch/layers/fc": 0.25, "epoch/ok": 1.0}


def test_csv_widens_its_header_and_rewinds_to_the_file(tmp_path):
    log = LogFanOut(MetricsLog(tmp_path / "metrics.jsonl"), create_loggers(["csv"], tmp_path, {}))
    log.write({"event": "task_end", "step": 3, "class_il": [90.0]})
    log.write({"event": "epoch", "step": 3, "loss": 1.5})
    cut = log.offset()
    log.write({"event": "task_end", "step": 6, "class_il": [80.0, 70.0]})
    assert read_csv(tmp_path / "csv" / "task_end.csv") == [
        {"step": "3", "class_il/0": "90.0", "class_il/1": ""}, {"step": "6", "class_il/0": "80.0", "class_il/1": "70.0"}]
    log.truncate(cut)  # a resume cuts metrics.jsonl back: the CSVs follow
    assert read_csv(tmp_path / "csv" / "task_end.csv") == [{"step": "3", "class_il/0": "90.0"}]
    assert read_csv(tmp_path / "csv" / "epoch.csv") == [{"step": "3", "loss": "1.5"}]


def _tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_tensorboard_purges_what_a_resume_rewrites(tmp_path):
    pytest.importorskip("tensorboard")
    log = LogFanOut(MetricsLog(tmp_path / "metrics.jsonl"), create_loggers(["tensorboard"], tmp_path, {}))
    log.write({"event": "epoch", "step": 10, "loss": 2.0})
    log.write({"event": "task_end", "step": 10, "avg_class_il": 50.0})
    cut = log.offset()
    log.write({"event": "epoch", "step": 20, "loss": 1.0})
    log.close()
    log = LogFanOut(MetricsLog(tmp_path / "metrics.jsonl"), create_loggers(["tensorboard"], tmp_path, {}))
    log.truncate(cut)  # the interrupted process had logged step 20; the resumed one logs 15 instead
    log.write({"event": "epoch", "step": 15, "loss": 1.25})
    log.close()
    assert _tb_scalars(tmp_path / "tensorboard") == {"epoch/loss": [(10, 2.0), (15, 1.25)],
                                                     "task_end/avg_class_il": [(10, 50.0)]}


def test_train_with_csv_and_tensorboard_matches_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "sparsity.method=set", "sparsity.density=0.3", "sparsity.delta_t=4",
                     "log=csv,tensorboard", "--out", str(out)]) == 0
    lines = records(out / "metrics.jsonl")
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert [float(r["loss"]) for r in read_csv(out / "csv" / "epoch.csv")] == [r["loss"] for r in epochs]
    tb = _tb_scalars(out / "tensorboard")
    ends = [r for r in lines if r["event"] == "task_end"]
    assert tb["task_end/avg_class_il"] == [(r["step"], pytest.approx(r["avg_class_il"])) for r in ends]
    # SET keeps each layer's count: every update after the initial masks has turnover in (0, 1), density fixed
    updates = [r for r in lines if r["event"] == "mask_update"]
    assert updates[0]["initial"] is True and updates[0]["step"] == 0
    assert len(updates) > 2 and all(r["step"] % 4 == 0 for r in updates)
    for r in updates[1:]:
        assert r["layers"] == updates[0]["layers"]
        assert all(0 < t < 1 for t in r["turnover"].values())


def test_wandb_offline_run_holds_the_records(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "tasks=1", "log=wandb", "--out", str(out)]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith((out / "wandb_id").read_text().strip())
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    end = next(r for r in records(out / "metrics.jsonl") if r["event"] == "task_end")
    for key in (b"epoch/loss", b"epoch/train_acc", b"task_end/avg_class_il"):
        assert key in data
    assert json.dumps(end["avg_class_il"]).encode() in data  # the value as logged (W&B stores JSON)


def test_pop_mask_changes_counts_dropped_and_grown():
    lin = torch.nn.Linear(4, 1, bias=False)
    eng = MaskEngine(lin, torch.optim.SGD(lin.parameters(), lr=0.1), SparsityConfig(method="static", density=0.5),
                     total_steps=10, generator=torch.Generator().manual_seed(0))
    eng.begin()
    assert eng.pop_mask_changes() == {"weight": (2, 0)} and eng.pop_mask_changes() == {}
    old = eng.masks["weight"].clone()
    new = ~old
    new[0, int(old[0].nonzero()[0])] = True  # keep one, drop one, grow two
    eng.set_mask("weight", new)
    assert eng.pop_mask_changes() == {"weight": (1, 2)}
    eng.set_mask("weight", new)  # no change: nothing recorded
    assert eng.pop_mask_changes() == {}


def test_missing_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    assert cli.main(["train", *TINY, "log=tensorboard", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == ("sparsecl train: error: log=tensorboard needs the tensorboard package: "
                                       "pip install 'sparsecl[tensorboard]'\n")
    assert cli.main(["train", *TINY, "log=csv,tb", "--out", str(tmp_path / "s")]) == 2
    assert "unknown logger 'tb'; valid: csv, tensorboard, wandb" in capsys.readouterr().err
