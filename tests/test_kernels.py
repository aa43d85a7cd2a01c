"""Truly sparse CSR execution: exact structures, reference equivalence with the masked dense layer
(forward, input/weight/bias gradients, SGD-momentum and AdamW trajectories), mask rebuilds with optimizer
state carried over, model conversion round trips, path choice, backend fallback, and the direct sparse
convolution (same checks against F.conv2d on the masked weight)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.kernels import (
    SparseConv2d,
    SparseLinear,
    choose_conv_path,
    choose_path,
    densify_model,
    remap_optimizer_state,
    sparse_masks,
    sparsify_model,
)
from sparsecl.kernels import backends as backends_mod
from sparsecl.kernels.backends import BACKENDS, resolve_backend
from sparsecl.kernels.csr import position_map, structure_from_mask
from sparsecl.kernels.native import NativeBuildError, load_native, native_kernels
from sparsecl.kernels.paths import PATH_CHOICES
from sparsecl.models.mlp import MLP

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")

HAVE_NATIVE = native_kernels() is not None
# "torch" always; "native" wherever the C kernels compiled (gcc is part of the dev/CI image). A machine
# without a compiler still runs every test on "torch" plus the fallback tests below.
BACKEND_NAMES = ["torch"] + (["native"] if HAVE_NATIVE else [])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_linear(in_f: int, out_f: int, seed: int, dtype=torch.float32) -> nn.Linear:
    lin = nn.Linear(in_f, out_f, dtype=dtype)
    g = _gen(seed)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=g, dtype=dtype))
        lin.bias.copy_(torch.randn(out_f, generator=g, dtype=dtype))
    return lin


def _mask(out_f: int, in_f: int, density: float, seed: int) -> torch.Tensor:
    return torch.rand(out_f, in_f, generator=_gen(seed)) < density


# ----------------------------------------------------------------------------------- CSR structure
def test_structure_of_a_tiny_mask_is_exact():
    mask = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    s = structure_from_mask(mask)
    assert s.crow.tolist() == [0, 2, 2, 4]
    assert s.col.tolist() == [0, 2, 1, 2]
    assert s.rows().tolist() == [0, 0, 2, 2]
    # W^T (= CSC of W): column 0 holds nz 0; column 1 holds nz 2; column 2 holds nz 1 then nz 3
    assert s.t_crow.tolist() == [0, 1, 2, 4]
    assert s.t_col.tolist() == [0, 2, 0, 2]
    assert s.perm.tolist() == [0, 2, 1, 3]
    assert s.flat_index().tolist() == [0, 2, 7, 8]
    assert s.col.dtype == torch.int32


def test_position_map_marks_dropped_entries():
    old = structure_from_mask(torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool))
    new = structure_from_mask(torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool))
    # old nz: (0,0) (0,1) (1,1) (1,2); new nz: (0,0) (0,2) (1,1)
    assert position_map(old, new).tolist() == [0, -1, 2, -1]
    empty = structure_from_mask(torch.zeros(2, 3, dtype=torch.bool))
    assert position_map(old, empty).tolist() == [-1, -1, -1, -1]


def test_mask_must_be_2d_bool():
    with pytest.raises(ValueError, match="2-D bool"):
        structure_from_mask(torch.ones(2, 3))


# ----------------------------------------------------------------------------------- exact numbers
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_tiny_layer_exact_forward_and_gradients(backend):
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        lin.bias.copy_(torch.tensor([0.5, -1.0]))
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    layer = SparseLinear.from_dense(lin, mask, backend=backend)
    assert layer.values.tolist() == [1.0, 3.0, 5.0]
    x = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]], requires_grad=True)
    y = layer(x)
    # y = x W^T + b with W = [[1, 0, 3], [0, 5, 0]]
    assert y.tolist() == [[4.5, 4.0], [-0.5, -1.0]]
    y.backward(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # gx = gy W; gW at (0,0), (0,2), (1,1) = sum_b gy[b, i] x[b, j]; gb = sum_b gy
    assert x.grad.tolist() == [[1.0, 0.0, 3.0], [0.0, 5.0, 0.0]]
    assert layer.values.grad.tolist() == [1.0, 1.0, 0.0]
    assert layer.bias.grad.tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------------- reference equivalence
CASES = [  # (out, in, density, batch)
    (7, 5, 0.5, 3),
    (30, 20, 1.0, 37),  # dense mask; batch with a remainder of 16-lane blocks
    (64, 100, 0.1, 130),
    (33, 17, 0.3, 1),
    (40, 24, 0.05, 64),
]


def _reference(layer: nn.Module, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaf copies of the masked dense weight and the bias."""
    return (layer.weight.detach() * mask).requires_grad_(), layer.bias.detach().clone().requires_grad_()


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("out_f,in_f,density,batch", CASES)
def test_forward_and_gradients_match_masked_dense(backend, out_f, in_f, density, batch):
    lin = _random_linear(in_f, out_f, seed=out_f)
    mask = _mask(out_f, in_f, density, seed=in_f)
    mask[out_f // 2] = False  # a row with no nonzeros
    layer = SparseLinear.from_dense(lin, mask, backend=backend)
    w_ref, b_ref = _reference(lin, mask)
    x = torch.randn(batch, in_f, generator=_gen(1)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    gy = torch.randn(batch, out_f, generator=_gen(2))

    y, y_ref = layer(x), F.linear(x_ref, w_ref, b_ref)
    y.backward(gy)
    y_ref.backward(gy)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    assert layer.values.grad.shape == (layer.nnz,)  # never a dense weight gradient
    torch.testing.assert_close(layer.values.grad, w_ref.grad[mask], **tol)
    torch.testing.assert_close(layer.bias.grad, b_ref.grad, **tol)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_leading_dims_no_bias_and_no_input_grad(backend):
    lin = nn.Linear(12, 9, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(9, 12, generator=_gen(0)))
    mask = _mask(9, 12, 0.4, seed=1)
    layer = SparseLinear.from_dense(lin, mask, backend=backend)
    assert layer.bias is None
    x = torch.randn(2, 5, 12, generator=_gen(2))  # no requires_grad: the input gradient is skipped
    y = layer(x)
    y.square().sum().backward()
    w_ref = (lin.weight.detach() * mask).requires_grad_()
    y_ref = x @ w_ref.t()
    y_ref.square().sum().backward()
    assert y.shape == (2, 5, 9)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.values.grad, w_ref.grad[mask], rtol=1e-5, atol=1e-5)


def test_empty_layer_outputs_bias_and_zero_gradients():
    lin = _random_linear(4, 3, seed=0)
    layer = SparseLinear.from_dense(lin, torch.zeros(3, 4, dtype=torch.bool))
    x = torch.randn(5, 4, generator=_gen(1), requires_grad=True)
    y = layer(x)
    assert torch.equal(y, lin.bias.detach().expand(5, 3))
    y.sum().backward()
    assert layer.values.grad.shape == (0,)
    assert torch.equal(x.grad, torch.zeros(5, 4))


def test_float64_runs_on_torch_backend_and_matches():
    lin = _random_linear(10, 6, seed=3, dtype=torch.float64)
    mask = _mask(6, 10, 0.5, seed=4)
    layer = SparseLinear.from_dense(lin, mask)
    assert resolve_backend("auto", layer.structure, layer.values) is BACKENDS.get("torch")
    x = torch.randn(4, 10, generator=_gen(5), dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.linear(x, lin.weight * mask, lin.bias), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not HAVE_NATIVE, reason="native kernels did not compile here")
@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (7, 9), (33, 65), (96, 784), (40, 8), (8, 40)])
def test_native_transpose_is_exact(shape):
    """Full 8 x 8 blocks, row and column tails, tiles cut by the 32 x 32 tiling: every element moved."""
    k = native_kernels()
    a = torch.randn(*shape, generator=_gen(0))
    out = k.transpose(a)
    assert out.is_contiguous() and torch.equal(out, a.t())
    view = torch.randn(shape[1], shape[0], generator=_gen(1)).t()  # a transpose view: returned as is, no copy
    assert k.transpose(view).data_ptr() == view.data_ptr()
    assert torch.equal(k.transpose(a.double()), a.double().t())  # other dtypes: torch's copy
    with pytest.raises(ValueError, match="2-D"):
        k.transpose(a.reshape(-1))


