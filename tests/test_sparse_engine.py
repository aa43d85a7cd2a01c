"""The mask engine: invariant grid, optimizer-state hygiene, set_mask, resume, filters, config checks."""

import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.engine import MaskEngine
from sparsecl.sparse.filters import select_layers
from sparsecl.sparse.masks import count_for_density, to_groups
from sparsecl.sparse.schedule import UpdateSchedule


class LinearNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.classifier = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.classifier(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x)))))
        return self.classifier(x.flatten(1))


INPUT = {"linear": (12,), "conv": (3, 4, 4)}


def make(kind: str, seed: int = 0) -> nn.Module:
    model = LinearNet() if kind == "linear" else ConvNet()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def batch(kind: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, *INPUT[kind], generator=g), torch.randint(0, 4, (8,), generator=g)


def closure(model: nn.Module, kind: str):
    x, y = batch(kind, -1)
    return lambda: F.cross_entropy(model(x), y)


def train(engine: MaskEngine, model: nn.Module, opt: torch.optim.Optimizer, kind: str, steps: int, after=None):
    for _ in range(steps):
        x, y = batch(kind, engine.step_count)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        engine.step()
        if after is not None:
            after(engine)


def build(method: str, kind: str = "linear", density: float = 0.5, total: int = 16, opt: str = "sgd",
          seed: int = 0, **kw):
    model = make(kind, seed)
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    elif opt == "nesterov":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3)
    elif opt == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-3)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    cfg = SparsityConfig(method=method, density=density, **kw)
    engine = MaskEngine(model, optimizer, cfg, total_steps=total, generator=torch.Generator().manual_seed(seed))
    engine.begin(closure(model, kind))
    return model, optimizer, engine


def assert_inactive_zero(engine: MaskEngine) -> None:
    for layer in engine.layers:
        assert torch.count_nonzero(layer.param.detach()[~layer.mask]) == 0, layer.name


DYNAMIC = ("set", "rigl", "snfs")


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("density", [0.5, 0.1])
@pytest.mark.parametrize("method", ["static", "snip", "set", "rigl", "snfs"])
def test_invariant_grid(method, density, kind):
    model, opt, engine = build(method, kind, density, delta_t=3, t_end=0.5, drop_fraction=0.5)
    counts = {n: int(m.sum()) for n, m in engine.masks.items()}
    assert counts == {layer.name: count_for_density(layer.numel, density) for layer in engine.layers}
    assert_inactive_zero(engine)
    changed_at = []

    def check(e: MaskEngine) -> None:
        now = e.masks
        assert {n: int(m.sum()) for n, m in now.items()} == counts  # nnz per layer never changes
        assert_inactive_zero(e)  # SGD momentum + weight decay cannot revive pruned weights
        changed = any(not torch.equal(before[n], now[n]) for n in now)
        assert e.last_step.updated == changed
        assert e.last_step.optimizer_skipped == (method == "rigl" and e.step_count in (3, 6))
        if changed:
            changed_at.append(e.step_count)
        before.update({n: m.clone() for n, m in now.items()})

    before = {n: m.clone() for n, m in engine.masks.items()}
    train(engine, model, opt, kind, 16, check)
    assert UpdateSchedule.from_config(engine.cfg, 16).update_steps(16) == [3, 6]
    assert changed_at == ([3, 6] if method in DYNAMIC else [])  # only on scheduled steps, none after T_end
    assert engine.densities()["layers"] == {n: c / engine.masks[n].numel() for n, c in counts.items()}


@pytest.mark.parametrize("method", DYNAMIC)
def test_drop_fraction_zero_changes_nothing(method):
    model, opt, engine = build(method, drop_fraction=0.0, delta_t=2)
    initial = {n: m.clone() for n, m in engine.masks.items()}
    version = engine.mask_version
    train(engine, model, opt, "linear", 12, lambda e: not e.last_step.updated or pytest.fail("updated"))
    assert all(torch.equal(initial[n], m) for n, m in engine.masks.items())
    assert engine.mask_version == version


