"""Pure mask functions: exact counts, exact drop/grow masks on tiny tensors, N:M groups, tie-breaking."""

import pytest
import torch

from sparsecl.registry import UnknownNameError
from sparsecl.sparse import masks
from sparsecl.sparse.filters import LayerSpec
from sparsecl.sparse.patterns import MASK_PATTERNS, NMPattern


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_mask(*active: int, n: int = 8) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[list(active)] = True
    return m


def test_count_for_density_forgives_float_roundoff():
    # (1 - 0.9) * 10 = 0.9999999999999998: a naive floor keeps all 10 weights
    assert masks.count_for_density(10, 0.9) == 9
    assert masks.count_for_density(10, 0.7) == 7
    assert masks.count_for_density(1000, 0.1) == 100
    assert masks.count_for_density(7, 0.5) == 4  # floor(0.5 * 7) = 3 zeros
    assert masks.count_for_density(7, 1.0) == 7


@pytest.mark.parametrize("count", [0, 1, 13, 29, 30])
def test_random_mask_has_exact_count_and_is_seeded(count):
    m = masks.random_mask((5, 6), count, gen(3))
    assert m.shape == (5, 6) and m.dtype == torch.bool
    assert int(m.sum()) == count
    assert torch.equal(m, masks.random_mask((5, 6), count, gen(3)))


def test_random_mask_positions_depend_on_seed():
    draws = {tuple(masks.random_mask((20,), 5, gen(s)).nonzero().flatten().tolist()) for s in range(10)}
    assert len(draws) > 5


def test_topk_mask_exact_on_distinct_scores():
    score = torch.tensor([0.3, -1.0, 2.0, 0.1, 0.5, 0.0, 1.5, -0.2])
    assert torch.equal(masks.topk_mask(score, 3, gen()), as_mask(2, 6, 4))
    assert not masks.topk_mask(score, 0, gen()).any()
    assert masks.topk_mask(score, 99, gen()).all()


def test_topk_mask_breaks_ties_at_random_but_reproducibly():
    score = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    picks = set()
    for s in range(40):
        m = masks.topk_mask(score, 3, gen(s))
        assert m[0] and not m[7] and int(m.sum()) == 3  # strict order is never disturbed
        assert torch.equal(m, masks.topk_mask(score, 3, gen(s)))
        picks.update(m[1:7].nonzero().flatten().tolist())
    assert picks == {0, 1, 2, 3, 4, 5}  # every tied position gets picked by some seed: no positional bias


def test_topk_mask_ties_when_keeping_most_entries():
    score = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # keep 6: drop 0.0 and one random 1.0
    dropped = set()
    for s in range(40):
        m = masks.topk_mask(score, 6, gen(s))
        assert m[0] and not m[7] and int(m.sum()) == 6
        dropped.update((~m[1:7]).nonzero().flatten().tolist())
    assert dropped == {0, 1, 2, 3, 4, 5}


# jaxpruner-style exact masks: 8 weights, 4 active (positions 0, 1, 3, 5)
W = torch.tensor([0.9, -0.1, 0.0, 0.5, 0.0, -0.7, 0.0, 0.0])
G = torch.tensor([0.0, 0.2, 0.8, 0.1, 0.3, 0.0, 0.6, 0.05])
MASK = as_mask(0, 1, 3, 5)


@pytest.mark.parametrize("drop_fraction, expected", [
    (0.0, as_mask(0, 1, 3, 5)),   # nothing dropped
    (0.25, as_mask(0, 2, 3, 5)),  # drop 1 (|-0.1|), grow 2 (g = 0.8)
    (0.5, as_mask(0, 2, 5, 6)),   # drop 1 and 3 (0.1, 0.5), grow 2 and 6 (0.8, 0.6)
])
def test_drop_and_grow_exact_masks(drop_fraction, expected):
    n = masks.exact_floor(drop_fraction * int(MASK.sum()))
    new = masks.drop_and_grow(MASK, W.abs(), G, n, gen())
    assert torch.equal(new, expected)
    assert int(new.sum()) == int(MASK.sum())