@pytest.mark.skipif(not HAVE_NATIVE, reason="native kernels did not compile here")
@pytest.mark.parametrize("shape,pad,np_", [((32, 4, 8, 8), (1, 1), 32), ((5, 3, 7, 9), (2, 1), 16),
                                          ((17, 2, 4, 4), (0, 0), 32), ((1, 1, 1, 1), (2, 2), 16)])
def test_native_planes_moves_are_exact(shape, pad, np_):
    """x [N, C, H, W] -> [C, H + 2ph, W + 2pw, Np] batch-innermost with zero border and zero batch lanes
    (every element written: the output starts as uninitialised memory), and back."""
    k = native_kernels()
    x = torch.randn(*shape, generator=_gen(3))
    n, c, h, w = shape
    ref = torch.zeros(c, h + 2 * pad[0], w + 2 * pad[1], np_)
    ref[:, pad[0] : pad[0] + h, pad[1] : pad[1] + w, :n] = x.permute(1, 2, 3, 0)
    for _ in range(2):  # the second call may get the first one's freed (non-zero) memory back
        planes = k.to_planes(x, pad, np_)
        assert torch.equal(planes, ref)
    back = k.from_planes(planes[:, pad[0] : pad[0] + h, pad[1] : pad[1] + w].contiguous(), n)
    assert back.is_contiguous() and torch.equal(back, x)
    with pytest.raises(ValueError, match="Np >= N"):
        k.to_planes(x, pad, n - 1)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_outputs_and_input_gradients_are_contiguous(backend):
    """A dense consumer gets the layout nn.Linear gives it (a transposed input made the next dense Linear
    4x slower), and ``.view`` on the output works."""
    layer = SparseLinear.from_dense(_random_linear(20, 12, seed=0), _mask(12, 20, 0.3, seed=1), backend=backend)
    x = torch.randn(6, 20, generator=_gen(2), requires_grad=True)
    y = layer(x)
    assert y.is_contiguous()
    y.view(-1).sum().backward()
    assert x.grad.is_contiguous()


