"""Sparse execution in training (kernels.execution): CSR products on the engine's dense-backed layers give
the masked path's numbers, dense-gradient steps fall back to the dense product, and whole runs agree."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.kernels.execution import CsrConv2d, CsrLinear, GatherActive, SparseExecution, disable_sparse_execution
from sparsecl.kernels.native import native_kernels
from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.engine import MaskEngine
from sparsecl.train.build import build_run
from sparsecl.contract import Component
from sparsecl.train.loop import Trainer


def _pair(density: float, method: str = "static", seed: int = 0, optim=None, **kw):
    """Two identical MLPs with engines on identical masks: one masked, one CSR-executing."""
    out = []
    for mode in ("masked", "csr"):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
        opt = (optim or (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3)))(model.parameters())
        cfg = SparsityConfig(method=method, density=density, dense_last=True, **kw)
        engine = MaskEngine(model, opt, cfg, 40, torch.Generator().manual_seed(seed))
        engine.begin()
        execution = SparseExecution(model, engine, mode, batch=8)
        out.append((model, opt, engine, execution))
    return out


def _step(model, opt, engine, execution, x, y):
    execution.before_forward(None, None)
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    execution.after_backward(None, None, None)  # CSR-written gradients: the engine skips its own mask
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    engine.step()
    return loss.detach(), grads


def test_gather_active_forward_and_scatter_backward():
    w = torch.randn(3, 4, requires_grad=True)
    mask = torch.rand(3, 4) < 0.5
    flat = mask.flatten().nonzero().flatten()
    v = GatherActive.apply(w, flat)
    assert torch.equal(v, w.detach()[mask])
    g = torch.randn(v.shape)
    v.backward(g)
    expect = torch.zeros(12)
    expect[flat] = g
    assert torch.equal(w.grad, expect.view(3, 4))


def test_csr_steps_equal_the_masked_path():
    (mm, mo, me, mx), (cm, co, ce, cx) = _pair(0.25)
    assert isinstance(cm[1], CsrLinear) and isinstance(cm[3], CsrLinear)
    assert type(mm[1]) is nn.Linear  # the masked run switched nothing
    paths = cx.paths()  # the last layer is kept dense (all-ones mask): it computes densely
    assert paths == {"1": "csr", "3": "csr", "5": "masked"} if "5" in paths else paths == {"1": "csr", "3": "csr"}
    assert mx.paths() == {}
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(8, 20, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        lm, gm = _step(mm, mo, me, mx, x, y)
        lc, gc = _step(cm, co, ce, cx, x, y)
        torch.testing.assert_close(lc, lm)
        for name, layer in me.masks.items():
            # the CSR gradient exists only at active positions and equals the masked path's there
            assert torch.equal(gc[name][~layer], torch.zeros_like(gc[name][~layer]))
            torch.testing.assert_close(gc[name][layer], gm[name][layer])
    for (name, pm), (_, pc) in zip(mm.named_parameters(), cm.named_parameters()):
        torch.testing.assert_close(pc, pm)
        if name in ce.masks:  # inactive weights exactly 0 after SGD momentum + weight decay
            assert torch.equal(pc.detach()[~ce.masks[name]], torch.zeros(int((~ce.masks[name]).sum())))


@pytest.mark.skipif(native_kernels() is None, reason="native kernels unavailable (no C compiler)")
def test_fused_csr_linear_is_the_unfused_composition_bit_for_bit():
    """``FusedCsrLinear`` (one autograd node, unchecked native calls) gives exactly the numbers of
    ``GatherActive`` + ``SparseLinearFunction`` on the native backend: losses, gradients, weights."""
    fm, fo, fe, fx = _pair(0.25, method="set", delta_t=2, t_end=0.9)[1]  # mask changes: the plans rebuild
    um, uo, ue, ux = _pair(0.25, method="set", delta_t=2, t_end=0.9)[1]
    assert all(p.fused for p in fx.plans.values())
    for p in ux.plans.values():
        p.fused = False
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        x, y = torch.randn(8, 20, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        lf, gf = _step(fm, fo, fe, fx, x, y)
        lu, gu = _step(um, uo, ue, ux, x, y)
        assert torch.equal(lf, lu)
        assert all(torch.equal(gf[n], gu[n]) for n in gf)
    assert all(p.rebuilds > 1 for p in fx.plans.values() if p.path == "csr")
    assert sum(p.path == "csr" for p in fx.plans.values()) == 2
    assert all(torch.equal(a, b) for a, b in zip(fm.parameters(), um.parameters()))


@pytest.mark.skipif(native_kernels() is None, reason="native kernels unavailable (no C compiler)")
def test_fused_path_refuses_inputs_it_was_not_checked_for():
    """The fused node skips per-call checks; an input that is not float32 on the CPU takes the checked
    path, which raises a clear error (as F.linear would) instead of reading memory of the wrong type."""
    cm, _, _, cx = _pair(0.25)[1]
    cx.before_forward(None, None)
    with pytest.raises((ValueError, RuntimeError), match="float32|dtype"):
        cm(torch.randn(4, 20, dtype=torch.float64))


def test_mask_change_rebuilds_the_structure():
    (mm, _, me, _), (cm, _, ce, cx) = _pair(0.5)
    plan = cx.plans["1"]
    x = torch.randn(5, 20)
    cm(x)
    assert plan.rebuilds == 1
    new = torch.zeros(16, 20, dtype=torch.bool)
    new[:, :3] = True
    for engine, model in ((me, mm), (ce, cm)):
        engine.set_mask("1.weight", new)
        with torch.no_grad():
            model[1].weight.add_(new.float())  # a visible change at the new active entries
    torch.testing.assert_close(cm(x), mm(x))
    assert plan.rebuilds == 2 and plan.structure.nnz == 48
    cm(x)
    assert plan.rebuilds == 2  # unchanged mask: no rebuild


def test_dense_gradient_steps_run_the_dense_product():
    """RigL reads dense gradients in its update window: that step computes them, others do not."""
    _, (cm, co, ce, cx) = _pair(0.25, method="rigl", delta_t=3, t_end=1.0)
    x, y = torch.randn(8, 20), torch.randint(0, 3, (8,))
    seen = []
    for _ in range(6):
        dense = ce.needs_dense_grad()
        _, g = _step(cm, co, ce, cx, x, y)
        inactive = ~ce.masks["1.weight"] if not ce.last_step.updated else None
        seen.append(dense)
        if dense and inactive is not None:
            assert g["1.weight"][inactive].abs().sum() > 0  # gradients of inactive weights were computed
        elif not dense:
            assert cx.flags.dense_step is False
    assert any(seen) and not all(seen)


def test_the_engine_skips_its_gradient_mask_exactly_for_csr_computed_gradients():
    _, (cm, co, ce, cx) = _pair(0.25)
    told = []
    ce.premasked = told.append
    x, y = torch.randn(8, 20), torch.randint(0, 3, (8,))
    _step(cm, co, ce, cx, x, y)
    assert [{id(p) for p in ps} for ps in told] == [{id(cm[1].weight), id(cm[3].weight)}]  # not the dense layer
    told.clear()
    cx.before_forward(None, None)
    cx.flags.dense_step = True  # a consumer reads inactive gradients: dense products, nothing premasked
    cm(x).sum().backward()
    cx.after_backward(None, None, None)
    assert told == []
    cx.before_forward(None, None)
    with torch.no_grad():  # an evaluation forward (CSR, no autograd) promises nothing about gradients
        cm(x)
    cx.after_backward(None, None, None)
    assert told == []


def test_components_can_ask_for_dense_gradients():
    class Wants(Component):
        def needs_dense_grad(self, state):
            return True

    (_, _, _, _), (cm, _, ce, _) = _pair(0.25)
    cx = SparseExecution(cm, ce, "csr", 8, consumers=[Wants()])  # re-plans the switched layers
    cx.before_forward(None, None)
    assert cx.flags.dense_step
    x = torch.randn(4, 20)
    cm(x).sum().backward()
    assert (cm[1].weight.grad[~ce.masks["1.weight"]] != 0).any()
    with torch.no_grad():  # evaluation never needs gradients: CSR even on a dense-gradient step
        assert cx.plans["1"].current() is not None


def test_auto_keeps_dense_and_high_density_layers_masked():
    (_, _, _, _), (cm, _, ce, _) = _pair(0.9)
    cx = SparseExecution(cm, ce, "auto", batch=8)
    assert set(cx.paths().values()) == {"masked"}
    cx2 = SparseExecution(cm, ce, "masked", batch=8)
    assert cx2.plans == {} and type(cm[1]) is nn.Linear  # masked switches layers back


def test_disable_restores_plain_layers():
    _, (cm, _, _, _) = _pair(0.25)
    disable_sparse_execution(cm)
    assert type(cm[1]) is nn.Linear and not hasattr(cm[1], "csr_plan")


def test_bad_execution_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="sparsity.execution"):
        SparsityConfig(method="static", density=0.5, execution="fast")


@pytest.mark.skipif(native_kernels() is None, reason="native sparse convolution kernels unavailable")
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_csr_step_equals_masked_conv(stride):
    models = []
    side = (6 + 2 - 3) // stride + 1
    for mode in ("masked", "csr"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=stride),
                              nn.Flatten(), nn.Linear(8 * side * side, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        engine = MaskEngine(model, opt, SparsityConfig(method="static", density=0.1, dense_last=True), 10,
                            torch.Generator().manual_seed(0))
        engine.begin()
        models.append((model, opt, engine, SparseExecution(model, engine, mode, batch=4)))
    assert isinstance(models[1][0][2], CsrConv2d)
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 4, (4,))
    for _ in range(3):
        (lm, gm), (lc, gc) = (_step(*m, x, y) for m in models)
        torch.testing.assert_close(lc, lm)
        mask = models[1][2].masks["2.weight"]
        torch.testing.assert_close(gc["2.weight"][mask], gm["2.weight"][mask])
    for pm, pc in zip(models[0][0].parameters(), models[1][0].parameters()):
        torch.testing.assert_close(pc, pm, rtol=1e-4, atol=1e-5)


SMALL = ["dataset=digits", "model=mlp", "hidden=64,64", "tasks=2", "method=derpp", "buffer_size=100",
         "batch_size=16", "replay_batch_size=16", "epochs=2", "lr=0.05", "progress=false", "seed=1",
         "checkpoint.at_task_end=false", "checkpoint.keep_model=false", "sparsity.density=0.1",
         "sparcl.tdm=true", "sparcl.ddr=true", "sparcl.dgm=true"]


@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_sparcl_run_agrees_across_execution_paths(tmp_path, regrow):
    """A whole SparCL-DER++ run (TDM + DDR + DGM) on the CSR path matches the masked path: same final
    density, masks of the same size, accuracy within float-summation noise."""
    out = {}
    for mode in ("masked", "csr"):
        run = build_run(make_config(TrainConfig, None, [*SMALL, f"sparsity.execution={mode}",
                                                        f"sparcl.tdm_regrow={regrow}"]))
        summary = Trainer(run, tmp_path / mode, stream_out=lambda *a: None).fit()
        out[mode] = (run, summary)
    (rm, sm), (rc, sc) = out["masked"], out["csr"]
    assert sc["execution"] == {"hidden.0": "csr", "hidden.1": "csr"} and sm["execution"] == {}
    assert sc["density"]["layers"] == sm["density"]["layers"]
    assert abs(sc["final_avg_acc"]["class_il"] - sm["final_avg_acc"]["class_il"]) < 3.0
    assert sc["flops"] == pytest.approx(sm["flops"], rel=0.02)
    agree = [(rc.engine.masks[n] == rm.engine.masks[n]).float().mean() for n in rm.engine.masks]
    assert min(agree) > 0.9  # same masks up to decisions flipped by float noise


def test_gradient_clipping_sees_only_active_gradients_on_both_paths(tmp_path):
    """``grad_clip`` clips the norm of what the optimizer applies: on the masked path the loop has the
    engine mask the gradients first, so the clipped steps equal the CSR path's (whose inactive gradients
    are exactly 0) instead of being shrunk by the norm of gradients that are then thrown away."""
    base = ["dataset=digits", "model=mlp", "hidden=64,64", "tasks=1", "method=sgd", "batch_size=16", "epochs=1",
            "lr=0.1", "progress=false", "seed=3", "checkpoint.at_task_end=false", "checkpoint.keep_model=false",
            "sparsity.method=static", "sparsity.density=0.1", "grad_clip=0.05"]
    weights = {}
    for mode in ("masked", "csr"):
        run = build_run(make_config(TrainConfig, None, [*base, f"sparsity.execution={mode}"]))
        Trainer(run, tmp_path / mode, stream_out=lambda *a: None).fit()
        weights[mode] = {k: v.clone() for k, v in run.model.state_dict().items()}
    for k, w in weights["masked"].items():
        torch.testing.assert_close(weights["csr"][k], w, rtol=1e-4, atol=1e-5, msg=k)
