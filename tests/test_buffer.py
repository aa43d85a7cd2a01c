"""Rehearsal buffer: exact Algorithm R (vectorised == sequential), fill, inclusion probability, the
class-balanced and after-task policies, sampling, and exact state round trips."""

from __future__ import annotations

import math

import pytest
import torch

from sparsecl.continual.buffer import BUFFER_POLICIES, Buffer, last_writer, reservoir_slots


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _items(ids: torch.Tensor, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs that encode their example id (uint8 [n, 1, 2, 2] filled with the id), label id % K."""
    return ids.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(), ids % num_classes


def _ids(buf: Buffer) -> torch.Tensor:
    return buf.x[:, 0, 0, 0].long()


def _buffer(capacity: int, seed: int = 0, policy: str = "reservoir", logits: bool = False) -> Buffer:
    gen = _gen(seed)
    return Buffer(capacity, (1, 2, 2), 4, device="cpu", generator=gen, policy=policy, store_logits=logits)


def _sequential_reservoir(capacity: int, u: torch.Tensor) -> list[int]:
    """Algorithm R one example at a time (the reference): contents[slot] = example id."""
    contents: list[int] = []
    for n, ui in enumerate(u.tolist()):
        if n < capacity:
            contents.append(n)
        else:
            r = min(math.floor(ui * (n + 1)), n)
            if r < capacity:
                contents[r] = n
    return contents


def test_last_writer_resolves_collisions_in_batch_order():
    slots = torch.tensor([3, 1, 3, 3, 0, 5, 5])
    assert last_writer(slots, 6).tolist() == [3, 1, 3, 3, 4, 6, 6]


@pytest.mark.parametrize("capacity,batch", [(5, 3), (8, 8), (7, 16), (1, 4)])
def test_vectorised_reservoir_equals_sequential_algorithm_r(capacity, batch):
    # the batched slots + last-write-wins reproduce the one-at-a-time algorithm draw for draw; a small
    # capacity with large batches makes several examples of a batch hit the same slot
    n_total = 200
    u = torch.rand(n_total, dtype=torch.float64, generator=_gen(capacity * 31 + batch))
    contents = torch.full((capacity + 1,), -1, dtype=torch.int64)
    for start in range(0, n_total, batch):
        ub = u[start : start + batch]
        slots = reservoir_slots(start, capacity, ub)
        contents[slots] = (start + torch.arange(ub.shape[0]))[last_writer(slots, capacity + 1)]
    assert contents[:capacity].tolist() == _sequential_reservoir(capacity, u)


def test_reservoir_slots_when_full_discard_a_rounded_up_draw():
    # u -> 1 can round u * (n + 1) up to n + 1; full or filling, that draw must never pick a real slot
    u = torch.tensor([1 - 2**-53, 0.0, 0.5], dtype=torch.float64)
    assert reservoir_slots(10**15, 4, u).tolist() == [4, 0, 4]
    assert reservoir_slots(4, 4, u).tolist() == [4, 0, 3]  # n_i = 4, 5, 6: floor(0.5 * 7) = 3
    assert reservoir_slots(2, 4, u).tolist() == [2, 3, 2]  # filling: slots 2, 3; then n_i = 4: floor(0.5 * 5) = 2


def test_buffer_add_is_algorithm_r_over_its_own_generator():
    buf, twin = _buffer(6, seed=3), _gen(3)
    u = []
    for start, n in [(0, 4), (4, 5), (9, 1), (10, 17), (27, 3)]:
        buf.add(*_items(torch.arange(start, start + n)), task=0)
        u.append(torch.rand(n, dtype=torch.float64, generator=twin))  # the policy's one draw per add
    assert _ids(buf).tolist() == _sequential_reservoir(6, torch.cat(u))
    assert torch.equal(buf.y, _ids(buf) % 4)  # labels travel with their inputs


@pytest.mark.parametrize("policy", ["reservoir", "class-balanced"])
def test_fill_is_exactly_min_capacity_seen(policy):
    buf, g, seen = _buffer(23, seed=1, policy=policy), _gen(2), 0
    for _ in range(40):
        n = int(torch.randint(0, 9, (1,), generator=g))
        buf.add(*_items(torch.arange(seen, seen + n) % 256), task=0)
        seen += n
        assert buf.seen == seen and buf.filled == len(buf) == min(23, seen)
    assert buf.filled == 23 and torch.equal(buf.y, _ids(buf) % 4)


def test_reservoir_inclusion_probability_is_capacity_over_seen():
    # 2000 independent streams of 50 examples (batches of 7, so one batch straddles the moment the
    # buffer becomes full) into capacity 10: every example must be held with probability 10/50 = 0.2.
    # Its hit count is Binomial(2000, 0.2): mean 400, std sqrt(2000 * 0.2 * 0.8) = 17.9; a 5-std band
    # (+-89) fails a correct implementation with probability < 50 * 6e-7 (the seeds are fixed anyway),
    # while an example kept with probability 0.15 or 0.25 (mean 300/500) falls outside it.
    seeds, n, cap = 2000, 50, 10
    hits = torch.zeros(n, dtype=torch.int64)
    for seed in range(seeds):
        buf = _buffer(cap, seed=seed)
        for start in range(0, n, 7):
            buf.add(*_items(torch.arange(start, min(start + 7, n))), task=0)
        ids = _ids(buf)
        assert ids.unique().numel() == cap  # a single pass never stores an example twice
        hits += torch.bincount(ids, minlength=n)
    assert int(hits.sum()) == seeds * cap
    mean, std = seeds * cap / n, math.sqrt(seeds * (cap / n) * (1 - cap / n))
    assert (hits - mean).abs().max() < 5 * std, hits.tolist()


def _class_balanced_reference(keys: torch.Tensor, labels: torch.Tensor, capacity: int) -> set[int]:
    """Naive: over ALL presentations, rank keys within each class, keep the first B by (rank, -key)."""
    order = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten().tolist()
        members.sort(key=lambda i: -keys[i].item())
        order += [(rank, -keys[i].item(), i) for rank, i in enumerate(members)]
    return {i for _, _, i in sorted(order)[:capacity]}


@pytest.mark.parametrize("capacity,expected", [(24, [9, 6, 9]), (30, [12, 6, 12]), (12, [4, 4, 4])])
def test_class_balanced_water_fills_and_matches_naive_reference(capacity, expected):
    # classes 0 / 1 / 2 with 60 / 6 / 24 presentations, shuffled: the small class is kept whole, the
    # others share what remains; the held set equals the top-key selection over the whole history
    labels = torch.cat([torch.zeros(60), torch.ones(6), torch.full((24,), 2.0)]).long()
    labels = labels[torch.randperm(90, generator=_gen(5))]
    buf, twin, keys = _buffer(capacity, seed=9, policy="class-balanced"), _gen(9), []
    for start in range(0, 90, 11):
        ids = torch.arange(start, min(start + 11, 90))
        buf.add(_items(ids)[0], labels[ids], task=0)
        keys.append(torch.rand(ids.numel(), dtype=torch.float64, generator=twin))
    held = _ids(buf)
    assert torch.bincount(buf.y, minlength=3).tolist() == expected
    assert torch.equal(buf.y, labels[held])
    assert set(held.tolist()) == _class_balanced_reference(torch.cat(keys), labels, capacity)


def test_after_task_is_experience_balanced_and_shrinks_to_subsets():
    buf = _buffer(10, seed=4, policy="after-task")
    with pytest.raises(RuntimeError, match="task end"):
        buf.add(*_items(torch.arange(3)), task=0)
    before = None
    for task, (quota, expected) in enumerate([(10, [10]), (5, [5, 5]), (3, [4, 3, 3])]):
        assert buf.task_quota() == quota
        ids = torch.arange(100 * task, 100 * task + 20) % 256
        buf.add_task(*_items(ids), task=task)
        assert torch.bincount(buf.task, minlength=task + 1).tolist() == expected
        now = _ids(buf)
        mine = now[buf.task == task]
        assert torch.isin(mine, ids).all() and mine.unique().numel() == quota
        if before is not None:  # older tasks keep a subset of what they held
            assert torch.isin(now[buf.task < task], before).all()
        before = now
    with pytest.raises(ValueError, match="already holds task 1"):
        buf.add_task(*_items(torch.arange(3)), task=1)
    with pytest.raises(RuntimeError, match="online"):
        _buffer(4).add_task(*_items(torch.arange(3)), task=0)


def test_sample_is_uniform_without_replacement_among_filled():
    buf, g = _buffer(16), _gen(0)
    buf.add(*_items(torch.arange(10)), task=0)
    assert buf.sample(32, g).sort().values.tolist() == list(range(10))  # n > filled: all, once each
    counts = torch.zeros(16, dtype=torch.int64)
    for _ in range(2000):
        idx = buf.sample(3, g)
        assert idx.unique().numel() == 3 and int(idx.max()) < 10
        counts += torch.bincount(idx, minlength=16)
    # each filled slot: Binomial(2000, 0.3), mean 600, std 20.5; unfilled slots never
    assert counts[10:].sum() == 0 and (counts[:10] - 600).abs().max() < 5 * 20.5
    assert _buffer(4).sample(3, g).numel() == 0


def test_get_returns_stored_fields():
    buf = _buffer(4, logits=True)
    x, y = _items(torch.arange(3))
    z = torch.arange(12, dtype=torch.float32).view(3, 4)
    buf.add(x, y, z, task=2)
    got = buf.get(torch.tensor([2, 0]))
    assert torch.equal(got.x, x[[2, 0]]) and torch.equal(got.y, y[[2, 0]])
    assert torch.equal(got.logits, z[[2, 0]]) and got.task.tolist() == [2, 2]
    with pytest.raises(ValueError, match="logits"):
        buf.add(x, y, None, task=0)


@pytest.mark.parametrize("policy", BUFFER_POLICIES.names())
def test_state_dict_round_trip_is_exact(policy):
    def feed(buf: Buffer, task: int, start: int) -> None:
        x, y = _items(torch.arange(start, start + 9))
        z = torch.randn(9, 4, generator=_gen(start))
        buf.add_task(x, y, z, task=task) if policy == "after-task" else buf.add(x, y, z, task=task)

    a = _buffer(7, seed=1, policy=policy, logits=True)
    for t in range(3):
        feed(a, t, 10 * t)
    sd = a.state_dict()
    b = _buffer(7, seed=99, policy=policy, logits=True)
    b.load_state_dict(sd)
    feed(a, 3, 40)  # mutating a afterwards must not change the saved state
    b2 = _buffer(7, seed=98, policy=policy, logits=True)
    b2.load_state_dict(sd)
    assert torch.equal(b.x, b2.x)
    feed(b, 3, 40)
    for field in ("x", "y", "task", "logits"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (a.seen, a.filled) == (b.seen, b.filled)
    assert torch.equal(a.sample(5, _gen(7)), b.sample(5, _gen(7)))
    with pytest.raises(ValueError, match="policy"):
        _buffer(8, policy=policy, logits=True).load_state_dict(sd)
