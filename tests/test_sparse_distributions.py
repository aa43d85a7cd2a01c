"""Layer-wise distributions: the spec's ERK check values, exact budgets, capping, custom and global."""

import math

import pytest
import torch

from sparsecl.registry import UnknownNameError
from sparsecl.sparse.distributions import (DISTRIBUTIONS, budget, erdos_renyi, erdos_renyi_kernel, global_magnitude,
                                          uniform)
from sparsecl.sparse.filters import LayerSpec
from sparsecl.sparse.masks import count_for_density


def spec(name: str, *shape: int, dense: bool = False) -> LayerSpec:
    return LayerSpec(f"{name}.weight", name, torch.Size(shape), dense)


MLP = [spec("fc1", 1000, 784), spec("fc2", 1000, 1000), spec("fc3", 10, 1000)]


def densities(specs, counts):
    return [c / s.numel for s, c in zip(specs, counts)]


def test_erk_mlp_matches_the_spec_check_values():
    counts = erdos_renyi_kernel(MLP, 0.1)
    assert [round(d, 4) for d in densities(MLP, counts)] == [0.1019, 0.0895, 1.0]
    assert sum(counts) == 179_400  # exactly 10 % of 1 794 000
    assert round(sum(counts) / sum(s.numel for s in MLP), 3) == 0.100


def test_erk_caps_repeatedly_and_hits_the_budget_exactly():
    # tiny layers saturate one after another: the re-solve loop must run more than once
    specs = [spec("a", 4, 3), spec("b", 16, 8), spec("c", 300, 200), spec("d", 500, 400)]
    for density in (0.05, 0.2, 0.5, 0.9):
        counts = erdos_renyi_kernel(specs, density)
        assert all(0 <= c <= s.numel for s, c in zip(specs, counts))
        assert sum(counts) == budget(specs, density)
    d = densities(specs, erdos_renyi_kernel(specs, 0.2))
    assert d[0] == 1.0 and d[1] == 1.0 and d[2] < 1.0


def test_erk_uses_kernel_dims_and_er_ignores_them():
    specs = [spec("c3", 64, 32, 3, 3), spec("c1", 64, 32, 1, 1), spec("big", 512, 512, 3, 3)]
    erk = densities(specs, erdos_renyi_kernel(specs, 0.01))  # low enough that no layer saturates
    raw = [sum(s.shape) / math.prod(s.shape) for s in specs]
    assert erk[0] / erk[2] == pytest.approx(raw[0] / raw[2], rel=1e-3)
    assert erk[1] / erk[0] == pytest.approx(raw[1] / raw[0], rel=1e-3)
    er = densities(specs, erdos_renyi(specs, 0.01))
    assert er[0] == pytest.approx(er[1], abs=1 / 2048)  # same channels, other kernel: same ER density (1 count)


def test_erk_budget_includes_forced_dense_layers():
    specs = [spec("fc1", 1000, 784, dense=True), spec("fc2", 1000, 1000), spec("fc3", 10, 1000)]
    counts = erdos_renyi_kernel(specs, 0.5)
    assert counts[0] == 784_000 and sum(counts) == budget(specs, 0.5)


def test_erk_density_one_is_all_dense_and_too_low_is_an_error():
    assert erdos_renyi_kernel(MLP, 1.0) == [s.numel for s in MLP]
    with pytest.raises(ValueError, match="too low"):
        erdos_renyi_kernel([spec("fc1", 1000, 784, dense=True), spec("fc2", 10, 10)], 0.1)


def test_uniform_with_dense_first_keeps_others_at_target():
    specs = [spec("conv", 16, 3, 3, 3, dense=True), spec("fc1", 100, 30), spec("fc2", 10, 7)]
    counts = uniform(specs, 0.1)
    assert counts == [432, 300, count_for_density(70, 0.1)]
    assert counts[2] == 70 - math.floor(0.9 * 70)


def test_custom_by_param_or_module_name():
    counts = DISTRIBUTIONS.get("custom")(MLP, 0.2, custom={"fc1": 0.5, "fc3.weight": 1.0})
    assert counts == [392_000, 200_000, 10_000]
    with pytest.raises(ValueError, match="fc9.*valid: fc1.weight, fc2.weight, fc3.weight"):
        DISTRIBUTIONS.get("custom")(MLP, 0.2, custom={"fc9": 0.5})


def test_global_ranks_across_layers():
    specs = [spec("a", 2, 2), spec("b", 2, 3), spec("c", 1, 2, dense=True)]
    scores = [torch.tensor([[9.0, 1.0], [8.0, 0.5]]), torch.tensor([[7.0, 6.0, 0.1], [0.2, 5.0, 0.3]]),
              torch.tensor([[0.0, 0.0]])]
    # budget: 12 - floor(0.5 * 12) = 6 active; the dense layer takes 2, the best 4 free scores are 9, 8, 7, 6
    assert global_magnitude(specs, 0.5, scores=scores) == [2, 2, 2]
    with pytest.raises(ValueError, match="needs scores"):
        global_magnitude(specs, 0.5)


def test_unknown_distribution_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid: custom, er, erk, global, uniform"):
        DISTRIBUTIONS.get("erdos")


def test_a_density_that_empties_a_layer_is_refused_with_the_smallest_valid_one():
    from types import SimpleNamespace

    from sparsecl.sparse.distributions import refuse_empty_layers

    erk = DISTRIBUTIONS.get("erk")
    specs = [spec("a", 10, 10), spec("b", 2, 10)]  # 100 and 20 weights
    assert erk(specs, 0.005) == [1, 0]
    cfg = SimpleNamespace(distribution="erk", density=0.005, custom_densities=None)
    with pytest.raises(ValueError, match=r"sparsity.density=0.005 leaves layer b.weight with no active weight "
                                         r"under the erk distribution; the smallest .* is 0.00\d+$") as e:
        refuse_empty_layers(specs, erk(specs, 0.005), cfg)
    smallest = float(str(e.value).rsplit(" ", 1)[1])
    assert erk(specs, smallest)[1] == 1                 # the value named really is valid ...
    assert erk(specs, smallest * 0.99)[1] == 0          # ... and (to 3 digits) the smallest
    refuse_empty_layers(specs, erk(specs, smallest), SimpleNamespace(distribution="erk", density=smallest,
                                                                     custom_densities=None))