def test_chained_sparse_layers_match_dense_chain():
    """The output of one SparseLinear feeds the next one (through a ReLU) and the gradients flow back."""
    torch.manual_seed(0)  # nn.Linear init inside MLP uses the global RNG; the test pins it
    model = MLP(20, (16, 12), 3)
    masks = {"hidden.0.weight": _mask(16, 20, 0.3, 1), "hidden.1.weight": _mask(12, 16, 0.3, 2)}
    ref = MLP(20, (16, 12), 3)
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, m in masks.items():
            ref.get_parameter(name).mul_(m)
    sparsify_model(model, masks, path="csr")
    x = torch.randn(8, 20, generator=_gen(3))
    F.cross_entropy(model(x), torch.arange(8) % 3).backward()
    F.cross_entropy(ref(x), torch.arange(8) % 3).backward()
    for i in range(2):
        sl, rl = model.hidden[i], ref.hidden[i]
        torch.testing.assert_close(sl.values.grad, rl.weight.grad[sl.mask()], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.classifier.weight.grad, ref.classifier.weight.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- optimizer trajectories
def _make_opt(name: str, params) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_optimizer_steps_match_masked_dense_reference(backend, opt_name):
    lin = _random_linear(24, 18, seed=7)
    mask = _mask(18, 24, 0.25, seed=8)
    layer = SparseLinear.from_dense(lin, mask, backend=backend)
    ref = _random_linear(24, 18, seed=7)
    with torch.no_grad():
        ref.weight.mul_(mask)
    opt, opt_ref = _make_opt(opt_name, layer.parameters()), _make_opt(opt_name, ref.parameters())
    g = _gen(9)
    for _ in range(5):
        x, t = torch.randn(16, 24, generator=g), torch.randn(16, 18, generator=g)
        for model, o in ((layer, opt), (ref, opt_ref)):
            o.zero_grad()
            F.mse_loss(model(x), t).backward()
        ref.weight.grad.mul_(mask)  # the masked-dense discipline: mask the gradient, step, re-mask
        opt.step()
        opt_ref.step()
        with torch.no_grad():
            ref.weight.mul_(mask)
    torch.testing.assert_close(layer.to_dense(), ref.weight.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bias.detach(), ref.bias.detach(), rtol=1e-5, atol=1e-6)
    assert all(t.numel() in (layer.nnz, 1, 18) for st in opt.state.values() for t in st.values())


# ----------------------------------------------------------------------------------- set_mask and state
def test_set_mask_keeps_survivors_zeroes_new_and_remaps_state():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    old_mask = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)  # values 1, 2, 5, 6
    layer = SparseLinear.from_dense(lin, old_mask)
    param = layer.values
    sgd = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    adam = torch.optim.AdamW([param], lr=0.1)
    layer(torch.ones(1, 3)).sum().backward()
    sgd.state[param]["momentum_buffer"] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    adam.step()
    adam.state[param]["exp_avg"] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    adam_values = param.detach().clone()

    new_mask = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)  # keep (0,0), (1,1); grow (0,2), (1,0)
    old_to_new = layer.set_mask(new_mask)
    assert old_to_new.tolist() == [0, -1, 3, -1]
    assert layer.values is param and param.grad is None
    assert param.tolist() == [adam_values[0].item(), 0.0, 0.0, adam_values[2].item()]
    assert torch.equal(layer.mask(), new_mask)
    for opt in (sgd, adam):
        remap_optimizer_state(opt, param, old_to_new, layer.nnz)
    assert sgd.state[param]["momentum_buffer"].tolist() == [10.0, 0.0, 0.0, 30.0]
    assert adam.state[param]["exp_avg"].tolist() == [1.0, 0.0, 0.0, 3.0]
    assert adam.state[param]["step"].item() == 1.0  # scalar state untouched
    layer(torch.ones(1, 3)).sum().backward()  # the rebuilt layer trains
    adam.step()
    assert param.grad.shape == (4,)


