"""``kernels.gpu``: the 2:4 pattern check, why a weight cannot run semi-structured, the per-layer path
choice, the CSR inference Linear (numerically, on CPU), the in-place conversion and ``sparsecl eval
--kernels``; the 2:4 numerics need a CUDA GPU of compute capability 8.0+ and are skipped without one."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecl import cli
from sparsecl.kernels.execution import CsrLinear
from sparsecl.kernels.gpu import (
    GPU_CSR_MAX_DENSITY,
    SEMI_MIN_DIM,
    TorchCsrLinear,
    choose_gpu_path,
    is_2to4,
    semi_structured_problem,
    sparsify_for_gpu,
)


def two_four(rows: int, cols: int, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """A random weight with exactly 2 nonzeros in every group of 4 along the input dimension."""
    w = torch.randn(rows, cols, generator=gen)
    keep = torch.rand(rows, cols // 4, 4, generator=gen).argsort(-1) < 2
    return (w * keep.reshape(rows, cols)).to(dtype)


def test_is_2to4_exact_cases():
    assert is_2to4(torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]]))
    assert is_2to4(torch.zeros(2, 8))  # fewer than 2 per group is still 2:4-compressible
    assert not is_2to4(torch.tensor([[1.0, 2.0, 3.0, 0.0]]))  # 3 of 4
    assert not is_2to4(torch.ones(2, 6))  # input dimension not a multiple of 4
    assert not is_2to4(torch.ones(4))
    assert is_2to4(two_four(8, 16, torch.Generator().manual_seed(0)))


def test_semi_structured_problem_names_the_reason():
    gen = torch.Generator().manual_seed(0)
    w = two_four(64, 64, gen, torch.float16)
    assert "CUDA device" in semi_structured_problem(w)
    assert "compute capability 8.0+" in semi_structured_problem(w, capability=(7, 5))
    assert semi_structured_problem(w, capability=(9, 0)) is None
    assert "not 2:4" in semi_structured_problem(torch.ones(64, 64, dtype=torch.float16), capability=(9, 0))
    assert "multiples of" in semi_structured_problem(two_four(48, 64, gen, torch.float16), capability=(9, 0))
    assert "not torch.float64" in semi_structured_problem(two_four(64, 64, gen, torch.float64), capability=(9, 0))


def test_choose_gpu_path_by_pattern_shape_and_density():
    big, small = SEMI_MIN_DIM, SEMI_MIN_DIM // 2
    assert choose_gpu_path(big, big, big, 0.5, two_four=True) == "semi-structured"
    assert choose_gpu_path(big, big, small, 0.5, two_four=True) == "dense"  # a small batch: 2:4 lost
    assert choose_gpu_path(big, big, big, 0.5, two_four=False) == "dense"
    assert choose_gpu_path(4096, 4096, 32, GPU_CSR_MAX_DENSITY, two_four=False) == "csr"
    assert choose_gpu_path(4096, 4096, 32, 0.06, two_four=False) == "dense"
    assert choose_gpu_path(1024, 1024, 32, 0.01, two_four=False) == "dense"  # too small for cuSPARSE to pay
    assert choose_gpu_path(8, 8, 1, 0.9, two_four=False, path="csr") == "csr"  # forced
    with pytest.raises(ValueError, match="unknown GPU path"):
        choose_gpu_path(8, 8, 1, 0.5, False, path="cuda")
    with pytest.raises(ValueError, match="density"):
        choose_gpu_path(8, 8, 1, 1.5, False)


def test_torch_csr_linear_equals_the_dense_layer():
    gen = torch.Generator().manual_seed(1)
    lin = nn.Linear(12, 5)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(5, 12, generator=gen) < 0.3)
    csr = TorchCsrLinear.from_linear(lin)
    x = torch.randn(2, 3, 12, generator=gen)
    torch.testing.assert_close(csr(x), F.linear(x, lin.weight, lin.bias))
    assert csr.weight.layout == torch.sparse_csr
    assert csr.weight.values().numel() == int((lin.weight != 0).sum())
    nobias = TorchCsrLinear(lin.weight, None)
    torch.testing.assert_close(nobias(x), F.linear(x, lin.weight))


def test_sparsify_for_gpu_converts_in_place_and_keeps_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(32, 16) < 0.1)
    x = torch.randn(7, 16)
    want = model(x)
    chosen = sparsify_for_gpu(model, batch=7, path="csr", skip=lambda name, layer: layer.out_features == 4)
    assert chosen == {"0": "csr"} and isinstance(model[0], TorchCsrLinear) and type(model[2]) is nn.Linear
    torch.testing.assert_close(model(x), want)
    trained = nn.Sequential(nn.Linear(16, 8))  # as the CPU training path leaves a layer: switched to CsrLinear
    trained[0].__class__, trained[0].csr_plan = CsrLinear, None
    assert sparsify_for_gpu(trained, batch=7, path="csr") == {"0": "csr"} and isinstance(trained[0], TorchCsrLinear)
    small = nn.Sequential(nn.Linear(16, 8))
    assert sparsify_for_gpu(small, batch=7) == {"0": "dense"}  # auto: small layers stay dense
    with pytest.raises(ValueError, match="semi-structured: needs a CUDA device"):
        sparsify_for_gpu(small, batch=7, path="semi-structured")


def test_eval_runs_the_sparse_layers_on_csr_kernels(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "dataset=digits", "model=mlp", "hidden=1024,32", "epochs=1", "batch_size=32",
                     "progress=false", "seed=0", "sparsity.method=static", "sparsity.density=0.1",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--json"]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", str(out), "--kernels", "csr", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got["kernels"].values()) == {"csr"} and len(got["kernels"]) == 3  # CPU: the native CSR modules
    assert got["avg_class_il"] == pytest.approx(dense["avg_class_il"], abs=0.2)  # same model, other kernels
    assert cli.main(["eval", str(out), "--kernels", "auto", "--json"]) == 0
    auto = json.loads(capsys.readouterr().out)["kernels"]
    # the cost model: the 64 -> 1024 layer pays at batch 1000, the small ones and the dense classifier do not
    assert auto == {"hidden.0": "csr", "hidden.1": "masked", "classifier": "masked"}
    assert cli.main(["eval", str(out), "--kernels", "semi-structured"]) == 2
    assert "needs --device cuda" in capsys.readouterr().err
    assert cli.main(["eval", str(out), "--quantize", "dynamic-int8", "--kernels", "csr"]) == 2
    assert "--quantize runs on CPU" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["eval", str(out), "--device", "cuda"]) == 2
        assert "no CUDA GPU is available" in capsys.readouterr().err


needs_sm80 = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                                reason="2:4 semi-structured kernels need a CUDA GPU of compute capability 8.0+")


@needs_sm80
def test_semi_structured_linear_matches_dense_on_gpu():
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(256, 128).cuda().half()
    with torch.no_grad():
        lin.weight.copy_(two_four(128, 256, gen, torch.float16))
    x = torch.randn(64, 256, generator=gen).cuda().half()
    want = lin(x)
    holder = nn.Sequential(lin)
    assert sparsify_for_gpu(holder, batch=64, path="semi-structured") == {"0": "semi-structured"}
    torch.testing.assert_close(holder(x), want, rtol=1e-2, atol=1e-2)
