"""X-DER (mammoth's xder_ce): the logit transplant and de-duplication pinned by hand, the whole loss on a
tiny linear model computed term by term, the online 1/c logit update, and the memory at task end."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecl.continual.methods.xder import first_occurrence, transplant

from test_cl_methods import _batch, _fill, _linear_setup, _setup


def test_transplant_caps_new_logits_below_the_stored_true_class_logit():
    old = torch.tensor([[2.0, 0.0, -1.0, -1.0], [4.0, 1.0, -2.0, -2.0]])
    new = torch.tensor([[9.0, 9.0, 1.0, 4.0], [9.0, 9.0, 3.0, 1.0]])
    out = transplant(old, new, torch.tensor([0, 0]), torch.tensor([2, 3]), gamma=0.5)
    # row 0: top 4 > true 2: columns scaled by 0.5 * 2 / 4; row 1: top 3 < true 4: copied as they are
    assert out.tolist() == [[2.0, 0.0, 0.25, 1.0], [4.0, 1.0, 3.0, 1.0]]
    assert old.tolist()[0] == [2.0, 0.0, -1.0, -1.0]  # the input is not changed


def test_first_occurrence():
    assert first_occurrence(torch.tensor([3, 1, 3, 0, 1]), 5).tolist() == [True, True, False, True, False]


def test_xder_loss_by_hand_on_the_first_task():
    method, model, ctx = _linear_setup("xder_ce", buffer_size=4, replay_batch_size=4, alpha=0.3, beta=0.5,
                                       eta=0.7, margin=0.2)
    xs = torch.tensor([[[[10, 200], [30, 40]]], [[[90, 5], [60, 250]]], [[[1, 2], [3, 4]]]], dtype=torch.uint8)
    z = torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -0.5, 1.0], [0.3, 0.3, 0.3, 0.3]])
    _fill(method, xs, torch.tensor([0, 1, 0]), z)
    b = _batch(ctx, torch.tensor([[[[7, 70], [170, 7]]], [[[200, 100], [50, 0]]]], dtype=torch.uint8),
               torch.tensor([1, 0]), task=0)
    out = method.compute_loss(b)
    logits = model(b.x)
    bx = ctx.transform.test(xs)
    ob = model(bx)  # both draws hold all 3 buffer examples (without augmentation the order does not matter)
    stream = F.cross_entropy(logits, b.y)  # the current and the (only) future task: all 4 classes
    der = 0.3 * F.mse_loss(ob, z)
    derpp = 0.5 * F.cross_entropy(ob[:, :2], torch.tensor([0, 1, 0]))  # the first task's classes
    # future constraint over the current rows and the 3 buffer rows: own task's best vs classes 2, 3
    rows = torch.cat([logits, ob])
    v = rows[:, 2:].max(1).values + 0.2 - rows[:, :2].max(1).values
    futu = 0.7 * v[v > 0].mean() if (v > 0).any() else 0.0
    torch.testing.assert_close(out.loss, stream + der + derpp + futu)
    torch.testing.assert_close(out.parts["current"], stream)
    assert out.n_forward == 2 + 3 + 3


def test_xder_past_constraint_on_the_last_task_and_the_online_logit_update():
    method, model, ctx = _linear_setup("xder_ce", buffer_size=4, replay_batch_size=4, eta=0.7, margin=0.2,
                                       gamma=0.85)
    xs = torch.tensor([[[[10, 200], [30, 40]]], [[[90, 5], [60, 250]]]], dtype=torch.uint8)
    z = torch.tensor([[3.0, -1.0, 0.5, 0.0], [0.0, 2.0, -0.5, 1.0]])
    _fill(method, xs, torch.tensor([0, 1]), z)
    b = _batch(ctx, torch.tensor([[[[7, 70], [170, 7]]], [[[200, 100], [50, 0]]]], dtype=torch.uint8),
               torch.tensor([2, 3]), task=1)
    out = method.compute_loss(b)
    logits, ob = model(b.x), model(ctx.transform.test(xs))
    stream = F.cross_entropy(logits[:, 2:], b.y - 2)  # the last task: its own classes only
    der = 0.1 * F.mse_loss(ob, z)
    derpp = 0.5 * F.cross_entropy(ob[:, :2], torch.tensor([0, 1]))
    p = F.softmax(logits, 1)  # past constraint: softmax over the seen classes 0-3
    v = p[:, :2].max(1).values + 0.2 - p[:, 2:].max(1).values
    past = 0.7 * v[v > 0].mean() if (v > 0).any() else 0.0
    torch.testing.assert_close(out.loss, stream + der + derpp + past)
    # both examples are of the earlier task and drawn for the first time: transplanted with probability 1
    expect = transplant(z, ob.detach(), torch.tensor([0, 1]), torch.tensor([2, 3]), 0.85)
    torch.testing.assert_close(method.buffer.logits, expect)
    assert method.counter[:2].tolist() == [1, 1]


def test_memory_at_task_end_is_class_balanced_with_updated_logits():
    method, model, ctx = _setup("xder_ce", "reservoir")  # buffer 6, 2 tasks x 2 classes, 10 examples each
    task0, task1 = ctx.stream.tasks
    _fill(method, ctx.stream.dataset.x_train[:5], ctx.stream.dataset.y_train[:5], torch.zeros(5, 4), task=0)
    method.on_task_end(None, task0)  # the reservoir is replaced by 3 random examples of each class
    assert torch.bincount(method.buffer.y, minlength=4).tolist() == [3, 3, 0, 0]
    with torch.no_grad():
        stored0 = method.outputs_of(method.buffer.x)
    torch.testing.assert_close(method.buffer.logits, stored0)  # stored with the network's logits now
    held_x, held_y = method.buffer.x.clone(), method.buffer.y.clone()
    method.on_task_end(None, task1)  # 6 // 4 = 1 per earlier class kept (its first), room 4: 2 per new class
    buf = method.buffer
    assert torch.bincount(buf.y, minlength=4).tolist() == [1, 1, 2, 2] and buf.filled == 6
    firsts = sorted(int((held_y == c).nonzero()[0]) for c in (0, 1))  # each class's first slot, in slot order
    assert torch.equal(buf.x[:2], held_x[firsts]) and torch.equal(buf.y[:2], held_y[firsts])
    # the kept earlier examples got the finished task's logits (columns 2, 3) transplanted
    with torch.no_grad():
        now = method.outputs_of(buf.x[:2])
    expect = transplant(stored0[firsts], now, buf.y[:2], torch.tensor([2, 3]), method.cfg.gamma)
    torch.testing.assert_close(buf.logits[:2], expect)
    with torch.no_grad():  # the new examples: the network's logits, earlier classes capped
        fresh = method.outputs_of(buf.x[2:])
    torch.testing.assert_close(buf.logits[2:], transplant(fresh, fresh, buf.y[2:], torch.tensor([0, 1]),
                                                          method.cfg.gamma))


def test_xder_refuses_a_domain_incremental_stream():
    import pytest

    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.train.build import build_run

    with pytest.raises(ValueError, match="xder_ce needs a class- or task-incremental stream"):
        build_run(make_config(TrainConfig, None, ["dataset=digits", "stream=permuted", "tasks=2",
                                                  "method=xder_ce", "buffer_size=20", "progress=false"]))
