"""Learning-rate schedules: functions of the position in a task's nominal training (epochs), restarted at
every task and every lottery-ticket round, stretched by RigL_Mx, and unshortened by Dynamic Data Removal."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.train.build import build_run
from sparsecl.train.loop import Trainer
from sparsecl.optim import LrSchedule


def _schedule(stretch: int = 1, **cfg) -> LrSchedule:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    base = dict(lr_schedule="cosine", lr_step_epochs=(), lr_gamma=0.1, epochs=4)
    return LrSchedule(opt, SimpleNamespace(**{**base, **cfg}), stretch)


def test_cosine_by_position_in_the_task():
    s = _schedule()
    assert s.apply(0, 0.0) == 1.0
    assert s.apply(2, 0.0) == pytest.approx(0.5)  # halfway through 4 epochs
    assert s.apply(3, 0.5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3.5 / 4)))
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3.5 / 4)))


def test_step_marks_scale_with_rigl_multiplier():
    """RigL_2x trains 8 executed epochs for a nominal 4: the drop at nominal epoch 2 comes at executed epoch 4."""
    s = _schedule(stretch=2, lr_schedule="step", lr_step_epochs=(2,))
    assert [s.apply(e, 0.0) for e in range(8)] == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
    assert s.apply(3, 0.99) == 1.0


def test_schedule_restarts_every_lottery_ticket_round():
    """A task of R + 1 rounds is R + 1 executed blocks of ``epochs``: each starts again at factor 1."""
    s = _schedule(epochs=2)
    assert [s.position(e, 0.5) for e in range(6)] == [0.5, 1.5, 0.5, 1.5, 0.5, 1.5]
    assert s.apply(2, 0.0) == 1.0 and s.apply(4, 0.0) == 1.0


def test_cosine_reaches_its_end_when_ddr_shortens_the_epochs(tmp_path):
    """Data removal makes later epochs shorter; the schedule follows epochs, so each task's last step has
    the factor of the last batch of its last epoch (a schedule over the steps planned on the full split
    would stop part-way)."""
    cfg = make_config(TrainConfig, None, [
        "dataset=digits", "model=mlp", "hidden=32", "tasks=2", "method=er", "buffer_size=50", "batch_size=16",
        "epochs=4", "lr=0.1", "lr_schedule=cosine", "sparcl.ddr=true", "sparcl.ddr_ratio=0.5",
        "progress=false", "checkpoint.at_task_end=false", "checkpoint.keep_model=false"])
    run = build_run(cfg)
    lrs: list[float] = []
    apply = run.lr_schedule.apply
    run.lr_schedule.apply = lambda *a: lrs.append(apply(*a)) or lrs[-1]
    summary = Trainer(run, tmp_path, stream_out=lambda *a: None).fit()
    assert summary["steps"] < sum(run.plan)  # DDR did shorten the tasks
    starts = [i for i, lr in enumerate(lrs) if lr == 0.1]  # position 0: only a task's first step
    assert len(starts) == 2
    ddr = next(c for c in run.components if type(c).__name__ == "DynamicDataRemoval")
    for t, end in enumerate([starts[1], len(lrs)]):
        remaining = [h["remaining"] for h in ddr.history if h["task"] == t][-1]
        b = math.ceil(remaining / 16)  # batches of the task's last (shortest) epoch
        assert lrs[end - 1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * (3 + (b - 1) / b) / 4)))