@pytest.mark.parametrize("opt", ["sgd", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_grown_weights_start_at_zero_with_zero_optimizer_state(method, opt):
    model, optimizer, engine = build(method, opt=opt, delta_t=4, drop_fraction=0.5)
    train(engine, model, optimizer, "linear", 3)  # optimizer state is non-zero everywhere active
    layer = engine.layers[1]
    old_mask = layer.mask.clone()
    old_state = {k: v.clone() for k, v in optimizer.state[layer.param].items() if v.shape == layer.param.shape}
    assert old_state and all(torch.count_nonzero(v[old_mask]) > 0 for v in old_state.values())
    train(engine, model, optimizer, "linear", 1)  # step 4: update
    assert engine.last_step.updated
    grown, dropped = layer.mask & ~old_mask, old_mask & ~layer.mask
    assert grown.any() and int(grown.sum()) == int(dropped.sum())
    assert torch.count_nonzero(layer.param.detach()[grown | dropped]) == 0
    for key, value in optimizer.state[layer.param].items():
        if value.shape == layer.param.shape:
            assert torch.count_nonzero(value[grown | dropped]) == 0, key
            if method == "rigl":  # RigL skipped the optimizer step: surviving state is untouched
                kept = layer.mask & old_mask
                assert torch.equal(value[kept], old_state[key][kept]), key
    train(engine, model, optimizer, "linear", 4)
    assert_inactive_zero(engine)


def test_adamw_decay_and_momentum_never_revive_inactive_weights():
    model, opt, engine = build("rigl", opt="adamw", density=0.1, delta_t=2, t_end=1.0)
    train(engine, model, opt, "linear", 15, assert_inactive_zero)
    for layer in engine.layers:
        for v in opt.state[layer.param].values():
            if v.shape == layer.param.shape:
                assert torch.count_nonzero(v[~layer.mask]) == 0


class DriftSGD(torch.optim.SGD):
    """An optimizer that moves every weight, zero gradient or not (as noise injection or EMA tricks do)."""

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(0.01)


def test_weights_are_re_masked_after_any_optimizer_step():
    model = make("conv")
    opt = DriftSGD(model.parameters(), lr=0.1)
    engine = MaskEngine(model, opt, SparsityConfig(method="static", density=0.3), 10, torch.Generator().manual_seed(0))
    engine.begin()
    train(engine, model, opt, "conv", 3, assert_inactive_zero)


def test_rigl_dense_gradient_window_with_accumulation():
    model, opt, engine = build("rigl", delta_t=3, t_end=0.5, grad_accumulation=2)
    flags = []
    for _ in range(9):
        flags.append(engine.needs_dense_grad())
        train(engine, model, opt, "linear", 1)
        assert engine.last_step.dense_weight_grad == flags[-1]
    assert [t + 1 for t, f in enumerate(flags) if f] == [2, 3, 5, 6]


def test_snfs_needs_dense_gradient_every_step_and_static_never():
    for method, expected in (("snfs", True), ("static", False)):
        model, opt, engine = build(method)
        train(engine, model, opt, "linear", 3)
        assert engine.last_step.dense_weight_grad is expected and engine.needs_dense_grad() is expected


def test_set_mask_resets_changed_positions_only():
    model, opt, engine = build("static")
    train(engine, model, opt, "linear", 3)
    layer = engine.layers[0]
    weight, buf = layer.param.detach().clone(), opt.state[layer.param]["momentum_buffer"].clone()
    new = layer.mask.clone().view(-1)
    on, off = int((~new).nonzero()[0]), int(new.nonzero()[0])
    new[on], new[off] = True, False
    version = engine.mask_version
    engine.set_mask(layer.name, new.view(layer.mask.shape))
    flat_w, flat_b = layer.param.detach().view(-1), opt.state[layer.param]["momentum_buffer"].view(-1)
    assert flat_w[on] == 0 and flat_w[off] == 0 and flat_b[on] == 0 and flat_b[off] == 0
    same = torch.ones_like(new)
    same[[on, off]] = False
    assert torch.equal(flat_w[same], weight.view(-1)[same]) and torch.equal(flat_b[same], buf.view(-1)[same])
    assert engine.mask_version == version + 1 and layer.count == int(new.sum())
    engine.set_mask(layer.name, layer.mask.clone())
    assert engine.mask_version == version + 1  # an identical mask changes nothing
    with pytest.raises(ValueError, match="valid: fc1.weight, fc2.weight, classifier.weight"):
        engine.set_mask("fc1.bias", new)
    with pytest.raises(ValueError, match="shape"):
        engine.set_mask("fc1.weight", torch.ones(3, dtype=torch.bool))


def test_set_mask_can_change_density():
    model, opt, engine = build("static")
    engine.set_mask("classifier.weight", torch.zeros(4, 16, dtype=torch.bool))
    assert engine.densities()["layers"]["classifier.weight"] == 0.0
    assert torch.count_nonzero(model.classifier.weight) == 0
    train(engine, model, opt, "linear", 2)
    assert torch.count_nonzero(model.classifier.weight) == 0


MASKED_METHODS = {
    "static": {}, "snip": {}, "set": {}, "rigl": {"grad_accumulation": 2}, "snfs": {},
    "gmp": {"gmp_end": 0.75}, "lth": {"lth_rounds": 2, "lth_rewind_step": 2},
}


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("method", sorted(MASKED_METHODS))
def test_state_dict_round_trip_resumes_bit_identically(method, kind):
    kw = dict(delta_t=3, t_end=0.75, total=18, **MASKED_METHODS[method])
    model_a, opt_a, eng_a = build(method, kind, **kw)
    train(eng_a, model_a, opt_a, kind, 18)

    model_b, opt_b, eng_b = build(method, kind, **kw)
    train(eng_b, model_b, opt_b, kind, 5)  # mid-run: inside RigL's accumulation window for step 6
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "engine": eng_b.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)

    model_c, opt_c, eng_c = build(method, kind, seed=7, **kw)  # a different init and generator seed
    model_c.load_state_dict(ck["model"])
    opt_c.load_state_dict(ck["opt"])
    eng_c.load_state_dict(ck["engine"])
    eng_c.begin(closure(model_c, kind))  # a no-op after loading
    train(eng_c, model_c, opt_c, kind, 13)
    assert eng_c.step_count == eng_a.step_count == 18
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(a, c), name
    assert all(torch.equal(eng_a.masks[n], eng_c.masks[n]) for n in eng_a.masks)
    assert eng_a.mask_version == eng_c.mask_version


def test_load_state_dict_rejects_another_run():
    _, _, engine = build("rigl", total=16)
    _, _, other = build("rigl", total=20)
    with pytest.raises(ValueError, match="cannot load"):
        other.load_state_dict(engine.state_dict())


def test_dense_method_is_the_plain_optimizer():
    model_a = make("linear")
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1, momentum=0.9)
    model_b, opt_b, engine = build("dense", density=1.0)
    opt_b.param_groups[0]["weight_decay"] = 0.0
    for step in range(4):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            x, y = batch("linear", step)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        opt_a.step()
        engine.step()
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))
    assert engine.masks == {} and engine.densities() == {"overall": 1.0, "layers": {}}
    assert engine.model_density() == 1.0 and engine.step_count == 4 and engine.train_multiplier == 1


