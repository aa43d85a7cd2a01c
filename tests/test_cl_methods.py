"""Continual methods: a contract test over every registered method (a tiny 2-task driver built from the
real data modules), hand-computed losses for DER++ / ER / ER-ACE, the A-GEM projection, the buffer data
contract, DDR's offer filter, Joint's schedule, config validation and exact state round trips."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.continual.base import MethodContext
from sparsecl.continual.buffer import BUFFER_POLICIES
from sparsecl.continual.config import ContinualConfig
from sparsecl.continual.methods import CL_METHODS, create_method
from sparsecl.continual.methods.agem import agem_project
from sparsecl.continual.methods.er_ace import ace_keep
from sparsecl.continual.metrics import evaluate
from sparsecl.data.batch import Batch
from sparsecl.data.dataset import ArrayDataset
from sparsecl.data.loader import EpochSampler, make_batch
from sparsecl.data.stream import make_stream
from sparsecl.data.transforms import Augment, BatchTransform
from sparsecl.models import create_model
from sparsecl.registry import UnknownNameError

K = 4  # classes; 2 tasks of 2 classes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dataset(per_class: int = 10) -> ArrayDataset:
    """4 classes of 1x4x4 images; x_train[i] has pixel (0, 0) = i, so stored inputs reveal their index."""
    g = _gen(0)
    n = per_class * K
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    xt = torch.randint(0, 256, (4 * K, 1, 4, 4), generator=g, dtype=torch.uint8)
    y, yt = torch.arange(K).repeat_interleave(per_class), torch.arange(K).repeat_interleave(4)
    return ArrayDataset("tiny", x, y, xt, yt, K, (0.5,), (0.25,))


def _cfg(name: str, policy: str = "reservoir", **over) -> ContinualConfig:
    reads = CL_METHODS.get(name).options
    kw: dict = {}
    if "buffer_size" in reads:
        kw.update(buffer_size=6, buffer_policy=policy)
    if "replay_batch_size" in reads:
        kw["replay_batch_size"] = 3
    if "agem_batch" in reads:
        kw["agem_batch"] = 5
    return ContinualConfig(method=name, **{**kw, **over})


def _setup(name: str, policy: str = "reservoir", augment: bool = True, model: nn.Module | None = None,
           **over):
    stream = make_stream("class-il", _dataset(), 2)
    transform = BatchTransform((0.5,), (0.25,), Augment(crop_padding=1, hflip=True) if augment else Augment())
    ctx = MethodContext(stream, transform, _gen(1), torch.device("cpu"))
    model = model if model is not None else create_model("mlp", (1, 4, 4), K, hidden=(8,), generator=_gen(2))
    return create_method(name, model, _cfg(name, policy, **over), ctx), model, ctx


def _run(method, model, ctx, *, steps: int = 4, batch: int = 4, on_step=None):
    """The loop's protocol, a few steps per task (the real loop lives in sparsecl.train)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler, aug = EpochSampler(batch, _gen(3)), _gen(4)
    for task in ctx.stream.tasks:
        method.on_task_start(None, task)
        idx = method.train_indices(task)
        if idx is not None:
            sampler.start_epoch(idx)
            for _, bidx in zip(range(steps), sampler):
                b = method.make_batch(task, bidx, aug)
                held = method.buffer if hasattr(method, "buffer") else None
                held = (0, 0) if held is None else (len(held), int(held.slots_before(task.id).numel()))
                opt.zero_grad()
                out = method.compute_loss(b)
                out.loss.backward()
                method.after_backward(None, b, out)
                opt.step()
                method.after_step(None, b, out)
                if on_step is not None:
                    on_step(task, b, out, *held)
        method.on_task_end(None, task)


CASES = [  # every method; the buffer methods under every buffer policy
    (m, p)
    for m in CL_METHODS.names()
    for p in (BUFFER_POLICIES.names() if "buffer_policy" in CL_METHODS.get(m).options else ["reservoir"])
]


