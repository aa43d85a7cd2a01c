"""Knowledge distillation as a training option (train.distill): the loss is Hinton's on plain training,
composes with a rehearsal method's parts, the teacher's cost is reported apart, bad teachers are clear
errors."""

from __future__ import annotations

import pytest
import torch

from sparsecl.config import TrainConfig
from sparsecl.configtools import ConfigError, make_config
from sparsecl.data.batch import Batch
from sparsecl.losses import DistillationLoss
from sparsecl.train.build import build_run
from sparsecl.train.distill import Distillation
from sparsecl.contract import StepOutput
from sparsecl.train.loop import Trainer

BASE = ["dataset=digits", "model=mlp", "hidden=32", "tasks=2", "batch_size=16", "epochs=1", "lr=0.05",
        "progress=false", "seed=0", "checkpoint.at_task_end=false"]


def _fit(tmp_path, name: str, *extra: str):
    run = build_run(make_config(TrainConfig, None, [*BASE, *extra]))
    return run, Trainer(run, tmp_path / name, stream_out=lambda *a: None).fit()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    _fit(d, "run", "method=joint", "hidden=64,64", "epochs=3")  # a wider dense teacher
    return d / "run"


def _batch(x, y):
    return Batch(x=x, y=y, x_raw=x, idx=torch.arange(len(y)), task=0)


def test_plain_training_loss_is_hintons():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 3)
    student_logits = torch.randn(4, 3, requires_grad=True)
    x, y = torch.randn(4, 5), torch.tensor([0, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(student_logits, y)
    out = StepOutput(ce, student_logits, 4)
    Distillation(teacher, 0.3, 2.0, 15).before_backward(None, _batch(x, y), out)
    expect = DistillationLoss(2.0, 0.3)(student_logits, teacher(x), y)
    torch.testing.assert_close(out.loss, expect)


def test_rehearsal_parts_keep_their_replay_term():
    teacher = torch.nn.Linear(5, 3)
    logits = torch.randn(4, 3, requires_grad=True)
    x, y = torch.randn(4, 5), torch.tensor([0, 2, 1, 0])
    cur, rep = torch.nn.functional.cross_entropy(logits, y), torch.tensor(0.7)
    out = StepOutput(cur + rep, logits, 12, parts={"current": cur, "buffer": rep})
    Distillation(teacher, 0.5, 4.0, 15).before_backward(None, _batch(x, y), out)
    expect_cur = DistillationLoss(4.0, 0.5)(logits, teacher(x), y)
    torch.testing.assert_close(out.parts["current"], expect_cur)
    torch.testing.assert_close(out.loss, expect_cur + rep)


def test_sparse_student_trains_with_a_teacher(tmp_path, teacher_dir):
    _, plain = _fit(tmp_path, "plain", "method=derpp", "buffer_size=50", "sparsity.method=rigl", "sparsity.density=0.2")
    run, kd = _fit(tmp_path, "kd", "method=derpp", "buffer_size=50", "sparsity.method=rigl", "sparsity.density=0.2",
                   f"distill.teacher={teacher_dir}", "distill.weight=0.7", "distill.temperature=3")
    assert kd["distill"]["teacher_examples"] == kd["data_examples"] > 0
    assert kd["distill"]["teacher_forward_flops"] == kd["distill"]["teacher_examples"] * (64 * 64 + 64 * 64 + 64 * 10)
    assert kd["density"]["overall"] == pytest.approx(0.2, abs=1e-3)
    assert kd["final_avg_acc"] != plain["final_avg_acc"]  # the teacher changed training
    assert "distill" not in plain


def test_bad_teachers_are_one_line_errors(tmp_path, teacher_dir):
    with pytest.raises(ConfigError, match="no run folder or exported model"):
        build_run(make_config(TrainConfig, None, [*BASE, f"distill.teacher={tmp_path / 'nothing'}"]))
    with pytest.raises(ValueError, match="temperature"):
        make_config(TrainConfig, None, [*BASE, "distill.temperature=0"])
    with pytest.raises(ValueError, match="weight"):
        make_config(TrainConfig, None, [*BASE, "distill.weight=1.5"])