def test_step_before_begin_is_an_error_and_begin_is_idempotent():
    model = make("linear")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = MaskEngine(model, opt, SparsityConfig(method="static", density=0.5), 10, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="begin"):
        engine.step()
    engine.begin()
    masks, state = {n: m.clone() for n, m in engine.masks.items()}, engine.generator.get_state()
    engine.begin()
    assert all(torch.equal(masks[n], m) for n, m in engine.masks.items())
    assert torch.equal(state, engine.generator.get_state())


def test_model_density_counts_dense_parameters_fully():
    model, _, engine = build("static", density=0.25)
    active = sum(layer.count for layer in engine.layers) + sum(p.numel() for n, p in model.named_parameters()
                                                               if n.endswith("bias"))
    assert engine.model_density() == active / sum(p.numel() for p in model.parameters())
    assert engine.densities()["overall"] == sum(layer.count for layer in engine.layers) / sum(
        layer.numel for layer in engine.layers)


def test_nm_pattern_survives_rigl_updates():
    model, opt, engine = build("rigl", pattern="n:m", density=0.5, delta_t=2, drop_fraction=0.5)
    train(engine, model, opt, "linear", 8)
    assert engine.mask_version > 1
    for layer in engine.layers:
        assert (to_groups(layer.mask, 4).sum(1) == 2).all(), layer.name
    assert_inactive_zero(engine)