@pytest.mark.parametrize("name,policy", CASES)
def test_every_method_runs_a_two_task_stream(name, policy):
    method, model, ctx = _setup(name, policy)
    before = [p.detach().clone() for p in model.parameters()]
    steps = []

    def check(task, b, out, held, past):
        assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.loss.requires_grad
        assert out.logits.shape == (len(b), K) and out.logits.requires_grad
        assert out.n_forward >= len(b)
        # iCaRL forwards every example through the frozen previous network too (its distillation targets)
        assert out.n_forward_only == (len(b) if name in ("icarl", "lwf_mc") and task.id > 0 else 0)
        steps.append(task.id)

    _run(method, model, ctx, on_step=check)
    assert steps == ([1] * 4 if name == "joint" else [0] * 4 + [1] * 4)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    if hasattr(method, "buffer"):
        buf = method.buffer
        # iCaRL: 6 // 4 = 1 exemplar for each of the 4 classes seen
        expect = 4 if name == "icarl" else 6 if policy == "after-task" else min(6, buf.seen)
        assert buf.filled == expect and buf.seen > 0
        assert set(buf.task.tolist()) == {0, 1}
        assert torch.equal(ctx.stream.dataset.x_train[buf.x[:, 0, 0, 0].long()], buf.x)  # raw, not augmented
    cil, til = evaluate(model, ctx.stream, ctx.transform, 1, batch_size=5)
    assert len(cil) == len(til) == 2 and all(0 <= a <= 100 for a in cil + til)
    _check_state_round_trip(name, policy, method, model, ctx)


def _check_state_round_trip(name, policy, method, model, ctx):
    """A fresh method loading the state behaves exactly like the original from there on."""
    model2 = copy.deepcopy(model)
    method2, _, ctx2 = _setup(name, policy, model=model2)
    ctx2.generator.manual_seed(12345)  # a different RNG state that load_state_dict must overwrite
    method2.load_state_dict(method.state_dict())
    task = ctx.stream.tasks[1]
    for m in (method, method2):
        m.on_task_start(None, task)
    for seed in (5, 6):
        b = make_batch(ctx.stream, task, task.train_idx[:4], ctx.transform, _gen(seed))
        outs = [m.compute_loss(b) for m in (method, method2)]
        assert torch.equal(outs[0].loss, outs[1].loss) and outs[0].n_forward == outs[1].n_forward
        for m, o in zip((method, method2), outs):
            o.loss.backward()
            m.after_backward(None, b, o)
            m.after_step(None, b, o)
    if hasattr(method, "buffer"):
        for f in ("x", "y", "task", "logits"):
            mine, theirs = getattr(method.buffer, f), getattr(method2.buffer, f)
            assert (mine is None and theirs is None) or torch.equal(mine, theirs), f


N_REPLAY = {  # examples forwarded with grad beyond the current batch, given the buffer's size before the step
    # (all of it, and its examples of earlier tasks)
    "sgd": lambda held, past, task: 0,
    "joint": lambda held, past, task: 0,
    "er": lambda held, past, task: min(3, held),
    "der": lambda held, past, task: min(3, held),
    "derpp": lambda held, past, task: 2 * min(3, held),
    "agem": lambda held, past, task: min(5, past),  # the reference comes from earlier tasks only
    "er_ace": lambda held, past, task: min(3, held) if task > 0 else 0,
    "icarl": lambda held, past, task: 0,  # exemplars come in the training set's batches, not as replay
    "xder_ce": lambda held, past, task: 2 * min(3, held),
    "ewc_on": lambda held, past, task: 0,
    "lwf_mc": lambda held, past, task: 0,
    "si": lambda held, past, task: 0,
}


@pytest.mark.parametrize("name", sorted(N_REPLAY))
def test_n_forward_counts_current_and_every_replay_example(name):
    method, model, ctx = _setup(name)
    seen = []

    def check(task, b, out, held, past):
        assert out.n_forward == len(b) + N_REPLAY[name](held, past, task.id)
        seen.append(held)

    _run(method, model, ctx, steps=3, batch=2, on_step=check)
    assert name in ("sgd", "joint", "icarl", "ewc_on", "lwf_mc", "si") or seen[:3] == [0, 2, 4]  # replay starts once the buffer holds anything


def _linear_setup(name: str, **over):
    """A 4 -> 4 linear model on 1x2x2 inputs (no hidden layer), no augmentation, x = x_uint8 / 255."""
    g = _gen(7)
    ds = ArrayDataset("lin", torch.randint(0, 256, (8, 1, 2, 2), generator=g, dtype=torch.uint8),
                      torch.arange(K).repeat(2), torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(K),
                      K, (0.0,), (1.0,))
    stream = make_stream("class-il", ds, 2)
    ctx = MethodContext(stream, BatchTransform((0.0,), (1.0,)), _gen(8), torch.device("cpu"))
    model = create_model("mlp", (1, 2, 2), K, hidden=(), generator=g)  # just the classifier Linear(4, K)
    return create_method(name, model, _cfg(name, **over), ctx), model, ctx


