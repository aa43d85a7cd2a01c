"""Every registered method honours the engine contract; each method's own rule is checked by hand."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparsecl.registry import UnknownNameError
from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.distributions import budget
from sparsecl.sparse.engine import MaskEngine, StepInfo
from sparsecl.sparse.filters import select_layers
from sparsecl.sparse.masks import count_for_density, exact_floor
from sparsecl.sparse.methods import SPARSE_METHODS
from sparsecl.sparse.schedule import cubic_sparsity
from sparsecl.sparse.small_dense import count_params, match_width, target_param_count


def mlp(hidden: int = 16, seed: int = 0) -> nn.Module:
    model = nn.Sequential(nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))
    return _init(model, seed)


def cnn(seed: int = 0) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    return _init(model, seed)


def _init(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


MODELS = {"linear": (mlp, (12,)), "conv": (cnn, (3, 4, 4))}


def data(kind: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(8, *MODELS[kind][1], generator=g), torch.randint(0, 4, (8,), generator=g)


def loss_on(model: nn.Module, kind: str, step: int) -> torch.Tensor:
    x, y = data(kind, step)
    return F.cross_entropy(model(x), y)


def engine_for(model: nn.Module, opt: torch.optim.Optimizer, total: int, **kw) -> MaskEngine:
    return MaskEngine(model, opt, SparsityConfig(**kw), total_steps=total, generator=torch.Generator().manual_seed(0))


def step(engine: MaskEngine, model: nn.Module, opt: torch.optim.Optimizer, kind: str = "linear") -> StepInfo:
    opt.zero_grad(set_to_none=True)
    loss_on(model, kind, engine.step_count).backward()
    return engine.step()


def capture_after_optimizer(opt: torch.optim.Optimizer, store: dict) -> None:
    """Record the weights right after each optimizer step, i.e. before the engine prunes or regrows."""
    def hook(optimizer, args, kwargs):  # noqa: ANN001, ANN202
        store["w"] = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
    opt.register_step_post_hook(hook)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("method", SPARSE_METHODS.names())
def test_every_method_honours_the_engine_contract(method, kind):
    cls = SPARSE_METHODS.get(method)
    model = MODELS[kind][0]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    density = 1.0 if method == "dense" else 0.5
    engine = engine_for(model, opt, 12, method=method, density=density, delta_t=2, lth_rounds=2)
    assert isinstance(engine.train_multiplier, int) and engine.train_multiplier >= 1
    engine.begin(lambda: loss_on(model, kind, -1))
    for t in range(1, 13):
        info = step(engine, model, opt, kind)
        assert isinstance(info, StepInfo) and info.step == t and engine.last_step is info
        for name, mask in engine.masks.items():
            assert mask.dtype == torch.bool
            assert torch.count_nonzero(model.get_parameter(name).detach()[~mask]) == 0
    dens = engine.densities()
    assert set(dens) == {"overall", "layers"} and set(dens["layers"]) == set(engine.masks)
    assert set(engine.masks) <= {n for n, _ in model.named_parameters()}
    if cls.uses_masks:  # every sparse method ends at the target (GMP at 0.75 T, LTH after its last round)
        assert dens["layers"] == {n: count_for_density(m.numel(), 0.5) / m.numel() for n, m in engine.masks.items()}
        assert 0 < engine.model_density() < 1
    else:
        assert engine.masks == {} and dens["overall"] == 1.0
    again = engine_for(model, opt, 12, method=method, density=density, delta_t=2, lth_rounds=2)
    again.load_state_dict(engine.state_dict())
    assert again.densities() == dens and again.step_count == 12


def test_unknown_method_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid: dense, gmp, lth, magnitude, rigl, set, small_dense, snfs, snip, static"):
        SPARSE_METHODS.get("sparse_momentum")


def test_snip_mask_is_top_k_of_g_times_w():
    model = mlp()
    reference = copy.deepcopy(model)
    weights = [m.weight for m in reference if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(loss_on(reference, "linear", -1), weights)
    engine = engine_for(model, torch.optim.SGD(model.parameters(), lr=0.1), 10, method="snip", density=0.3,
                        init="dense")
    engine.begin(lambda: loss_on(model, "linear", -1))
    for layer, w, g in zip(engine.layers, weights, grads, strict=True):
        score = (g * w).abs().flatten()
        k = count_for_density(score.numel(), 0.3)
        expected = torch.zeros_like(score, dtype=torch.bool)
        expected[score.argsort(descending=True)[:k]] = True
        assert torch.equal(layer.mask.flatten(), expected), layer.name
        assert torch.equal(layer.param.detach(), w.detach() * layer.mask)


def test_snip_global_ranks_all_layers_together():
    model = mlp()
    reference = copy.deepcopy(model)
    weights = [m.weight for m in reference if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(loss_on(reference, "linear", -1), weights)
    engine = engine_for(model, torch.optim.SGD(model.parameters(), lr=0.1), 10, method="snip", density=0.2,
                        distribution="global")
    engine.begin(lambda: loss_on(model, "linear", -1))
    scores = torch.cat([(g * w).abs().flatten() for g, w in zip(grads, weights)])
    k = budget(engine.specs, 0.2)
    expected = torch.zeros_like(scores, dtype=torch.bool)
    expected[scores.argsort(descending=True)[:k]] = True
    assert torch.equal(torch.cat([layer.mask.flatten() for layer in engine.layers]), expected)


def test_rigl_drops_smallest_weights_and_grows_largest_gradients():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = engine_for(model, opt, 20, method="rigl", density=0.4, delta_t=3, drop_fraction=0.3,
                        drop_schedule="constant")
    engine.begin()
    for _ in range(2):
        step(engine, model, opt)
    old = [layer.mask.clone() for layer in engine.layers]
    w = [layer.param.detach().clone() for layer in engine.layers]  # RigL skips the step: the update sees these
    reference = copy.deepcopy(model)
    grads = torch.autograd.grad(loss_on(reference, "linear", 2),
                                [m.weight for m in reference if isinstance(m, nn.Linear)])
    info = step(engine, model, opt)
    assert info.updated and info.optimizer_skipped and info.dense_weight_grad
    for layer, m0, w0, g in zip(engine.layers, old, w, grads, strict=True):
        n = exact_floor(0.3 * int(m0.sum()))
        drop = torch.zeros_like(m0).view(-1)
        drop[w0.abs().masked_fill(~m0, float("inf")).view(-1).argsort()[:n]] = True  # n smallest active |w|
        drop = drop.view_as(m0)
        survivors = m0 & ~drop
        assert (layer.mask[survivors]).all(), layer.name
        grown = layer.mask & ~survivors
        candidates = ~survivors
        assert int(grown.sum()) == n
        rest = candidates & ~grown
        assert g.abs()[grown].min() >= g.abs()[rest].max(), layer.name  # the n largest |grad| were grown


def test_snfs_grows_by_momentum_of_the_dense_gradient():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8)
    engine = engine_for(model, opt, 20, method="snfs", density=0.4, delta_t=4, drop_fraction=0.3)
    engine.begin()
    assert engine.method.betas == [0.8, 0.8, 0.8]
    momentum = [torch.zeros_like(layer.param) for layer in engine.layers]
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss_on(model, "linear", engine.step_count).backward()
        for m, layer in zip(momentum, engine.layers):
            m.mul_(0.8).add_(layer.param.grad)  # dense gradient, before the engine masks it
        engine.step()
    state = engine.state_dict()["method_state"]["momentum"]
    assert all(torch.equal(a, b) for a, b in zip(state, momentum))
    adam = torch.optim.Adam(model.parameters(), betas=(0.7, 0.99))
    assert engine_for(model, adam, 20, method="snfs", density=0.4).method.betas == [0.7, 0.7, 0.7]
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    assert engine_for(model, plain, 20, method="snfs", density=0.4).method.betas == [0.9, 0.9, 0.9]


@pytest.mark.parametrize("distribution", ["uniform", "global"])
def test_gmp_follows_the_cubic_schedule_by_magnitude(distribution):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = engine_for(model, opt, 40, method="gmp", density=0.2, distribution=distribution, delta_t=5,
                        gmp_begin=0.1, gmp_end=0.6)
    engine.begin()
    assert engine.densities()["overall"] == 1.0  # starts dense
    after_opt: dict = {}
    capture_after_optimizer(opt, after_opt)
    sparse_w = {id(layer.param): i for i, layer in enumerate(engine.layers)}
    pruned_at = []
    for t in range(1, 41):
        old = [layer.mask.clone() for layer in engine.layers]
        info = step(engine, model, opt)
        last = max((u for u in (9, 14, 19, 24) if u <= t), default=0)  # density moves only when pruning
        if distribution == "uniform":  # s_f of a layer: its sparsity under the distribution (exact count)
            s_f = [1 - count_for_density(layer.numel, 0.2) / layer.numel for layer in engine.layers]
            expected = [count_for_density(layer.numel, 1 - cubic_sparsity(last, 0.0, s, 4, 24))
                        for layer, s in zip(engine.layers, s_f)]
            assert [layer.count for layer in engine.layers] == expected, t
        else:
            s_t = cubic_sparsity(last, 0.0, 0.8, 4, 24)
            assert sum(layer.count for layer in engine.layers) == budget(engine.specs, 1 - s_t), t
        if info.updated:
            pruned_at.append(t)
            params = [p for g in opt.param_groups for p in g["params"]]
            for p, w in zip(params, after_opt["w"]):
                if id(p) in sparse_w:
                    i = sparse_w[id(p)]
                    new, m0 = engine.layers[i].mask, old[i]
                    assert not (new & ~m0).any()  # never regrows
                    if (m0 & ~new).any():
                        assert w.abs()[new].min() >= w.abs()[m0 & ~new].max()
    assert pruned_at == [9, 14, 19, 24]  # (t - t0) % delta_T == 0 with t0 = 4, up to t1 = 24


def test_gmp_initial_density_prunes_by_magnitude_at_begin():
    model = mlp()
    w0 = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    engine = engine_for(model, torch.optim.SGD(model.parameters(), lr=0.1), 40, method="gmp", density=0.2,
                        gmp_initial_density=0.6)
    engine.begin()
    for layer, w in zip(engine.layers, w0):
        assert layer.count == count_for_density(layer.numel, 0.6)
        assert w.abs()[layer.mask].min() > w.abs()[~layer.mask].max()


@pytest.mark.parametrize("rewind_step", [0, 2])
def test_lth_prunes_each_round_and_rewinds_survivors(rewind_step):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = engine_for(model, opt, 12, method="lth", density=0.25, lth_rounds=2, lth_rewind_step=rewind_step)
    assert engine.train_multiplier == 3
    engine.begin()
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    after_opt: dict = {}
    capture_after_optimizer(opt, after_opt)
    for t in range(1, 13):
        old = [layer.mask.clone() for layer in engine.layers]
        info = step(engine, model, opt)
        if t == rewind_step:
            snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert info.updated == (t in (4, 8))
        if not info.updated:
            continue
        r = t // 4
        assert len(opt.state) == 0  # optimizer state reset
        masks = engine.masks
        for name, p in model.named_parameters():
            expected = snapshot[name] * masks[name] if name in masks else snapshot[name]
            assert torch.equal(p.detach(), expected), (t, name)
        pre = dict(zip([n for n, _ in model.named_parameters()], after_opt["w"]))
        for layer, m0 in zip(engine.layers, old):
            assert layer.count == count_for_density(layer.numel, 0.25 ** (r / 2))
            assert not (layer.mask & ~m0).any()
            w = pre[layer.name].abs()
            assert w[layer.mask].min() >= w[m0 & ~layer.mask].max()  # pruned by magnitude before rewinding


def test_small_dense_matches_the_sparse_parameter_count():
    model = mlp(64)
    cfg = SparsityConfig(method="small_dense", density=0.1, distribution="erk")
    specs = select_layers(model)
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    target = target_param_count(model, cfg)
    assert target == budget(specs, 0.1) + biases  # ERK spends the budget exactly
    build = lambda w: mlp(max(1, round(64 * w)))  # noqa: E731
    width = match_width(build, target)
    h = round(64 * width)
    count = lambda h: h * h + 18 * h + 4  # noqa: E731  (12h + h + h^2 + h + 4h + 4)
    assert count_params(build(width)) == count(h)
    assert abs(count(h) - target) <= min(abs(count(h - 1) - target), abs(count(h + 1) - target))
    assert match_width(build, 10**9) == 1.0 and match_width(build, 1) == 1 / 64
    glob = SparsityConfig(method="snip", density=0.1, distribution="global")
    assert target_param_count(model, glob) == budget(specs, 0.1) + biases


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_small_dense_build_narrows_the_backbone_to_the_sparse_parameter_count(model):
    from types import SimpleNamespace

    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.models import create_model
    from sparsecl.train.build import build_model

    ds = SimpleNamespace(input_shape=(1, 28, 28), num_classes=10)
    cfg = make_config(TrainConfig, None, [f"model={model}", "sparsity.method=small_dense", "sparsity.density=0.1",
                                          "sparsity.distribution=erk"])
    target = target_param_count(create_model(model, ds.input_shape, 10), cfg.sparsity)
    small = build_model(cfg, ds, torch.device("cpu"))
    n = count_params(small)
    assert n < count_params(create_model(model, ds.input_shape, 10)) / 5
    if model == "cnn":  # the nearest base width: one channel more or less is farther from the target
        nf = small.conv2.out_channels
        near = [count_params(create_model("cnn", ds.input_shape, 10, nf=f)) for f in (nf - 1, nf + 1)]
        assert all(abs(n - target) <= abs(c - target) for c in near)
    else:
        assert abs(n - target) / target < 0.01