# -- filters ---------------------------------------------------------------------------------------------
class HookedMLP(LinearNet):
    def hidden_linear_names(self) -> list[str]:
        return ["fc2"]


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(4, 4), nn.Linear(4, 4)
        self.dec.weight = self.enc.weight


def test_layer_filters():
    names = lambda specs: [s.name for s in specs]  # noqa: E731
    assert names(select_layers(LinearNet())) == ["fc1.weight", "fc2.weight", "classifier.weight"]
    assert names(select_layers(LinearNet(), "sparcl")) == ["fc1.weight", "fc2.weight"]
    assert names(select_layers(HookedMLP(), "sparcl")) == ["fc2.weight"]
    assert names(select_layers(ConvNet(), "classifier, conv1")) == ["conv1.weight", "classifier.weight"]
    assert names(select_layers(Tied())) == ["enc.weight"]
    with pytest.raises(ValueError, match="bn are not Linear/Conv modules.*valid: conv1, conv2, classifier"):
        select_layers(ConvNet(), "conv1,bn")
    specs = select_layers(ConvNet(), "all", dense_first=True, dense_last=True)
    assert [s.forced_dense for s in specs] == [True, False, True]
    specs = select_layers(LinearNet(), "sparcl", dense_last=True)  # the classifier is not selected
    assert [s.forced_dense for s in specs] == [False, False]


def test_uniform_dense_first_through_the_engine():
    _, _, engine = build("static", "conv", density=0.1, dense_first=True)
    dens = engine.densities()["layers"]
    assert dens["conv1.weight"] == 1.0
    assert dens["conv2.weight"] == count_for_density(576, 0.1) / 576
    assert dens["classifier.weight"] == count_for_density(512, 0.1) / 512


# -- config ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [
    ({"method": "prune"}, "sparsity.method='prune' is not valid; choose one of: auto, dense, gmp, lth, magnitude, "
                          "rigl, set, small_dense, snfs, snip, static"),
    ({"method": "rigl", "distribution": "erk2"}, "choose one of: custom, er, erk, global, uniform"),
    ({"method": "rigl", "density": 0.0}, r"density must be in \(0, 1\]"),
    ({"method": "rigl", "density": 1.5}, r"density must be in \(0, 1\]"),
    ({"method": "dense", "density": 0.5}, "use small_dense"),
    ({"method": "rigl", "density": 0.5, "distribution": "custom"}, "custom_densities is given exactly when"),
    ({"method": "rigl", "density": 0.5, "custom_densities": {"fc1": 0.5}}, "custom_densities is given exactly when"),
    ({"method": "rigl", "density": 0.5, "distribution": "global"}, "use it with one of: gmp, lth, magnitude, snip"),
    ({"method": "rigl", "density": 0.3, "pattern": "n:m"}, "fixes the density to nm_n/nm_m = 0.5"),
    ({"method": "gmp", "density": 0.5, "pattern": "n:m"},
     "n:m works with methods: magnitude, rigl, set, snfs, snip, static"),
    ({"method": "gmp", "density": 0.5, "gmp_initial_density": 0.4}, "gradual pruning only removes"),
    ({"method": "rigl", "density": 0.5, "grad_accumulation": 200}, "must not exceed delta_t"),
    ({"method": "rigl", "density": 0.5, "begin": 0.8}, "begin <= t_end"),
    ({"method": "rigl", "density": 0.5, "delta_t": 0}, "delta_t must be an integer >= 1"),
    ({"method": "rigl", "density": 0.5, "layers": " , "}, "layers must be one of all, sparcl"),
])
def test_config_errors_are_one_clear_line(kw, message):
    with pytest.raises(ValueError, match=message) as info:
        SparsityConfig(**kw)
    assert "\n" not in str(info.value)