def test_state_dict_round_trip_across_different_structures():
    a = SparseLinear.from_dense(_random_linear(8, 6, seed=0), _mask(6, 8, 0.5, seed=1))
    b = SparseLinear.from_dense(_random_linear(8, 6, seed=2), _mask(6, 8, 0.2, seed=3))
    assert a.nnz != b.nnz
    b.load_state_dict(a.state_dict())
    assert b.nnz == a.nnz and torch.equal(b.to_dense(), a.to_dense()) and torch.equal(b.mask(), a.mask())
    x = torch.randn(3, 8, generator=_gen(4))
    assert torch.equal(b(x), a(x))
    assert set(a.state_dict()) == {"values", "bias", "crow_indices", "col_indices"}


# ----------------------------------------------------------------------------------- model conversion
def test_sparsify_densify_round_trip_is_exact():
    torch.manual_seed(0)  # nn.Linear's default init uses the global RNG; pinned for this test
    model = MLP(30, (20, 20), 4)
    masks = {"hidden.0.weight": _mask(20, 30, 0.3, 1), "hidden.1.weight": _mask(20, 20, 0.3, 2)}
    i, j = masks["hidden.0.weight"].nonzero()[0].tolist()
    with torch.no_grad():
        model.hidden[0].weight[i, j] = 0.0  # an active weight that is exactly zero
        for name, m in masks.items():
            model.get_parameter(name).mul_(m)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 30, generator=_gen(3))
    y_dense = model(x)

    chosen = sparsify_model(model, masks, path="csr")
    assert chosen == {"hidden.0": "csr", "hidden.1": "csr"}
    assert isinstance(model.hidden[0], SparseLinear) and isinstance(model.classifier, nn.Linear)
    torch.testing.assert_close(model(x), y_dense, rtol=1e-5, atol=1e-6)
    kept = sparse_masks(model)
    assert kept.keys() == masks.keys() and all(torch.equal(kept[k], masks[k]) for k in masks)

    weights = densify_model(model)
    assert sorted(weights) == ["hidden.0.weight", "hidden.1.weight"]
    assert not any(isinstance(m, SparseLinear) for m in model.modules())
    state = model.state_dict()
    assert state.keys() == dense_state.keys()
    assert all(torch.equal(state[k], dense_state[k]) for k in state)
    assert weights["hidden.0.weight"] is model.hidden[0].weight


