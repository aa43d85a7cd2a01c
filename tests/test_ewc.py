"""Online EWC: the vmapped Fisher diagonal equals one backward pass per example, the penalty by hand, the
online decay of the accumulated Fisher, and a whole run on a domain-incremental stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.continual.methods.ewc import fisher_diagonal
from sparsecl.train.build import build_run
from sparsecl.train.loop import Trainer

from test_cl_methods import _batch, _linear_setup


def _fisher_by_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference: one backward pass per example."""
    expect = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xi, yi in zip(x, y):
        model.zero_grad()
        lp = F.log_softmax(model(xi[None]), 1)[0, yi]
        lp.backward()
        for n, p in model.named_parameters():
            expect[n] += lp.exp().detach() * p.grad.pow(2)
    return expect


def test_fisher_diagonal_equals_one_backward_per_example():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(7, 5), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    got = fisher_diagonal(model, x, y, chunk=3)  # chunks of 3, 3, 1
    expect = _fisher_by_loop(model, x, y)
    for n in expect:
        torch.testing.assert_close(got[n], expect[n])


def test_penalty_and_online_decay_by_hand():
    method, model, ctx = _linear_setup("ewc_on", ewc_lambda=3.0, ewc_gamma=0.5)
    task0, task1 = ctx.stream.tasks
    method.on_task_end(None, task0)
    f0 = {n: f.clone() for n, f in method.importance.items()}
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds = ctx.stream.dataset
    x0 = ctx.transform.test(ds.x_train[task0.train_idx])
    expect0 = fisher_diagonal(model, x0, ds.y_train[task0.train_idx])
    for n in f0:
        torch.testing.assert_close(f0[n], expect0[n] / task0.train_idx.numel())
        assert torch.equal(method.anchor[n], anchor[n])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    b = _batch(ctx, torch.tensor([[[[10, 200], [30, 40]]]], dtype=torch.uint8), torch.tensor([2]), task=1)
    out = method.compute_loss(b)
    pen = sum((f0[n] * (p - anchor[n]).pow(2)).sum() for n, p in model.named_parameters())
    torch.testing.assert_close(out.loss, F.cross_entropy(model(b.x), b.y) + 3.0 * pen)
    method.on_task_end(None, task1)  # F <- 0.5 F + F_1
    x1 = ctx.transform.test(ds.x_train[task1.train_idx])
    f1 = fisher_diagonal(model, x1, ds.y_train[task1.train_idx])
    for n in f0:
        torch.testing.assert_close(method.importance[n], 0.5 * f0[n] + f1[n] / task1.train_idx.numel())


def test_online_ewc_runs_on_a_domain_incremental_stream_with_sparse_execution(tmp_path):
    cfg = make_config(TrainConfig, None, ["dataset=digits", "model=mlp", "hidden=32", "stream=permuted", "tasks=3",
                                          "method=ewc_on", "ewc_lambda=50", "epochs=3", "batch_size=32", "lr=0.1",
                                          "sparsity.method=static", "sparsity.density=0.3", "sparsity.execution=csr",
                                          "progress=false"])
    run = build_run(cfg)
    summary = Trainer(run, tmp_path, stream_out=lambda *a: None).fit()
    assert summary["execution"]["hidden.0"] == "csr"
    assert run.method.importance is not None and all(torch.isfinite(f).all() for f in run.method.importance.values())
    mask = run.engine.masks["hidden.0.weight"]
    assert torch.equal(run.model.hidden[0].weight.detach()[~mask], torch.zeros(int((~mask).sum())))
    assert summary["final_avg_acc"]["class_il"] > 30  # far above chance (10 %)


def test_fisher_diagonal_of_a_convolutional_model_matches_the_loop_too():
    """Convolutions go through torch.func, the Linear head through the outer-product rule."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x, y = torch.randn(5, 1, 5, 5), torch.tensor([0, 2, 1, 1, 0])
    got = fisher_diagonal(model, x, y, chunk=2)
    expect = _fisher_by_loop(model, x, y)
    assert set(got) == set(expect)
    for n in expect:
        torch.testing.assert_close(got[n], expect[n])
