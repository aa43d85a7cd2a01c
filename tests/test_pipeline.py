"""Data pipeline: batched transforms, streams, the sampler contract."""

from __future__ import annotations

import torch

from sparsecl.data.dataset import ArrayDataset
from sparsecl.data.loader import EpochSampler, eval_batches, make_batch
from sparsecl.data.stream import make_stream
from sparsecl.data.transforms import Augment, BatchTransform, random_crop, random_hflip


def tiny(n=40, classes=4, hw=6) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, hw, hw), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return ArrayDataset("tiny", x, y, x[:8].clone(), y[:8].clone(), classes, (0.5,), (0.25,))


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(1, 2 * 3 * 5 * 5 + 1, dtype=torch.uint8).view(2, 3, 5, 5)
    out = random_crop(x, 2, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):  # each example equals exactly one of the 25 windows, same for all channels
        hits = [(i, j) for i in range(5) for j in range(5) if torch.equal(out[b], padded[b, :, i:i + 5, j:j + 5])]
        assert len(hits) == 1


def test_flip_is_per_example_and_seeded():
    x = torch.arange(64, dtype=torch.uint8).view(4, 1, 4, 4)
    a = random_hflip(x, torch.Generator().manual_seed(1))
    b = random_hflip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    for i in range(4):
        assert torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(2))


def test_normalisation_matches_formula():
    t = BatchTransform((0.2860,), (0.3530,))
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    expect = (x.float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(t.test(x), expect, atol=1e-6)


def test_class_il_split_natural_order_and_task_of_class():
    s = make_stream("class-il", tiny(), 2)
    assert [t.classes for t in s.tasks] == [(0, 1), (2, 3)]
    assert set(s.dataset.y_train[s.tasks[1].train_idx].tolist()) == {2, 3}
    assert s.task_of_class().tolist() == [0, 0, 1, 1]


def test_bad_task_count_is_one_line():
    import pytest

    with pytest.raises(ValueError, match="tasks=3 must divide the 4 classes of tiny"):
        make_stream("class-il", tiny(), 3)


def test_permuted_stream_permutes_every_task_with_fixed_distinct_permutations():
    ds = tiny()
    s1, s2 = make_stream("permuted", ds, 3, seed=5), make_stream("permuted", ds, 3, seed=5)
    x = ds.x_train[:3]
    views = [s1.tasks[t].inputs(x) for t in range(3)]
    for t, v in enumerate(views):
        assert not torch.equal(v, x)  # the first task too (GEM / mammoth / Avalanche)
        assert torch.equal(v, s2.tasks[t].inputs(x))  # fixed by the seed
        assert torch.equal(v.flatten(1).sort(1).values, x.flatten(1).sort(1).values)  # a permutation of pixels
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])


def test_rotation_by_zero_is_identity():
    from sparsecl.data.stream import Rotate

    x = tiny().x_train[:4]
    assert torch.equal(Rotate(0.0)(x), x)
    assert torch.equal(Rotate(180.0)(x), x.flip(2).flip(3))


def test_sampler_covers_each_active_example_once_per_epoch_and_resumes():
    active = torch.arange(10, 33)
    s = EpochSampler(5, torch.Generator().manual_seed(0))
    s.start_epoch(active)
    batches = list(s)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(batches).tolist()) == active.tolist()
    # resume mid-epoch from a state_dict gives the remaining batches exactly
    s2 = EpochSampler(5, torch.Generator().manual_seed(0))
    s2.start_epoch(active)
    it = iter(s2)
    next(it), next(it)
    s3 = EpochSampler(5, torch.Generator().manual_seed(99))
    s3.load_state_dict(s2.state_dict())
    assert [b.tolist() for b in s3] == [b.tolist() for b in batches[2:]]
    d = EpochSampler(5, torch.Generator().manual_seed(0), drop_last=True)
    d.start_epoch(active)
    assert [len(b) for b in d] == [5, 5, 5, 5]


def test_batch_contract_raw_is_not_augmented():
    ds = tiny()
    s = make_stream("class-il", ds, 2)
    t = BatchTransform(ds.mean, ds.std, Augment(2, True))
    idx = s.tasks[0].train_idx[:6]
    b = make_batch(s, s.tasks[0], idx, t, torch.Generator().manual_seed(0))
    assert b.x_raw.dtype == torch.uint8 and torch.equal(b.x_raw, ds.x_train[idx])
    assert torch.equal(b.y, ds.y_train[idx]) and torch.equal(b.idx, idx) and b.task == 0
    assert b.x.dtype == torch.float32 and b.x.shape == b.x_raw.shape
    xs, ys = zip(*eval_batches(s, s.tasks[1], t, 3))
    assert torch.equal(torch.cat(ys), ds.y_test[s.tasks[1].test_idx])


def test_holdout_is_a_stratified_disjoint_split_in_original_order():
    ds = tiny(n=40, classes=4)  # 10 examples per class
    val = ds.holdout(0.2, torch.Generator().manual_seed(5))
    assert torch.bincount(val.y_test, minlength=4).tolist() == [2, 2, 2, 2]
    assert torch.bincount(val.y_train, minlength=4).tolist() == [8, 8, 8, 8]
    # every training example lands in exactly one of the two splits, each in the original order
    rows = {tuple(x.flatten().tolist()) + (int(y),): i for i, (x, y) in enumerate(zip(ds.x_train, ds.y_train))}
    train_pos = [rows[tuple(x.flatten().tolist()) + (int(y),)] for x, y in zip(val.x_train, val.y_train)]
    test_pos = [rows[tuple(x.flatten().tolist()) + (int(y),)] for x, y in zip(val.x_test, val.y_test)]
    assert sorted(train_pos + test_pos) == list(range(40))
    assert train_pos == sorted(train_pos) and test_pos == sorted(test_pos)
    assert (val.mean, val.std) == (ds.mean, ds.std)
    again = ds.holdout(0.2, torch.Generator().manual_seed(5))
    assert torch.equal(again.x_test, val.x_test)
    other = ds.holdout(0.2, torch.Generator().manual_seed(6))
    assert not torch.equal(other.x_test, val.x_test)


def test_holdout_leaves_every_class_a_training_example():
    ds = tiny(n=8, classes=4)  # 2 per class
    val = ds.holdout(0.9, torch.Generator().manual_seed(0))
    assert torch.bincount(val.y_train, minlength=4).tolist() == [1, 1, 1, 1]
    assert torch.bincount(val.y_test, minlength=4).tolist() == [1, 1, 1, 1]
    import pytest

    with pytest.raises(ValueError, match=r"validation fraction must be in \(0, 1\)"):
        ds.holdout(1.0, torch.Generator())