def test_sparsify_masked_path_leaves_layers_alone():
    torch.manual_seed(0)
    model = MLP(10, (8,), 2)
    masks = {"hidden.0.weight": _mask(8, 10, 0.5, 0), "classifier.bias": torch.ones(2, dtype=torch.bool)}
    assert sparsify_model(model, masks, path="masked") == {"hidden.0": "masked"}
    assert type(model.hidden[0]) is nn.Linear


# ----------------------------------------------------------------------------------- path choice
def test_choose_path_honours_override_and_validates():
    assert choose_path(4, 4, 1, 1.0, 1, path="csr") == "csr"
    assert choose_path(4096, 4096, 128, 0.01, 2, path="masked") == "masked"
    with pytest.raises(ValueError, match="valid: auto, csr, masked"):
        choose_path(10, 10, 8, 0.5, path="cuda")
    with pytest.raises(ValueError, match="density"):
        choose_path(10, 10, 8, 1.5)
    with pytest.raises(ValueError, match="valid: auto, native, torch"):
        choose_path(10, 10, 8, 0.5, path="csr", backend="mkl")
    assert PATH_CHOICES == ("auto", "csr", "masked")


@pytest.mark.parametrize("threads", [1, 2])
def test_choose_path_auto_is_monotone_in_density(threads):
    densities = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
    for batch in (8, 32, 128, 512):
        paths = [choose_path(1000, 1000, batch, d, threads) for d in densities]
        first_csr = paths.index("csr") if "csr" in paths else len(paths)
        assert paths == ["masked"] * first_csr + ["csr"] * (len(paths) - first_csr), (batch, paths)
        assert paths[0] == "masked"


# ----------------------------------------------------------------------------------- backends
def test_choose_path_on_a_gpu_follows_the_gpu_rule():
    """The CPU cost models do not apply to a CUDA layer: CSR only for big layers at density <= 0.05."""
    assert choose_path(256, 784, 96, 0.05, 2) == "csr"  # the SparCL MLP's layer on CPU
    assert choose_path(256, 784, 96, 0.05, 2, device="cuda") == "masked"  # too small for cuSPARSE to pay
    assert choose_path(4096, 4096, 32, 0.05, device="cuda") == "csr"
    assert choose_path(4096, 4096, 32, 0.1, device="cuda") == "masked"
    assert choose_path(256, 784, 96, 0.5, device="cuda", path="csr") == "csr"  # forced


def test_native_build_failure_is_reported(tmp_path):
    with pytest.raises(NativeBuildError):
        load_native(tmp_path, compiler=str(tmp_path / "no-such-cc"))


