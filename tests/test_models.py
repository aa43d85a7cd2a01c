"""Backbones: a contract test over every registered model, plus exact counts, init and option checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsecl.models import MODELS, MLP, ModelOptions, ResNet18, SmallCNN, WideResNet, create_model
from sparsecl.models import register_model, reset_parameters
from sparsecl.registry import UnknownNameError

ALL = MODELS.names()

# The same architecture built by its plain constructor (PyTorch's default, global-RNG init), for
# reference equivalence with create_model's generator-driven init.
REFERENCE = {
    "mlp": lambda shape, k: MLP(shape[0] * shape[1] * shape[2], (256, 256), k),
    "cnn": lambda shape, k: SmallCNN(shape, k),
    "resnet18": lambda shape, k: ResNet18(shape[0], k, nf=64),
    "wrn": lambda shape, k: WideResNet(shape[0], k, depth=22, width=2),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_every_model_has_a_reference_constructor():
    assert sorted(REFERENCE) == ALL


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_contract_forward_backward(name, shape):
    model = create_model(name, shape, 7, generator=_gen(0))
    x = torch.randn(2, *shape, generator=_gen(1))
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 7
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert model.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_init_different_seed_differs(name):
    a = create_model(name, (3, 32, 32), 10, generator=_gen(3))
    b = create_model(name, (3, 32, 32), 10, generator=_gen(3))
    c = create_model(name, (3, 32, 32), 10, generator=_gen(4))
    _assert_same_state(a, b)
    weights = [(n, p) for n, p in a.named_parameters() if n.endswith("weight") and p.dim() > 1]
    other = dict(c.named_parameters())
    assert weights
    for pname, p in weights:
        assert not torch.equal(p, other[pname]), pname


@pytest.mark.parametrize("name", ALL)
def test_create_with_generator_leaves_global_rng_alone(name):
    before = torch.random.get_rng_state()
    create_model(name, (3, 32, 32), 10, generator=_gen(0))
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("name", ALL)
def test_generator_init_equals_pytorch_default_init(name):
    # torch.manual_seed(s) + default constructors must give bit-identical tensors (params AND buffers)
    # to create_model(generator=Generator().manual_seed(s)), and to create_model(generator=None) after
    # torch.manual_seed(s): same distributions, same draws, same order.
    shape = (3, 32, 32)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        reference = REFERENCE[name](shape, 10)
        torch.manual_seed(11)
        from_global = create_model(name, shape, 10)
    _assert_same_state(create_model(name, shape, 10, generator=_gen(11)), reference)
    _assert_same_state(from_global, reference)


def test_init_bounds_are_pytorchs():
    model = create_model("cnn", (1, 28, 28), 10, generator=_gen(0))
    # kaiming_uniform_(a=sqrt(5)): bound = sqrt(1/3) * sqrt(3 / fan_in) = 1 / sqrt(fan_in); bias the same.
    for layer, fan_in in [(model.conv2, 32 * 9), (model.fc, 64 * 7 * 7)]:
        bound = 1 / math.sqrt(fan_in)
        for t, fill in ((layer.weight, 0.99), (layer.bias, 0.8)):  # >= 64 draws: the extremes are near b
            assert t.abs().max() <= bound
            assert t.abs().max() > fill * bound
            assert t.min() < 0 < t.max()
    bn = create_model("resnet18", (3, 32, 32), 10, nf=4, generator=_gen(0)).bn1
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert bn.num_batches_tracked.item() == 0


def test_reset_parameters_rejects_unknown_stateful_modules():
    with pytest.raises(TypeError, match="LayerNorm"):
        reset_parameters(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), _gen(0))


@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "count"),
    [
        ("mlp", (1, 28, 28), {}, 269_322),  # 784*256+256 + 256*256+256 + 256*10+10
        ("mlp", (1, 28, 28), {"hidden": (300, 100)}, 266_610),  # LeNet-300-100
        ("mlp", (1, 28, 28), {"hidden": (1000, 1000)}, 1_796_010),  # 784-1000-1000-10
        ("cnn", (1, 28, 28), {}, 421_642),  # 320 + 18_496 + (3136*128+128) + 1_290
        ("cnn", (1, 28, 28), {"nf": 16}, 26_698),  # 80 + 1_168 + (784*32+32) + 330
        ("resnet18", (3, 32, 32), {}, 11_173_962),  # mammoth resnet18(nclasses=10, nf=64)
        ("resnet18", (3, 32, 32), {"nf": 20}, 1_094_750),  # the reduced ResNet-18
        ("wrn", (3, 32, 32), {}, 1_079_642),  # WRN-22-2, counted block by block
    ],
)
def test_exact_parameter_counts(name, shape, kwargs, count):
    assert _n_params(create_model(name, shape, 10, generator=_gen(0), **kwargs)) == count


def test_mlp_layers_and_hidden_linear_names():
    model = create_model("mlp", (1, 28, 28), 10, hidden=(300, 100), generator=_gen(0))
    names = model.hidden_linear_names()
    assert names == ["hidden.0", "hidden.1"]
    modules = dict(model.named_modules())
    assert [(modules[n].in_features, modules[n].out_features) for n in names] == [(784, 300), (300, 100)]
    assert (model.classifier.in_features, model.classifier.out_features) == (100, 10)


def test_cnn_flattened_size_follows_input_shape():
    assert create_model("cnn", (1, 28, 28), 10).fc.in_features == 64 * 7 * 7
    assert create_model("cnn", (3, 32, 32), 10).fc.in_features == 64 * 8 * 8
    assert create_model("cnn", (3, 30, 22), 10).fc.in_features == 64 * 7 * 5
    with pytest.raises(ValueError, match="4x4"):
        create_model("cnn", (1, 3, 28), 10)


def test_resnet18_residual_conv_names():
    model = create_model("resnet18", (3, 32, 32), 10, nf=8, generator=_gen(0))
    names = model.residual_conv_names()
    expected = [f"layer{s}.{b}.conv{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)]
    assert names == expected and len(names) == 16
    modules = dict(model.named_modules())
    assert all(modules[n].kernel_size == (3, 3) for n in names)
    # what is left out: the stem and exactly the three 1x1 projection shortcuts
    other_convs = sorted(n for n, m in modules.items() if isinstance(m, nn.Conv2d) and n not in names)
    assert other_convs == ["conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]


def test_wrn_residual_conv_names_and_shortcuts():
    model = create_model("wrn", (3, 32, 32), 10, depth=16, width=1, generator=_gen(0))
    names = model.residual_conv_names()
    assert names == [f"block{g}.{b}.conv{c}" for g in (1, 2, 3) for b in range(2) for c in (1, 2)]
    modules = dict(model.named_modules())
    other_convs = sorted(n for n, m in modules.items() if isinstance(m, nn.Conv2d) and n not in names)
    # width 1: the first group keeps 16 channels, so only groups 2 and 3 project
    assert other_convs == ["block2.0.shortcut", "block3.0.shortcut", "conv1"]
    assert len(create_model("wrn", (3, 32, 32), 10).residual_conv_names()) == 18  # 6n, n = 3


@pytest.mark.parametrize(("name", "kwargs"), [("resnet18", {"nf": 8}), ("wrn", {"width": 1, "depth": 10})])
def test_residual_nets_take_64x64_inputs(name, kwargs):
    model = create_model(name, (3, 64, 64), 200, generator=_gen(0), **kwargs)
    assert model(torch.randn(2, 3, 64, 64, generator=_gen(1))).shape == (2, 200)


def test_wrn_depth_is_validated():
    with pytest.raises(ValueError, match=r"6n \+ 4"):
        create_model("wrn", (3, 32, 32), 10, depth=20)
    with pytest.raises(ValueError, match=r"6n \+ 4"):
        create_model("wrn", (3, 32, 32), 10, depth=4)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        create_model("resnet50", (3, 32, 32), 10)
    message = str(err.value)
    assert "resnet50" in message
    assert all(name in message for name in ALL)


@pytest.mark.parametrize(
    ("name", "kwargs", "unused", "takes"),
    [
        ("mlp", {"nf": 32}, "nf", "hidden"),
        ("cnn", {"hidden": (10,)}, "hidden", "nf"),
        ("resnet18", {"depth": 28, "width": 4}, "depth, width", "nf"),
        ("wrn", {"nf": 20}, "nf", "depth, width"),
    ],
)
def test_options_a_model_does_not_take_are_rejected(name, kwargs, unused, takes):
    with pytest.raises(ValueError, match=f"option\\(s\\) {unused}; it takes: {takes}$"):
        create_model(name, (3, 32, 32), 10, **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"hidden": (0,)}, {"hidden": (256, -1)}, {"nf": 0}, {"width": 0}, {"depth": True}]
)
def test_model_options_are_validated(kwargs):
    with pytest.raises(ValueError):
        ModelOptions(**kwargs)


@pytest.mark.parametrize(("shape", "classes"), [((3, 32), 10), ((3, 0, 32), 10), ((3, 32, 32), 0)])
def test_shapes_are_validated(shape, classes):
    with pytest.raises(ValueError):
        create_model("mlp", shape, classes)


def test_register_model_rejects_undeclared_options():
    with pytest.raises(ValueError, match="unknown options"):
        register_model("never-registered", options=("dropout",))
    assert "never-registered" not in MODELS