def test_dropped_position_may_be_regrown():
    g = G.clone()
    g[1] = 5.0  # the just-dropped position has the largest grow score
    assert torch.equal(masks.drop_and_grow(MASK, W.abs(), g, 1, gen()), MASK)


def test_drop_smallest_and_grow_largest_alone():
    assert torch.equal(masks.drop_smallest(MASK, W.abs(), 2, gen()), as_mask(0, 5))
    assert torch.equal(masks.grow_largest(MASK, G, 2, gen()), as_mask(0, 1, 3, 5, 2, 6))


def test_groups_round_trip_along_input_channel():
    w = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).view(2, 8, 3, 3)
    g = masks.to_groups(w, 4)
    assert g.shape == (2 * 3 * 3 * 2, 4)
    # one group = 4 consecutive input channels at a fixed (out, kh, kw)
    assert torch.equal(g[0], w[0, 0:4, 0, 0])
    assert torch.equal(masks.from_groups(g, w.shape), w)


def test_nm_mask_exact_on_linear():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.2, 3.0, 1.0, 2.0, 0.0],
                          [-1.0, -2.0, -3.0, -4.0, 4.0, 3.0, 2.0, 1.0]])
    expected = torch.tensor([[0, 1, 1, 0, 1, 0, 1, 0],
                             [1, 1, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(masks.nm_mask(score, 2, 4, gen()), expected)


def test_nm_mask_on_conv_keeps_n_of_every_group():
    score = torch.randn(3, 8, 2, 2, generator=gen(1))
    m = masks.nm_mask(score, 2, 4, gen())
    groups = masks.to_groups(m, 4)
    assert (groups.sum(1) == 2).all()
    kept_min = masks.to_groups(score.masked_fill(~m, float("inf")), 4).min(1).values
    dropped_max = masks.to_groups(score.masked_fill(m, -float("inf")), 4).max(1).values
    assert (kept_min > dropped_max).all()  # the kept two are the group's two largest


def test_nm_drop_and_grow_keeps_pattern_and_count():
    w = torch.tensor([[0.1, 0.9, 0.5, 0.2, 3.0, 1.0, 2.0, 0.0]])
    mask = masks.nm_mask(w.abs(), 2, 4, gen())  # [0 1 1 0 | 1 0 1 0]
    g = torch.tensor([[5.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 4.0]])
    # drop the 2 smallest active |w| (0.5 in group 0, 0.9 in group 0): group 0 regrows its best two
    # inactive-after-drop entries by g (positions 0 and 3); group 1 is untouched
    new = masks.nm_drop_and_grow(mask, w.abs(), g, 2, 2, 4, gen())
    assert torch.equal(new, torch.tensor([[1, 0, 0, 1, 1, 0, 1, 0]], dtype=torch.bool))
    big = torch.randn(4, 8, 3, 3, generator=gen(2))
    m0 = masks.nm_mask(big.abs(), 2, 4, gen())
    m1 = masks.nm_drop_and_grow(m0, big.abs(), torch.rand(big.shape, generator=gen(3)), 20, 2, 4, gen())
    assert (masks.to_groups(m1, 4).sum(1) == 2).all() and int(m1.sum()) == int(m0.sum())
    assert not torch.equal(m0, m1)


def test_nm_pattern_checks_layers_and_counts():
    nm = NMPattern(2, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        nm.check(LayerSpec("conv.weight", "conv", torch.Size([8, 3, 3, 3])))
    nm.check(LayerSpec("conv.weight", "conv", torch.Size([8, 3, 3, 3]), forced_dense=True))
    like = torch.zeros(4, 8)
    assert nm.random(like, 32, gen()).all()
    with pytest.raises(ValueError, match="keeps 2/4"):
        nm.random(like, 10, gen())


def test_unknown_pattern_lists_valid_names():
    with pytest.raises(UnknownNameError, match="n:m, unstructured"):
        MASK_PATTERNS.get("block")