@pytest.mark.skipif(not HAVE_NATIVE, reason="native kernels did not compile here")
def test_native_build_is_cached(tmp_path):
    first = load_native(tmp_path)
    (lib,) = tmp_path.glob("spk-*.so")
    stamp = lib.stat().st_mtime_ns
    second = load_native(tmp_path)
    assert lib.stat().st_mtime_ns == stamp and [p.name for p in tmp_path.iterdir()] == [lib.name]
    s = structure_from_mask(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))
    x_t = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # [in, B]
    for k in (first, second):  # W = [[2, 0], [3, 5]]: y_t = W x_t + [1, 0]
        assert k.spmm_t(s.crow, s.col, torch.tensor([2.0, 3.0, 5.0]), x_t, torch.tensor([1.0, 0.0])).tolist() == [
            [3.0, 5.0], [18.0, 26.0]]


def test_auto_backend_falls_back_to_torch_without_native(monkeypatch):
    monkeypatch.setattr(backends_mod, "native_kernels", lambda: None)
    lin = _random_linear(6, 5, seed=0)
    mask = _mask(5, 6, 0.5, seed=1)
    layer = SparseLinear.from_dense(lin, mask)
    assert resolve_backend("auto", layer.structure, layer.values) is BACKENDS.get("torch")
    x = torch.randn(3, 6, generator=_gen(2))
    torch.testing.assert_close(layer(x), F.linear(x, lin.weight * mask, lin.bias), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not apply"):
        resolve_backend("native", layer.structure, layer.values)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="valid: auto, native, torch"):
        SparseLinear(3, 2, torch.ones(2, 3, dtype=torch.bool), backend="mkl")


@pytest.mark.skipif(not HAVE_NATIVE, reason="native kernels did not compile here")
def test_native_wrappers_reject_wrong_dtypes():
    k = native_kernels()
    s = structure_from_mask(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="float32"):
        k.spmm_t(s.crow, s.col, torch.ones(4, dtype=torch.float64), torch.ones(2, 3), None)
    with pytest.raises(ValueError, match="int32"):
        k.sddmm_t(s.crow.long(), s.col, torch.ones(2, 3), torch.ones(2, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_masked_dense():
    lin = _random_linear(64, 48, seed=0).cuda()
    mask = _mask(48, 64, 0.1, seed=1).cuda()
    layer = SparseLinear.from_dense(lin, mask)
    w_ref, b_ref = _reference(lin, mask)
    x = torch.randn(32, 64, generator=_gen(2)).cuda().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    layer(x).square().sum().backward()
    F.linear(x_ref, w_ref, b_ref).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.values.grad, w_ref.grad[mask], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------- convolution
CONV_BACKENDS = ["torch"] + (["native"] if HAVE_NATIVE else [])  # "torch": the masked dense fallback
CONV_CASES = [  # (in, out, kernel, padding, batch, H, W, density)
    (3, 5, (3, 3), (1, 1), 2, 6, 7, 0.5),
    (4, 6, (3, 3), (0, 0), 17, 5, 5, 0.3),  # batch padded to 32 lanes
    (8, 8, (1, 1), (0, 0), 3, 4, 4, 0.5),
    (5, 7, (3, 1), (1, 0), 33, 9, 6, 1.0),
    (6, 4, (3, 3), (2, 2), 5, 5, 5, 0.4),
]


def _random_conv(cin: int, cout: int, kernel, padding, seed: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
    g = _gen(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(torch.randn(cout, generator=g))
    return conv


def _tiny_conv(**geometry) -> SparseConv2d:
    """1 -> 1 channel, 2x2 kernel [[1, 5], [7, 2]] of which w[0,0] = 1 and w[1,1] = 2 are kept, bias 0.5."""
    conv = nn.Conv2d(1, 1, 2, **geometry)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 5.0], [7.0, 2.0]]]]))
        conv.bias.fill_(0.5)
    return SparseConv2d.from_dense(conv, torch.tensor([[[[1, 0], [0, 1]]]], dtype=torch.bool))


