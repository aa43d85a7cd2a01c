"""Continual-learning metrics over the accuracy matrix, and per-task evaluation (mammoth's definitions).

R[i][j] is the test accuracy (percent) on task j after training task i. Rows may be ragged (row i holding
tasks 0..i, as the loop evaluates only seen tasks) or square; entries R[i][j] with j > i are never used.
With T rows:

    final average accuracy  A = mean_{j < T} R[T-1][j]
    forgetting              F = mean_{j < T-1} ( max_{j <= l < T-1} R[l][j] - R[T-1][j] )
    backward transfer       BWT = mean_{j < T-1} ( R[T-1][j] - R[j][j] )

Forgetting takes the max over the rows after task j was trained (l >= j): the spec's max_{l < T-1} on the
lower-triangular matrix the loop produces (Chaudhry et al., ECCV 2018, "Riemannian Walk"). With a single
task there is nothing to forget: F = BWT = 0.0 by definition.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from sparsecl.continual.base import mask_to_classes
from sparsecl.data.loader import eval_batches
from sparsecl.data.stream import Stream
from sparsecl.data.transforms import BatchTransform

Matrix = Sequence[Sequence[float]]


def _check(r: Matrix) -> int:
    if not r:
        raise ValueError("accuracy matrix is empty")
    for i, row in enumerate(r):
        if len(row) < i + 1:
            raise ValueError(f"accuracy matrix row {i} has {len(row)} entries; it needs at least {i + 1}")
    return len(r)


def final_average_accuracy(r: Matrix) -> float:
    t = _check(r)
    return sum(r[t - 1][:t]) / t


def forgetting(r: Matrix) -> float:
    t = _check(r)
    if t == 1:
        return 0.0
    return sum(max(r[l][j] for l in range(j, t - 1)) - r[t - 1][j] for j in range(t - 1)) / (t - 1)


def backward_transfer(r: Matrix) -> float:
    t = _check(r)
    if t == 1:
        return 0.0
    return sum(r[t - 1][j] - r[j][j] for j in range(t - 1)) / (t - 1)


def summarize(class_il: Matrix, task_il: Matrix) -> dict[str, dict[str, Any]]:
    """JSON-ready summary: for each setting, the matrix, final average accuracy, forgetting and BWT."""
    return {
        name: {
            "matrix": [list(map(float, row)) for row in r],
            "final_avg": final_average_accuracy(r),
            "forgetting": forgetting(r),
            "bwt": backward_transfer(r),
        }
        for name, r in (("class_il", class_il), ("task_il", task_il))
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, stream: Stream, transform: BatchTransform, upto_task: int, batch_size: int,
    scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[float], list[float]]:
    """Test accuracy (percent) on tasks 0..upto_task: (Class-IL, Task-IL).

    ``scores`` maps a test batch to the [B, classes] scores to classify by (default: ``model``'s logits;
    a method's ``eval_logits``).

    Class-IL: argmax over all logits. Task-IL: argmax over the task's own classes (``mask_to_classes``);
    for Domain-IL every task owns every class, so Task-IL equals Class-IL. Runs in eval mode and restores
    the model's previous mode; one host sync per call.

    ``reduce`` (several processes, each evaluating its share of every test split): sums the float64
    [tasks, 3] table of (Class-IL correct, Task-IL correct, examples) over the processes.
    """
    if not 0 <= upto_task < stream.num_tasks:
        raise ValueError(f"upto_task must be in [0, {stream.num_tasks - 1}], got {upto_task}")
    was_training = model.training
    model.eval()
    try:
        counts = [_correct(scores or model, stream, t, transform, batch_size) for t in range(upto_task + 1)]
    finally:
        model.train(was_training)
    correct = torch.stack([c for c, _ in counts]).double().cpu()  # [tasks, 2]: Class-IL, Task-IL
    total = torch.tensor([n for _, n in counts], dtype=torch.float64).view(-1, 1)
    if reduce is not None:
        table = reduce(torch.cat([correct, total], 1))
        correct, total = table[:, :2], table[:, 2:]
    acc = 100.0 * correct / total
    return acc[:, 0].tolist(), acc[:, 1].tolist()


def _correct(
    scores: Callable[[torch.Tensor], torch.Tensor], stream: Stream, task_id: int, transform: BatchTransform,
    batch_size: int,
) -> tuple[torch.Tensor, int]:
    """(int64 [2] on the device: Class-IL and Task-IL correct counts, number of test examples)."""
    task = stream.tasks[task_id]
    if task.test_idx.numel() == 0:
        raise ValueError(f"task {task_id} has no test examples")
    correct, n = torch.zeros(2, dtype=torch.int64, device=task.test_idx.device), 0
    for x, y in eval_batches(stream, task, transform, batch_size):
        logits = scores(x)
        cil = (logits.argmax(1) == y).sum()
        til = cil
        if stream.scenario != "domain-il":
            til = (mask_to_classes(logits, task.classes).argmax(1) == y).sum()
        correct += torch.stack([cil, til]).to(correct.device)
        n += y.numel()
    return correct, n


SCENARIO_LABELS = {"class-il": "Class-IL", "task-il": "Task-IL", "domain-il": "Domain-IL"}


def accuracy_line(scenario: str, cil: Sequence[float], til: Sequence[float]) -> str:
    """``Class-IL 71.20  Task-IL 95.10`` (the scenario's own accuracy first); Domain-IL has one accuracy
    (every task owns every class, so the two settings coincide)."""
    if scenario == "domain-il":
        return f"Domain-IL {sum(cil) / len(cil):.2f}"
    pair = [("Class-IL", cil), ("Task-IL", til)]
    if scenario == "task-il":
        pair.reverse()
    return "  ".join(f"{name} {sum(v) / len(v):.2f}" for name, v in pair)


def format_table(summary: Mapping[str, Mapping[str, Any]], scenario: str = "class-il") -> str:
    """The end-of-run table from ``summarize``'s output: the accuracy matrices, then the metrics. Under
    Domain-IL one matrix and one column, labelled Domain-IL (the ``class_il`` entries hold it); under
    Task-IL the Task-IL matrix first."""
    if scenario == "domain-il":
        return _format(summary, (("class_il", "Domain-IL"),))
    parts = (("class_il", "Class-IL"), ("task_il", "Task-IL"))
    return _format(summary, parts[::-1] if scenario == "task-il" else parts)


def _format(summary: Mapping[str, Mapping[str, Any]], parts: tuple[tuple[str, str], ...]) -> str:
    lines: list[str] = []
    for name, title in parts:
        matrix = summary[name]["matrix"]
        t = len(matrix)
        lines.append(f"{title} accuracy (%) on each task after training task i")
        lines.append("after " + "".join(f"{f'T{j}':>8}" for j in range(t)))
        for i, row in enumerate(matrix):
            lines.append(f"{f'T{i}':<6}" + "".join(f"{v:8.2f}" for v in row[: i + 1]))
        lines.append("")
    lines.append(f"{'metric':<12}" + "".join(f"{title:>10}" for _, title in parts))
    for key, label in (("final_avg", "final avg"), ("forgetting", "forgetting"), ("bwt", "BWT")):
        lines.append(f"{label:<12}" + "".join(f"{summary[name][key]:10.2f}" for name, _ in parts))
    return "\n".join(lines)