def _batch(ctx, x_raw, y, task):
    return Batch(ctx.transform.test(x_raw), y, x_raw, torch.arange(y.shape[0]), task)


def _ce(logits, y, classes=None):
    """Hand CE: mean of logsumexp over the allowed classes minus the label's logit."""
    allowed = logits if classes is None else logits[:, list(classes)]
    return (allowed.logsumexp(1) - logits.gather(1, y[:, None]).squeeze(1)).mean()


def _fill(method, x, y, z=None, task=0):
    method.buffer.add(x, y, z, task=task)


def _twin(ctx):
    g = torch.Generator()
    g.set_state(ctx.generator.get_state())
    return g


@pytest.mark.parametrize("masked", [False, True])
def test_derpp_loss_equals_hand_formula(masked):
    alpha, beta = 0.3, 0.7
    method, model, ctx = _linear_setup("derpp", alpha=alpha, beta=beta, replay_batch_size=2,
                                       masked_head=masked)
    g = _gen(20)
    xb = torch.randint(0, 256, (5, 1, 2, 2), generator=g, dtype=torch.uint8)
    yb, zb = torch.tensor([0, 1, 2, 3, 1]), torch.randn(5, K, generator=g)
    _fill(method, xb, yb, zb)
    x_raw, y = torch.randint(0, 256, (2, 1, 2, 2), generator=g, dtype=torch.uint8), torch.tensor([2, 3])
    twin = _twin(ctx)
    out = method.compute_loss(_batch(ctx, x_raw, y, task=1))
    i1, i2 = torch.randperm(5, generator=twin)[:2], torch.randperm(5, generator=twin)[:2]  # two draws
    w, b = model.classifier.weight.detach().double(), model.classifier.bias.detach().double()
    f = lambda x: x.double().flatten(1) / 255 @ w.T + b
    expected = (_ce(f(x_raw), y, (2, 3) if masked else None)
                + alpha * ((f(xb[i1]) - zb[i1].double()) ** 2).mean()
                + beta * _ce(f(xb[i2]), yb[i2]))
    assert out.n_forward == 6
    assert torch.allclose(out.loss.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_er_loss_is_mean_ce_over_the_concatenation(masked):
    method, model, ctx = _linear_setup("er", replay_batch_size=3, masked_head=masked)
    g = _gen(21)
    xb, yb = torch.randint(0, 256, (4, 1, 2, 2), generator=g, dtype=torch.uint8), torch.tensor([0, 1, 1, 0])
    _fill(method, xb, yb)
    x_raw, y = torch.randint(0, 256, (2, 1, 2, 2), generator=g, dtype=torch.uint8), torch.tensor([2, 3])
    twin = _twin(ctx)
    out = method.compute_loss(_batch(ctx, x_raw, y, task=1))
    i = torch.randperm(4, generator=twin)[:3]
    w, b = model.classifier.weight.detach().double(), model.classifier.bias.detach().double()
    f = lambda x: x.double().flatten(1) / 255 @ w.T + b
    if masked:  # current part over its task's classes, weighted so the whole is a mean over 5 examples
        expected = (2 * _ce(f(x_raw), y, (2, 3)) + 3 * _ce(f(xb[i]), yb[i])) / 5
    else:
        expected = _ce(f(torch.cat([x_raw, xb[i]])), torch.cat([y, yb[i]]))
    assert out.n_forward == 5 and torch.allclose(out.loss.double(), expected, atol=1e-6, rtol=0)
    assert torch.allclose(out.logits.double(), f(x_raw), atol=1e-6)


def test_ace_keep_exact_masks():
    mask = lambda idx: torch.zeros(6, dtype=torch.bool).index_fill_(0, torch.tensor(idx), True)
    # seen {0..3}, present {2, 3}: old absent classes {0, 1} masked; c_max = 3 and the unseen 4, 5 kept
    assert ace_keep(mask([2, 3]), mask([0, 1, 2, 3])).tolist() == [False, False, True, True, True, True]
    # c_max = 3 itself is kept even when absent from the batch (mammoth's ``mask[:, max:] = 1``)
    assert ace_keep(mask([1]), mask([0, 1, 2, 3])).tolist() == [False, True, False, True, True, True]
    # every class seen (c_max = K - 1): only the present ones
    assert ace_keep(mask([4]), mask(list(range(6)))).tolist() == [False] * 4 + [True, False]


def test_er_ace_loss_equals_hand_formula():
    method, model, ctx = _linear_setup("er_ace", replay_batch_size=2)
    g = _gen(22)
    x0, y0 = torch.randint(0, 256, (2, 1, 2, 2), generator=g, dtype=torch.uint8), torch.tensor([0, 1])
    out0 = method.compute_loss(_batch(ctx, x0, y0, task=0))  # first task: plain CE, no replay
    w, b = model.classifier.weight.detach().double(), model.classifier.bias.detach().double()
    f = lambda x: x.double().flatten(1) / 255 @ w.T + b
    assert out0.n_forward == 2 and torch.allclose(out0.loss.double(), _ce(f(x0), y0), atol=1e-6, rtol=0)
    _fill(method, x0, y0)
    x1, y1 = torch.randint(0, 256, (3, 1, 2, 2), generator=g, dtype=torch.uint8), torch.tensor([2, 2, 3])
    twin = _twin(ctx)
    out1 = method.compute_loss(_batch(ctx, x1, y1, task=1))
    i = torch.randperm(2, generator=twin)[:2]
    # seen {0, 1, 2, 3} = all classes: the current CE spans the present classes {2, 3} only
    expected = _ce(f(x1), y1, (2, 3)) + _ce(f(x0[i]), y0[i])
    assert out1.n_forward == 5 and torch.allclose(out1.loss.double(), expected, atol=1e-6, rtol=0)


def test_agem_project_exact():
    g, r = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert torch.equal(agem_project(g, r), torch.tensor([0.5, 0.5]))  # g - (-1 / 2) r; now g~.r = 0
    assert torch.equal(agem_project(torch.tensor([1.0, 2.0]), r), torch.tensor([1.0, 2.0]))  # g.r >= 0
    assert torch.equal(agem_project(g, torch.zeros(2)), g)


@pytest.mark.parametrize("conflict", [True, False])
def test_agem_gradient_has_non_negative_dot_with_reference(conflict):
    method, model, ctx = _linear_setup("agem")
    x = torch.randint(0, 256, (3, 1, 2, 2), generator=_gen(23), dtype=torch.uint8)
    y = torch.tensor([0, 0, 0])
    _fill(method, x, torch.full((3,), 1 if conflict else 0), task=0)  # same inputs, conflicting labels or not
    _fill(method, x.flip(0), torch.full((3,), 2), task=1)  # the current task's: never the reference
    batch = _batch(ctx, x, y, task=1)
    out = method.compute_loss(batch)
    out.loss.backward()
    params = list(model.parameters())
    g = torch.cat([p.grad.flatten() for p in params]).clone()
    ref_model = copy.deepcopy(model)  # the reference gradient by hand: CE on every example of task 0
    past = method.buffer.task == 0
    F.cross_entropy(ref_model(ctx.transform.test(method.buffer.x[past])), method.buffer.y[past]).backward()
    r = torch.cat([p.grad.flatten() for p in ref_model.parameters()])
    method.after_backward(None, batch, out)
    g_new = torch.cat([p.grad.flatten() for p in params])
    assert ((g @ r) < 0) == conflict  # the case is what it claims to be
    assert g_new @ r >= -1e-5 * r.norm() * g.norm()
    expected = g - (g @ r) / (r @ r) * r if conflict else g
    assert torch.allclose(g_new, expected, atol=1e-6)
    assert out.n_forward == 3 + 3


def test_agem_first_task_is_plain_sgd():
    """The memory holds no earlier task yet: no reference forward, the gradient is left as it is."""
    method, model, ctx = _linear_setup("agem")
    x = torch.randint(0, 256, (3, 1, 2, 2), generator=_gen(23), dtype=torch.uint8)
    _fill(method, x, torch.tensor([1, 1, 1]), task=0)
    out = method.compute_loss(_batch(ctx, x, torch.tensor([0, 0, 0]), task=0))
    out.loss.backward()
    g = [p.grad.clone() for p in model.parameters()]
    method.after_backward(None, None, out)
    assert out.n_forward == 3 and all(torch.equal(a, p.grad) for a, p in zip(g, model.parameters()))


def test_agem_projects_what_the_mask_lets_through():
    """Under a weight mask the applied update (inactive gradients zeroed) keeps g~.r >= 0 with the masked
    reference; the dense projection masked afterwards would not (the case is built so)."""
    method, model, ctx = _linear_setup("agem")
    x = torch.randint(0, 256, (3, 1, 2, 2), generator=_gen(23), dtype=torch.uint8)
    _fill(method, x, torch.tensor([1, 1, 1]), task=0)
    batch = _batch(ctx, x, torch.tensor([0, 0, 0]), task=1)
    name, w = next((n, p) for n, p in model.named_parameters() if p.dim() == 2)  # the classifier weight
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[0] = True  # only the weights of class 0's logit may change
    method.before_forward(SimpleNamespace(weight_masks=lambda: {name: mask}), batch)  # the loop's LoopState
    ref_model = copy.deepcopy(model)
    F.cross_entropy(ref_model(ctx.transform.test(x)), torch.tensor([1, 1, 1])).backward()
    m = {id(p): mask if p is w else None for p in model.parameters()}
    out = method.compute_loss(batch)
    out.loss.backward()
    params = list(model.parameters())
    flat = lambda grads: torch.cat([(gr * m[id(p)] if m[id(p)] is not None else gr).flatten()
                                    for gr, p in zip(grads, params)])
    g = flat([p.grad for p in params])
    r = flat([p.grad for p in ref_model.parameters()])
    dense_g = torch.cat([p.grad.flatten() for p in params])
    dense_r = torch.cat([p.grad.flatten() for p in ref_model.parameters()])
    projected = agem_project(dense_g, dense_r).split([p.numel() for p in params])
    dense_then_masked = flat([c.view_as(p) for c, p in zip(projected, params)])
    method.after_backward(None, batch, out)
    g_new = torch.cat([p.grad.flatten() for p in params])
    assert (g @ r) < 0 and (dense_then_masked @ r) < -1e-3  # a conflict the dense projection leaves
    assert torch.allclose(g_new, g - (g @ r) / (r @ r) * r, atol=1e-6)
    assert g_new @ r >= -1e-5 * r.norm() * g.norm()
    assert torch.all(w.grad[~mask] == 0)


@pytest.mark.parametrize("name", ["er", "der"])
def test_buffer_stores_non_augmented_inputs_and_step_logits(name):
    method, model, ctx = _setup(name)
    x_raw = torch.arange(4 * 16, dtype=torch.uint8).view(4, 1, 4, 4)
    batch = Batch(torch.randn(4, 1, 4, 4, generator=_gen(9)), torch.tensor([0, 1, 0, 1]), x_raw,
                  torch.arange(4), 0)
    assert not torch.equal(ctx.transform.test(x_raw), batch.x)  # the augmented view differs
    out = method.compute_loss(batch)
    method.after_step(None, batch, out)
    assert torch.equal(method.buffer.x, x_raw) and torch.equal(method.buffer.y, batch.y)
    assert method.buffer.task.tolist() == [0] * 4
    if name == "der":  # the logits of the step's forward on the augmented view
        assert torch.equal(method.buffer.logits, out.logits.detach())


def test_after_task_fills_at_task_end_with_end_of_task_logits():
    method, model, ctx = _setup("der", policy="after-task")
    first = []
    _run(method, model, ctx, steps=2, on_step=lambda t, b, o, h, _: first.append(h) if t.id == 0 else None)
    assert first == [0, 0]  # nothing enters during the task
    model.eval()
    with torch.no_grad():  # the last task's share holds the logits of the model at the end of that task
        last = method.buffer.task == 1
        assert torch.allclose(method.buffer.logits[last], model(ctx.transform.test(method.buffer.x[last])))
    assert torch.bincount(method.buffer.task).tolist() == [3, 3]


def test_joint_trains_once_on_the_union_of_all_tasks():
    method, model, ctx = _setup("joint")
    tasks = ctx.stream.tasks
    assert method.train_indices(tasks[0]) is None
    assert torch.equal(method.train_indices(tasks[1]), torch.arange(ctx.stream.dataset.y_train.numel()))


def test_joint_on_domain_il_trains_every_task_view_of_every_example():
    """Permuted tasks share their examples: Joint's union is of (task, example) pairs, each example in its
    own task's view (task k's example i is index k N + i)."""
    ds = _dataset()
    perm = make_stream("permuted", ds, 2)
    ctx = MethodContext(perm, BatchTransform((0.5,), (0.25,)), _gen(0), torch.device("cpu"))
    model = create_model("mlp", (1, 4, 4), K, hidden=(8,), generator=_gen(2))
    method = create_method("joint", model, _cfg("joint"), ctx)
    n = ds.y_train.numel()
    assert method.train_indices(perm.tasks[0]) is None
    idx = method.train_indices(perm.tasks[1])
    assert torch.equal(idx, torch.arange(2 * n))
    pick = torch.tensor([3, n + 3, 2 * n - 1, 0])  # example 3 under both tasks' views, mixed order
    b = method.make_batch(perm.tasks[1], pick, _gen(5))
    raw = ds.x_train
    want = torch.cat([perm.tasks[0].inputs(raw[[3]]), perm.tasks[1].inputs(raw[[3]]),
                      perm.tasks[1].inputs(raw[[n - 1]]), perm.tasks[0].inputs(raw[[0]])])
    assert torch.equal(b.x_raw, want) and not torch.equal(want[0], want[1])
    assert torch.equal(b.y, ds.y_train[[3, 3, n - 1, 0]]) and torch.equal(b.idx, pick)
    assert torch.equal(b.x, ctx.transform.test(want))  # no augmentation configured: the normalised view


@pytest.mark.parametrize("kw,match", [
    (dict(method="nope"), "unknown continual method 'nope'; valid: agem, der"),
    (dict(method="er", buffer_size=5, buffer_policy="fifo"), "valid: after-task, class-balanced, reservoir"),
    (dict(method="derpp"), "buffer_size must be > 0"),
    (dict(method="sgd", alpha=0.3), "method 'sgd' does not use alpha; it reads: masked_head"),
    (dict(method="joint", masked_head=True), "does not use masked_head"),
    (dict(method="er", buffer_size=-1), "buffer_size must be an int >= 0"),
    (dict(method="er", buffer_size=5, replay_batch_size=True), "replay_batch_size must be an int"),
    (dict(method="der", buffer_size=5, alpha=-0.1), "alpha must be a number >= 0"),
    (dict(method="agem", buffer_size=5, agem_batch=0), "agem_batch must be an int >= 1"),
    (dict(method="er", buffer_size=5, masked_head=1), "masked_head must be true, false or none"),
])
def test_config_rejects_bad_values_with_one_line(kw, match):
    with pytest.raises(ValueError, match=match):
        ContinualConfig(**kw)


def test_config_defaults_and_needs_buffer():
    assert ContinualConfig().method == "sgd" and not ContinualConfig().needs_buffer
    cfg = ContinualConfig(method="derpp", buffer_size=200, alpha=0.1, beta=0.5, masked_head=True)
    assert cfg.needs_buffer and cfg.replay_batch_size == 32
    with pytest.raises(UnknownNameError, match="valid: agem"):
        create_method("nope", nn.Identity(), cfg, None)


def test_joint_domain_il_run_end_to_end_with_data_removal(tmp_path):
    """Through the loop: the last task trains on 2 x N (task, example) pairs; DDR indexes that space."""
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.train.build import build_run
    from sparsecl.train.loop import Trainer

    cfg = make_config(TrainConfig, None, ["dataset=digits", "stream=permuted", "tasks=2", "method=joint", "epochs=3",
                                          "batch_size=64", "hidden=32", "sparcl.ddr=true", "progress=false",
                                          "checkpoint.at_task_end=false", "checkpoint.keep_model=false"])
    run = build_run(cfg)
    n = run.stream.dataset.y_train.numel()
    assert run.plan == [0, 3 * -(-2 * n // 64)]
    summary = Trainer(run, tmp_path, stream_out=lambda *a: None).fit()
    ddr = next(c for c in run.components if type(c).__name__ == "DynamicDataRemoval")
    assert ddr.prev.numel() == 2 * n and ddr.history and summary["data_examples"] < 3 * 2 * n
    assert len(summary["acc_matrix"]["class_il"][1]) == 2