def test_tiny_conv_exact():
    layer = _tiny_conv(padding=1)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)
    y = layer(x)
    # y[i, j] = 0.5 + 1 * xpad[i, j] + 2 * xpad[i+1, j+1], xpad = x padded by one zero on each side
    assert y[0, 0].tolist() == [[2.5, 4.5, 0.5], [6.5, 9.5, 2.5], [0.5, 3.5, 4.5]]
    y.sum().backward()
    # every x[i, j] meets both active weights exactly once: grad = 1 + 2; gw = sum of x; gb = 9 outputs
    assert x.grad[0, 0].tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert layer.values.grad.tolist() == [10.0, 10.0]
    assert layer.bias.grad.tolist() == [9.0]


STRIDED_CASES = [  # cin, cout, kernel, padding, batch, h, w, density, stride
    (3, 5, (3, 3), (1, 1), 5, 9, 7, 0.4, 2),  # odd sizes: the last input row/column is never read
    (8, 16, (3, 3), (1, 1), 33, 16, 16, 0.2, 2),  # 3 batch blocks of 16 lanes, the last partial
    (4, 6, (3, 3), (0, 0), 3, 8, 8, 0.5, 2),
    (4, 4, (3, 3), (2, 2), 4, 10, 11, 0.4, 3),
    (4, 4, (1, 1), (0, 0), 2, 6, 6, 0.6, 2),  # a 1x1 shortcut
]


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("cin,cout,kernel,padding,batch,h,w,density,stride",
                         [(*case, 1) for case in CONV_CASES] + STRIDED_CASES)
def test_conv_matches_masked_dense(backend, cin, cout, kernel, padding, batch, h, w, density, stride):
    conv = _random_conv(cin, cout, kernel, padding, seed=cin, stride=stride)
    mask = torch.rand(conv.weight.shape, generator=_gen(cout)) < density
    mask[cout // 2] = False  # an output channel with no nonzeros
    layer = SparseConv2d.from_dense(conv, mask, backend=backend)
    assert layer.uses_native() == (backend == "native")
    assert layer.to_dense_module().stride == (stride, stride)
    w_ref, b_ref = _reference(conv, mask)
    x = torch.randn(batch, cin, h, w, generator=_gen(1)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), F.conv2d(x_ref, w_ref, b_ref, stride=stride, padding=padding)
    gy = torch.randn(y_ref.shape, generator=_gen(2))
    y.backward(gy)
    y_ref.backward(gy)
    tol = dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    assert layer.values.grad.shape == (layer.nnz,)
    torch.testing.assert_close(layer.values.grad, w_ref.grad[mask], **tol)
    torch.testing.assert_close(layer.bias.grad, b_ref.grad, **tol)


def test_tiny_strided_conv_exact():
    layer = _tiny_conv(stride=2)
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4).requires_grad_()
    y = layer(x)
    # y[i, j] = 0.5 + 1 * x[2i, 2j] + 2 * x[2i+1, 2j+1]: windows {1, 6}, {3, 8}, {9, 14}, {11, 16}
    assert y[0, 0].tolist() == [[13.5, 19.5], [37.5, 43.5]]
    y.sum().backward()
    # each x[2i, 2j] meets w[0,0] once, each x[2i+1, 2j+1] meets w[1,1] once, the rest nothing
    assert x.grad[0, 0].tolist() == [[1, 0, 1, 0], [0, 2, 0, 2], [1, 0, 1, 0], [0, 2, 0, 2]]
    assert layer.values.grad.tolist() == [1 + 3 + 9 + 11, 6 + 8 + 14 + 16]
    assert layer.bias.grad.tolist() == [4.0]


