"""Continual metrics on hand-made matrices, per-task evaluation with a model of known predictions, and
the end-of-run table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecl.continual.metrics import (
    backward_transfer,
    evaluate,
    final_average_accuracy,
    forgetting,
    format_table,
    summarize,
)
from sparsecl.data.dataset import ArrayDataset
from sparsecl.data.stream import make_stream
from sparsecl.data.transforms import BatchTransform

R = [[90.0, 10.0, 5.0], [70.0, 80.0, 20.0], [50.0, 60.0, 75.0]]
RAGGED = [[90.0], [70.0, 80.0], [50.0, 60.0, 75.0]]


@pytest.mark.parametrize("r", [R, RAGGED])
def test_metrics_on_a_hand_made_3x3_matrix(r):
    assert final_average_accuracy(r) == pytest.approx((50 + 60 + 75) / 3)
    # forgetting: task 0: max(90, 70) - 50 = 40; task 1: 80 - 60 = 20 -> 30
    assert forgetting(r) == pytest.approx(30.0)
    # BWT: (50 - 90) and (60 - 80) -> -30
    assert backward_transfer(r) == pytest.approx(-30.0)


def test_forgetting_ignores_accuracy_before_a_task_was_trained():
    # R[0][1] = 95 was measured before task 1 was trained: the max runs over l >= j only
    r = [[90.0, 95.0, 0.0], [70.0, 80.0, 0.0], [50.0, 60.0, 75.0]]
    assert forgetting(r) == pytest.approx((40.0 + 20.0) / 2)


def test_single_task_has_no_forgetting_or_transfer():
    r = [[88.0]]
    assert (final_average_accuracy(r), forgetting(r), backward_transfer(r)) == (88.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "bad,match", [([], "empty"), ([[1.0], [2.0]], "row 1 has 1 entries; it needs at least 2")]
)
def test_malformed_matrices_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        forgetting(bad)


class _Constant(nn.Module):
    """Logits [3, 2, 1, 0] for every input: always class 0 (Class-IL), the task's first class (Task-IL)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([3.0, 2.0, 1.0, 0.0]))
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.logits.expand(x.shape[0], 4) + 0 * x.flatten(1).sum(1, keepdim=True)


def _stream(name: str):
    x = torch.zeros(8, 1, 2, 2, dtype=torch.uint8)
    ds = ArrayDataset("c", x, torch.arange(4).repeat(2), torch.zeros(12, 1, 2, 2, dtype=torch.uint8),
                      torch.arange(4).repeat_interleave(3), 4, (0.0,), (1.0,))
    return make_stream(name, ds, 2)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_class_il_and_task_il(training):
    model = _Constant().train(training)
    cil, til = evaluate(model, _stream("class-il"), BatchTransform((0.0,), (1.0,)), 1, batch_size=4)
    # task 0 = classes {0, 1}: class 0 right, class 1 wrong -> 50 / 50; task 1 = {2, 3}: Class-IL
    # predicts 0 (never right), Task-IL predicts 2 (right for half)
    assert cil == [50.0, 0.0] and til == [50.0, 50.0]
    assert model.training == training and model.modes and not any(model.modes)
    first = evaluate(model, _stream("class-il"), BatchTransform((0.0,), (1.0,)), 0, batch_size=5)
    assert first == ([50.0], [50.0])


def test_evaluate_domain_il_task_il_equals_class_il():
    cil, til = evaluate(_Constant(), _stream("permuted"), BatchTransform((0.0,), (1.0,)), 1, batch_size=5)
    assert cil == til == [25.0, 25.0]
    with pytest.raises(ValueError, match="upto_task"):
        evaluate(_Constant(), _stream("permuted"), BatchTransform((0.0,), (1.0,)), 2, batch_size=5)


def test_summary_and_table():
    s = summarize([[90.0], [70.0, 80.0]], [[99.0], [95.5, 97.25]])
    expected = {"matrix": [[90.0], [70.0, 80.0]], "final_avg": 75.0, "forgetting": 20.0, "bwt": -20.0}
    assert s["class_il"] == expected
    assert s["task_il"]["final_avg"] == 96.375 and s["task_il"]["bwt"] == -3.5
    assert format_table(s).splitlines() == [
        "Class-IL accuracy (%) on each task after training task i",
        "after       T0      T1",
        "T0       90.00",
        "T1       70.00   80.00",
        "",
        "Task-IL accuracy (%) on each task after training task i",
        "after       T0      T1",
        "T0       99.00",
        "T1       95.50   97.25",
        "",
        "metric        Class-IL   Task-IL",
        "final avg        75.00     96.38",
        "forgetting       20.00      3.50",
        "BWT             -20.00     -3.50",
    ]