def test_lth_rewind_step_must_fit_in_a_round():
    model = make("linear")
    cfg = SparsityConfig(method="lth", density=0.5, lth_rounds=3, lth_rewind_step=5)
    with pytest.raises(ValueError, match="below the round length 5"):
        MaskEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, total_steps=20)


def test_rescaled_init_restores_each_units_squared_sum():
    """init=rescale: surviving weights of a row scaled by sqrt(sum_all w^2 / sum_active w^2), exactly."""
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.1, 0.2, -0.3, 4.0]]))
    cfg = SparsityConfig(method="magnitude", density=0.5, init="rescale")
    engine = MaskEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, 10, torch.Generator().manual_seed(0))
    engine.begin()
    # magnitude keeps the layer's 4 largest |w|: 4.0, 3.0, -2.0, 1.0
    w = model[0].weight.detach()
    mask = engine.masks["0.weight"]
    assert mask.tolist() == [[True, True, True, False], [False, False, False, True]]
    r0 = (14.25 / 14.0) ** 0.5
    r1 = (16.14 / 16.0) ** 0.5
    expect = torch.tensor([[1.0 * r0, -2.0 * r0, 3.0 * r0, 0.0], [0.0, 0.0, 0.0, 4.0 * r1]])
    torch.testing.assert_close(w, expect)
    torch.testing.assert_close(w.pow(2).sum(1), torch.tensor([14.25, 16.14]))


def test_dense_init_keeps_survivors_as_initialised():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5))
    w0 = model[0].weight.detach().clone()
    engine = MaskEngine(model, torch.optim.SGD(model.parameters(), lr=0.1),
                        SparsityConfig(method="static", density=0.4, init="dense"), 10,
                        torch.Generator().manual_seed(0))
    engine.begin()
    mask = engine.masks["0.weight"]
    assert torch.equal(model[0].weight.detach()[mask], w0[mask])


@pytest.mark.parametrize("method", ["rigl", "snfs", "static"])
def test_mask_grads_before_step_is_what_step_does_once(method):
    """A loop that clips gradients calls ``mask_grads()`` first: the method still observes the DENSE
    gradient (RigL's growth scores, SNFS momentum), only once, and the run equals one that did not call it."""
    kw = {"delta_t": 2, "t_end": 0.9, "grad_accumulation": 2} if method == "rigl" else {}
    runs = []
    for early in (False, True):
        model, opt, engine = build(method, total=12, **kw)
        for _ in range(8):
            x, y = batch("linear", engine.step_count)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if early:
                engine.mask_grads()
                for layer in engine.layers:  # what a clipping norm now sees: no inactive gradient
                    assert torch.count_nonzero(layer.param.grad[~layer.mask]) == 0
                engine.mask_grads()  # idempotent within a step
            engine.step()
        runs.append(([layer.mask.clone() for layer in engine.layers], [p.detach().clone() for p in model.parameters()]))
    (m0, w0), (m1, w1) = runs
    assert all(torch.equal(a, b) for a, b in zip(m0, m1))
    assert all(torch.equal(a, b) for a, b in zip(w0, w1))


def test_premasked_gradients_skip_the_engine_mask_for_the_coming_step_only():
    model, _, engine = build("static")
    layer = engine.layers[0]
    for g in engine.optimizer.param_groups:
        g["lr"], g["momentum"], g["weight_decay"] = 0.0, 0.0, 0.0  # only the gradients matter here
    layer.param.grad = torch.ones_like(layer.param)
    engine.premasked([])  # several promises before one step add up
    engine.premasked([layer.param])  # the caller's promise: already zero outside the weight mask
    engine.premasked([])
    engine.step()
    assert layer.param.grad.eq(1).all()  # not multiplied again
    layer.param.grad = torch.ones_like(layer.param)
    engine.step()
    assert torch.equal(layer.param.grad, layer.fmask)  # the next step masks as usual