@pytest.mark.parametrize("backend", CONV_BACKENDS)
def test_conv_sgd_steps_match_masked_dense_reference(backend):
    conv, ref = (_random_conv(4, 6, (3, 3), (1, 1), seed=5) for _ in range(2))
    mask = torch.rand(conv.weight.shape, generator=_gen(6)) < 0.3
    with torch.no_grad():
        ref.weight.mul_(mask)
    layer = SparseConv2d.from_dense(conv, mask, backend=backend)
    opt, opt_ref = _make_opt("sgd", layer.parameters()), _make_opt("sgd", ref.parameters())
    g = _gen(7)
    for _ in range(3):
        x = torch.randn(5, 4, 6, 6, generator=g)
        for model, o in ((layer, opt), (ref, opt_ref)):
            o.zero_grad()
            model(x).square().mean().backward()
        ref.weight.grad.mul_(mask)
        opt.step()
        opt_ref.step()
        with torch.no_grad():
            ref.weight.mul_(mask)
    torch.testing.assert_close(layer.to_dense(), ref.weight.detach(), rtol=1e-5, atol=1e-6)


def test_conv_set_mask_keeps_survivors():
    conv = _random_conv(2, 3, (3, 3), (1, 1), seed=0)
    old = torch.rand(conv.weight.shape, generator=_gen(1)) < 0.5
    new = torch.rand(conv.weight.shape, generator=_gen(2)) < 0.5
    layer = SparseConv2d.from_dense(conv, old)
    old_to_new = layer.set_mask(new)
    dense = layer.to_dense()
    assert torch.equal(layer.mask(), new)
    assert torch.equal(dense[old & new], conv.weight.detach()[old & new])
    assert torch.equal(dense[new & ~old], torch.zeros(int((new & ~old).sum())))
    assert int((old_to_new >= 0).sum()) == int((old & new).sum())


def test_conv_geometry_support_and_choice():
    strided = _random_conv(4, 4, (3, 3), (1, 1), seed=0, stride=2)
    uneven = _random_conv(4, 4, (3, 3), (1, 1), seed=0, stride=(2, 1))
    plain = _random_conv(4, 4, (3, 3), (1, 1), seed=0)
    with pytest.raises(ValueError, match="equal strides"):
        SparseConv2d.from_dense(uneven, torch.ones(4, 4, 3, 3, dtype=torch.bool))
    assert choose_conv_path(uneven, 0.05, path="csr") == "masked"
    native = "csr" if HAVE_NATIVE else "masked"
    assert choose_conv_path(strided, 0.05) == native
    assert choose_conv_path(strided, 0.18) == "masked"  # strided convs have the lower density cap
    assert choose_conv_path(plain, 0.18) == native
    assert choose_conv_path(plain, 0.05, backend="torch") == "masked"
    assert choose_conv_path(plain, 0.5) == "masked"
    assert choose_conv_path(plain, 0.05) == ("csr" if HAVE_NATIVE else "masked")
    assert choose_conv_path(plain, 0.5, path="csr") == ("csr" if HAVE_NATIVE else "masked")


def test_sparsify_conv_model_round_trip():
    torch.manual_seed(0)  # default init of the layers below uses the global RNG; pinned for this test
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    masks = {n: torch.rand(p.shape, generator=_gen(i)) < 0.1
             for i, (n, p) in enumerate(model.named_parameters()) if n.endswith("weight")}
    with torch.no_grad():
        for n, m in masks.items():
            model.get_parameter(n).mul_(m)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 8, 8, generator=_gen(9))
    y_dense = model(x)
    chosen = sparsify_model(model, masks, path="csr")
    expected_conv = "csr" if HAVE_NATIVE else "masked"
    assert chosen == {"0": expected_conv, "2": expected_conv, "5": "csr"}  # stride 2 included
    torch.testing.assert_close(model(x), y_dense, rtol=1e-5, atol=1e-5)
    densify_model(model)
    state = model.state_dict()
    assert state.keys() == dense_state.keys() and all(torch.equal(state[k], dense_state[k]) for k in state)
