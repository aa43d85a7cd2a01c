"""Synaptic Intelligence: the path integral of one SGD step by hand (lr g^2 for plain SGD), the importance
at a task end, the penalty, and the elementwise gradient clipping."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from test_cl_methods import _batch, _linear_setup

X = torch.tensor([[[[10, 200], [30, 40]]], [[[90, 5], [60, 250]]]], dtype=torch.uint8)


def test_path_integral_importance_and_penalty_by_hand():
    method, model, ctx = _linear_setup("si", si_c=2.0, si_xi=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    task0, task1 = ctx.stream.tasks
    method.on_task_start(None, task0)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    b = _batch(ctx, X, torch.tensor([0, 1]), task=0)
    out = method.compute_loss(b)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(b.x), b.y))  # no penalty on the first task
    opt.zero_grad()
    out.loss.backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.after_backward(None, b, out)
    clipped = {n: g.clamp(-1, 1) for n, g in raw.items()}
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, clipped[n])
    opt.step()
    method.after_step(None, b, out)
    for n, p in model.named_parameters():  # plain SGD: -g * (-lr g) = lr g^2
        torch.testing.assert_close(method.omega[n], 0.1 * clipped[n].pow(2))
    method.on_task_end(None, task0)
    for n, p in model.named_parameters():
        delta = p.detach() - start[n]
        torch.testing.assert_close(method.importance[n], 0.1 * clipped[n].pow(2) / (delta.pow(2) + 0.5))
        assert torch.equal(method.anchor[n], p.detach()) and not method.omega[n].any()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2)
    b1 = _batch(ctx, X, torch.tensor([2, 3]), task=1)
    pen = sum((method.importance[n] * (p - method.anchor[n]).pow(2)).sum() for n, p in model.named_parameters())
    torch.testing.assert_close(method.compute_loss(b1).loss, F.cross_entropy(model(b1.x), b1.y) + 2.0 * pen)
