"""Int8 quantisation: exact symmetric per-channel codes, the |w - dq(q(w))| <= s/2 bound, and quantize_model
(weight-int8 fake-quant, dynamic-int8 via torch.ao) leaving the original untouched and the outputs close."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from sparsecl.export import (
    QUANT_SCHEMES,
    channel_scales,
    dequantize_symmetric,
    fake_quantize_per_channel,
    model_size_bytes,
    quantize_model,
    quantize_symmetric,
)
from sparsecl.models import create_model


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sparsify(model: nn.Module, density: float, seed: int) -> nn.Module:
    """Zero all but an exact ``density`` fraction of every weight with dim >= 2 (random positions)."""
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                keep = torch.randperm(p.numel(), generator=g)[: round(density * p.numel())]
                mask = torch.zeros(p.numel(), dtype=torch.bool)
                mask[keep] = True
                p.copy_(torch.where(mask.view_as(p), p, torch.zeros_like(p)))
    return model


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- symmetric per-channel codes


def test_quantize_symmetric_exact_codes() -> None:
    w = torch.tensor([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0], [-3.0, 1.5, 0.01, 3.0]])
    scale = channel_scales(w)
    assert torch.equal(scale, torch.tensor([1.0, 0.0, 3.0]) / 127)
    q = quantize_symmetric(w, scale)
    # row 0: w / s = [127, -63.5, 31.75, 0] -> round half to even: -63.5 -> -64
    # row 1: s = 0 -> q = 0;  row 2: w / s = [-127, 63.5, 0.423, 127] -> 63.5 -> 64, 0.423 -> 0
    assert q.dtype == torch.int8
    assert q.tolist() == [[127, -64, 32, 0], [0, 0, 0, 0], [-127, 64, 0, 127]]
    assert torch.equal(dequantize_symmetric(q, scale)[1], torch.zeros(4))


@pytest.mark.parametrize("shape", [(7, 5), (16, 3, 3, 3), (4, 1, 5)])
@pytest.mark.parametrize("magnitude", [1e-4, 1.0, 300.0])
def test_dequantisation_error_within_half_a_step(shape: tuple[int, ...], magnitude: float) -> None:
    g = _gen(1)
    # a different range per channel, so a per-tensor scale would violate the per-channel bound
    per_channel = torch.rand(shape[0], *[1] * (len(shape) - 1), generator=g)
    w = torch.randn(shape, generator=g) * magnitude * per_channel
    scale = channel_scales(w)
    err = (w - fake_quantize_per_channel(w)).abs().flatten(1).amax(dim=1)
    # |w - q s| <= s / 2 exactly; the float32 product q * s adds at most |q s| 2^-24 <= 127 s 2^-24
    assert bool((err <= scale * (0.5 + 1e-5)).all())
    assert bool((err > 0).any())  # the bound is not met vacuously


def test_zero_weights_stay_exactly_zero() -> None:
    w = torch.randn(32, 50, generator=_gen(2))
    w[torch.rand(32, 50, generator=_gen(3)) < 0.9] = 0.0
    w_hat, step = fake_quantize_per_channel(w), channel_scales(w)[:, None].expand_as(w)
    assert bool((w_hat[w == 0] == 0).all())
    assert bool((w_hat[w.abs() > step / 2] != 0).all())  # only values under half a step round to 0


def test_fake_quantised_weights_requantise_to_the_same_codes() -> None:
    w = torch.randn(20, 30, generator=_gen(4))
    w_hat = fake_quantize_per_channel(w)
    q_hat, q = quantize_symmetric(w_hat, channel_scales(w_hat)), quantize_symmetric(w, channel_scales(w))
    assert torch.equal(q_hat, q)


def test_channel_scales_rejects_non_finite_and_1d() -> None:
    with pytest.raises(ValueError, match="inf/NaN"):
        channel_scales(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="dim >= 2"):
        channel_scales(torch.ones(3))


# ---------------------------------------------------------------- quantize_model


def test_unknown_scheme_lists_valid_ones() -> None:
    assert QUANT_SCHEMES.names() == ["dynamic-int8", "weight-int8"]
    with pytest.raises(ValueError, match="valid: dynamic-int8, weight-int8"):
        quantize_model(nn.Linear(2, 2, device="meta"), "int4")


def test_weight_int8_fake_quantises_linear_and_conv_only() -> None:
    model = _sparsify(create_model("cnn", (1, 12, 12), 10, generator=_gen(5)), 0.2, seed=6)
    before = _clone_state(model)
    qmodel = quantize_model(model, "weight-int8")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # original untouched
    assert not qmodel.training and list(qmodel.state_dict()) == list(before)
    for key, value in qmodel.state_dict().items():
        expected = fake_quantize_per_channel(before[key]) if key.endswith("weight") else before[key]
        assert torch.equal(value, expected), key
        if key.endswith("weight"):
            assert bool((value[before[key] == 0] == 0).all()), key  # the sparsity mask survives
    x = torch.rand(8, 1, 12, 12, generator=_gen(7))
    ref, out = model.eval()(x), qmodel(x)
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()


def test_dynamic_int8_replaces_linear_layers_within_the_bound() -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    model = _sparsify(create_model("mlp", (1, 8, 8), 10, hidden=(96, 48), generator=_gen(8)), 0.3, seed=9)
    before = _clone_state(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qmodel = quantize_model(model, "dynamic-int8")
    assert not [w for w in caught if "torch.ao.quantization is deprecated" in str(w.message)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    layers = dict(qmodel.named_modules())
    for name in ("hidden.0", "hidden.1", "classifier"):
        layer = layers[name]
        assert type(layer) is DynamicLinear, name
        qw = layer.weight()
        assert qw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        scale = qw.q_per_channel_scales().to(torch.float32)
        w = before[f"{name}.weight"]
        err = (qw.dequantize() - w).abs().amax(dim=1)
        assert bool((err <= scale * (0.5 + 1e-5)).all()), name
        assert bool((qw.dequantize()[w == 0] == 0).all()), name
    x = torch.rand(16, 1, 8, 8, generator=_gen(10))
    ref, out = model.eval()(x), qmodel(x)
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


def test_dynamic_int8_fake_quantises_convs() -> None:
    model = create_model("cnn", (1, 8, 8), 10, generator=_gen(11))
    qmodel = quantize_model(model, "dynamic-int8")
    assert torch.equal(qmodel.conv1.weight, fake_quantize_per_channel(model.conv1.weight))
    assert torch.equal(qmodel.conv2.bias, model.conv2.bias)
    assert type(qmodel.fc) is not nn.Linear


def test_model_size_bytes_shrinks_about_four_times_for_dynamic_int8() -> None:
    model = create_model("mlp", (1, 16, 16), 10, hidden=(128, 128), generator=_gen(12))
    assert model_size_bytes(model) == model_size_bytes(model.state_dict())
    fp32, int8 = model_size_bytes(model), model_size_bytes(quantize_model(model, "dynamic-int8"))
    n_weights = 256 * 128 + 128 * 128 + 128 * 10
    assert fp32 > 4 * (n_weights + 266) and 3.0 < fp32 / int8 < 4.0  # 1 byte per weight + overhead
    assert model_size_bytes(quantize_model(model, "weight-int8")) == fp32  # fake-quant stays fp32
