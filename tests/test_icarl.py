"""iCaRL: herding order pinned on hand-made features, the exemplar sets' shrinking, the loss by hand, the
nearest-mean classifier, the training set with exemplars, the step plan, and the frozen network's copy;
LwF-MC, the same distillation without exemplars."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.continual.buffer import Buffer
from sparsecl.continual.methods.icarl import ExemplarSets, herding, rank_within_class
from sparsecl.kernels.execution import SparseExecution, plain_copy
from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.engine import MaskEngine
from sparsecl.train.build import build_run
from sparsecl.train.loop import Trainer

from test_cl_methods import _batch, _gen, _linear_setup, _setup


def test_herding_order_by_hand():
    # mean (0.64, 0.52): f2 is nearest; then f3 brings the running mean closest; then f1; then f0
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.96, 0.28]])
    assert herding(f, 4).tolist() == [2, 3, 1, 0]
    assert herding(f, 2).tolist() == [2, 3]
    assert herding(f, 9).tolist() == [2, 3, 1, 0]  # never more than the rows, never one twice


def test_rank_within_class():
    assert rank_within_class(torch.tensor([3, 1, 3, 3, 1, 0])).tolist() == [0, 0, 1, 2, 1, 0]


def test_exemplar_sets_keep_b_over_k_per_class_in_priority_order():
    buf = Buffer(6, (1, 1, 1), 4, device="cpu", generator=_gen(0), policy=ExemplarSets())
    x = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1)  # the input marks the example
    buf.add_task(x, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), task=0)  # 2 classes: 3 each, the first 3 given
    assert buf.x.flatten().tolist() == [0, 1, 2, 4, 5, 6] and buf.y.tolist() == [0, 0, 0, 1, 1, 1]
    buf.add_task(x + 10, torch.tensor([2, 3, 2, 3, 2, 3, 2, 3]), task=1)  # 4 classes: 6 // 4 = 1 each
    assert buf.x.flatten().tolist() == [0, 4, 10, 11] and buf.task.tolist() == [0, 0, 1, 1]
    assert buf.filled == 4


def test_icarl_loss_by_hand_distills_earlier_classes_and_learns_the_current_ones():
    method, model, ctx = _linear_setup("icarl", buffer_size=4)
    old = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    with torch.no_grad():
        old[1].weight.copy_(torch.arange(16.0).view(4, 4) / 20 - 0.3)
        old[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    method.old = old
    method.seen[:2] = True  # task 0 (classes 0, 1) is done
    b = _batch(ctx, torch.tensor([[[[10, 200], [30, 40]]], [[[90, 5], [60, 250]]]], dtype=torch.uint8),
               torch.tensor([2, 0]), task=1)  # a current example and an exemplar of class 0
    out = method.compute_loss(b)
    z = model(b.x)
    p_old = torch.sigmoid(old(b.x))
    t = torch.cat([p_old[:, :2], F.one_hot(b.y, 4).float()[:, 2:]], 1)
    hand = -(t * torch.log(torch.sigmoid(z)) + (1 - t) * torch.log(1 - torch.sigmoid(z))).mean()
    torch.testing.assert_close(out.loss, hand)
    assert out.n_forward == 2 and out.n_forward_only == 2


def test_first_task_loss_is_one_hot_bce_over_its_own_classes():
    method, model, ctx = _linear_setup("icarl", buffer_size=4)
    b = _batch(ctx, torch.tensor([[[[10, 200], [30, 40]]]], dtype=torch.uint8), torch.tensor([1]), task=0)
    out = method.compute_loss(b)
    z = model(b.x)[:, :2]  # only task 0's classes 0 and 1 are seen
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(z, torch.tensor([[0.0, 1.0]])))
    assert out.n_forward_only == 0


def test_nearest_mean_of_exemplars_classifies_by_the_closest_renormalised_mean():
    method, model, ctx = _linear_setup("icarl", buffer_size=4)  # no hidden layer: features = the input
    # two exemplars per class for classes 0 and 1 (task 0), class means along two directions
    x = torch.tensor([[[[255, 0], [0, 0]]], [[[200, 10], [0, 0]]], [[[0, 0], [255, 0]]], [[[0, 0], [200, 10]]]],
                     dtype=torch.uint8)
    method.buffer.add_task(x, torch.tensor([0, 0, 1, 1]), task=0)
    method.means = method._class_means()
    feats = F.normalize(ctx.transform.test(x).flatten(1), dim=1)
    expect0 = F.normalize(feats[:2].sum(0), dim=0)
    torch.testing.assert_close(method.means[0], expect0)
    assert method.means[2:].abs().sum() == 0  # classes without exemplars
    probe = ctx.transform.test(torch.tensor([[[[0, 5], [240, 0]]], [[[250, 0], [3, 0]]]], dtype=torch.uint8))
    scores = method.eval_logits(probe)
    assert scores.argmax(1).tolist() == [1, 0]
    assert torch.isinf(scores[:, 2:]).all() and (scores[:, 2:] < 0).all()
    pf = F.normalize(probe.flatten(1), dim=1)
    torch.testing.assert_close(scores[:, :2], -torch.cdist(pf, method.means[:2]).pow(2))


def test_training_set_of_a_later_task_holds_its_examples_and_the_exemplars():
    method, model, ctx = _setup("icarl", "reservoir")
    task0, task1 = ctx.stream.tasks
    method.on_task_start(None, task0)
    method.on_task_end(None, task0)  # herding picks 3 exemplars of each of classes 0 and 1
    n = ctx.stream.dataset.x_train.shape[0]
    idx = method.train_indices(task1)
    assert torch.equal(idx, torch.cat([task1.train_idx, torch.arange(n, n + 6)]))
    assert method.train_size(task1) == idx.numel()  # the plan made before the run knows it
    b = method.make_batch(task1, torch.tensor([int(task1.train_idx[0]), n + 4, n]), _gen(0))
    assert torch.equal(b.x_raw[1], method.buffer.x[4]) and torch.equal(b.x_raw[2], method.buffer.x[0])
    assert b.y.tolist() == [int(ctx.stream.dataset.y_train[task1.train_idx[0]]), 1, 0]
    assert method.index_space() == n + 6


def test_the_frozen_copy_computes_densely_and_apart_from_the_engine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = MaskEngine(model, opt, SparsityConfig(method="static", density=0.25, dense_last=True), 10,
                        torch.Generator().manual_seed(0))
    engine.begin()
    SparseExecution(model, engine, "csr", batch=8)
    frozen = plain_copy(model)
    assert type(frozen[1]) is nn.Linear and not hasattr(frozen[1], "csr_plan")
    assert hasattr(model[1], "csr_plan")  # the original keeps its CSR execution
    x = torch.randn(4, 20)
    torch.testing.assert_close(frozen(x), model(x))
    with torch.no_grad():
        model[1].weight.mul_(2)
    assert not torch.allclose(frozen(x), model(x))  # its own parameters


def test_a_whole_run_takes_exactly_the_planned_steps(tmp_path):
    cfg = make_config(TrainConfig, None, ["dataset=digits", "model=mlp", "hidden=32", "tasks=5", "method=icarl",
                                          "buffer_size=100", "epochs=1", "batch_size=32", "progress=false"])
    run = build_run(cfg)
    summary = Trainer(run, tmp_path, stream_out=lambda *a: None).fit()
    assert summary["steps"] == sum(run.plan)
    # task 1 trains on its examples and 100 // 2 = 50 exemplars of each of task 0's two classes
    assert run.plan[1] == -(-(run.stream.tasks[1].train_idx.numel() + 100) // 32)
    assert summary["final_avg_acc"]["class_il"] > 40  # far above chance (10 %)


def test_icarl_refuses_a_domain_incremental_stream():
    with pytest.raises(ValueError, match="icarl needs a class- or task-incremental stream"):
        build_run(make_config(TrainConfig, None, ["dataset=digits", "stream=permuted", "tasks=2",
                                                  "method=icarl", "buffer_size=20", "progress=false"]))


def test_lwf_mc_distils_the_network_frozen_at_the_task_end():
    method, model, ctx = _linear_setup("lwf_mc")
    task0 = ctx.stream.tasks[0]
    method.on_task_end(None, task0)
    assert method.seen.tolist() == [True, True, False, False] and not hasattr(method, "buffer")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)  # training goes on; the frozen copy does not move
    b = _batch(ctx, torch.tensor([[[[10, 200], [30, 40]]], [[[90, 5], [60, 250]]]], dtype=torch.uint8),
               torch.tensor([2, 3]), task=1)
    out = method.compute_loss(b)
    z = model(b.x)
    with torch.no_grad():
        old = z - 0.05 * (b.x.flatten(1).sum(1, keepdim=True) + 1)  # the weights and biases before the shift
    t = torch.cat([torch.sigmoid(old[:, :2]), F.one_hot(b.y, 4).float()[:, 2:]], 1)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(z, t))
    assert out.n_forward_only == 2
