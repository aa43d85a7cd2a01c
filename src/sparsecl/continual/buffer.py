"""The rehearsal buffer: preallocated device tensors, filled by a policy (reservoir by default).

What it stores per slot (as mammoth's buffer): the NON-augmented uint8 input (replay re-applies the
training transform), the label, the task id and, for DER/DER++, the logits seen when the example was stored.

Policies (``BUFFER_POLICIES``):

* ``reservoir``: Algorithm R (Vitter, 1985) over every presentation, as in mammoth: with n examples seen
  so far and capacity B, the (n+1)-th is stored in slot n if n < B, else in slot r ~ U{0, ..., n} when
  r < B (so it survives with probability B / (n + 1) and every seen example is equally likely to be held).
* ``class-balanced``: each class holds a uniformly random subset of its presentations, the class sizes as
  equal as the counts allow (water-filling: small classes are kept whole, the rest share what remains).
  The aim of CBRS (Chrysakis & Moens, ICML 2020, "Online Continual Learning from Imbalanced Data");
  implemented with random priority keys (Efraimidis & Spirakis, 2006) so that one batch is one sort.
  Deviation from CBRS: CBRS evicts from the currently largest class one example at a time; here the held
  set is the balanced top-key set of everything seen, which has the same per-class uniformity.
* ``after-task``: experience-balanced filling at task end as in Avalanche's ``ExperienceBalancedBuffer``:
  B // G slots per task for the G tasks seen (the remainder to the earliest tasks), each task's share a
  uniformly random subset of its examples; nothing enters during a task.

Every slot write goes through ``_write`` with slot index B meaning "discard": the storage has one spare
row, so a batch whose examples are partly rejected needs no boolean indexing (no device sync).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from sparsecl.registry import Registry


class BufferItems(NamedTuple):
    """A gather of buffer slots: x uint8 [n, C, H, W], y int64 [n], logits float [n, K] or None, task [n]."""

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor | None
    task: torch.Tensor


def reservoir_slots(n_seen: int, capacity: int, u: torch.Tensor) -> torch.Tensor:
    """Algorithm R for a batch: the slot of each example (``capacity`` = not stored).

    Example i of the batch is the (n_i + 1)-th presentation, n_i = n_seen + i. It goes to slot n_i while the
    buffer is filling (n_i < B), else to r_i = floor(u_i * (n_i + 1)), uniform on {0, ..., n_i}, kept iff
    r_i < B. ``u`` is float64 uniform on [0, 1) [n]; float64 keeps r_i exact far beyond any real stream.
    Several examples of one batch may get the same slot: ``Buffer._write`` resolves that by last write wins
    in batch order, which is exactly what the sequential algorithm does.
    """
    if n_seen >= capacity:  # full (the common case): r_i >= B (a rounded-up r_i = n_i + 1 too) is discarded
        n1 = torch.arange(n_seen + 1, n_seen + 1 + u.shape[0], dtype=torch.float64, device=u.device)
        return (u * n1).floor_().long().clamp_max_(capacity)
    n_i = n_seen + torch.arange(u.shape[0], device=u.device)
    r = torch.minimum((u * (n_i + 1).double()).floor().long(), n_i)  # min(): guard the u -> 1 rounding
    slots = torch.where(n_i < capacity, n_i, r)
    return torch.where(slots < capacity, slots, torch.full_like(slots, capacity))


def last_writer(slots: torch.Tensor, size: int) -> torch.Tensor:
    """For each write i, the row whose value slot ``slots[i]`` must end up with: the last row writing it.

    Every write to a slot then carries the same value, so an ``index_put`` with repeated indices is
    deterministic (on CUDA too) and equals writing the rows one by one in order.
    """
    rows = torch.arange(slots.shape[0], device=slots.device)
    winner = torch.full((size,), -1, dtype=torch.int64, device=slots.device)
    winner.scatter_reduce_(0, slots, rows, reduce="amax")
    return winner[slots]


class BufferPolicy:
    """Decides which slots incoming examples take. ``online`` policies place every presentation
    (``place``); the others fill at task end (``task_quota`` / ``fill_task``)."""

    online = True

    def place(self, buf: "Buffer", y: torch.Tensor, task: int) -> torch.Tensor:
        """Slots [n] of the n incoming examples (``buf.capacity``: discard); seen/filled not yet updated."""
        raise NotImplementedError

    def filled_after(self, buf: "Buffer", n: int) -> int:
        return min(buf.capacity, buf.filled + n)

    def task_quota(self, buf: "Buffer") -> int:
        raise NotImplementedError

    def fill_task(self, buf: "Buffer", items: BufferItems, task: int) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass


PolicyFactory = Callable[[int, torch.device], BufferPolicy]
BUFFER_POLICIES: Registry[PolicyFactory] = Registry("buffer policy")


@BUFFER_POLICIES.register("reservoir")
class ReservoirPolicy(BufferPolicy):
    """Algorithm R over every presentation (mammoth's ``reservoir``); one uniform draw per example."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        pass

    def place(self, buf: "Buffer", y: torch.Tensor, task: int) -> torch.Tensor:
        u = torch.rand(y.shape[0], dtype=torch.float64, generator=buf.generator, device=buf.device)
        return reservoir_slots(buf.seen, buf.capacity, u)


@BUFFER_POLICIES.register("class-balanced")
class ClassBalancedPolicy(BufferPolicy):
    """Balanced random subsets per class, kept with one random key per presentation.

    Invariant: class c holds the q_c highest-key presentations of c, where (q_c) is the water-filling of
    the per-class counts into B slots. Order every candidate (held + incoming) by (rank of its key within
    its class, -key) and keep the first B: all rank-0 candidates come first (one per class), then rank 1,
    ...; ties between classes at the last rank go to the higher key, i.e. uniformly at random. A new
    candidate never brings back one dropped earlier (within its class the rank-r key can only rise, other
    classes are unchanged), so the held keys are all the history the selection needs.
    """

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.keys = torch.zeros(capacity + 1, dtype=torch.float64, device=device)  # row B: discard row

    def place(self, buf: "Buffer", y: torch.Tensor, task: int) -> torch.Tensor:
        cap, held, n, dev = buf.capacity, buf.filled, y.shape[0], buf.device
        u = torch.rand(n, dtype=torch.float64, generator=buf.generator, device=dev)
        if held + n <= cap:  # still filling: everything fits
            slots = torch.arange(held, held + n, device=dev)
        else:
            slots = self._compete(buf, y, u)
        self.keys[slots] = u  # the discard row's key is garbage and never read
        return slots

    def _compete(self, buf: "Buffer", y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cap, held = buf.capacity, buf.filled
        cand_y = torch.cat([buf._y[:held], y])
        key = torch.cat([self.keys[:held], u])
        # rank of each key within its class: sort by key (desc), then stably by class
        by_key = key.argsort(descending=True, stable=True)
        perm = by_key[cand_y[by_key].argsort(stable=True)]
        counts = torch.bincount(cand_y, minlength=buf.num_classes)
        start = counts.cumsum(0) - counts
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(perm.shape[0], device=perm.device) - start[cand_y[perm]]
        keep = torch.zeros_like(key, dtype=torch.bool)
        keep[(rank.double() - key).argsort(stable=True)[:cap]] = True  # key in [0, 1): (rank asc, key desc)
        # incoming keepers take the vacated slots (dropped held ones, then never-filled ones), in order
        vacant = torch.cat([~keep[:held], torch.ones(cap - held, dtype=torch.bool, device=key.device)])
        slot_of_rank = torch.full((cap + 1,), cap, dtype=torch.int64, device=key.device)
        vac_rank = torch.where(vacant, vacant.cumsum(0) - 1, cap)
        slot_of_rank.scatter_(0, vac_rank, torch.arange(cap, device=key.device))
        slot_of_rank[cap] = cap
        new_keep = keep[held:]
        new_rank = torch.where(new_keep, new_keep.cumsum(0) - 1, cap)
        return slot_of_rank[new_rank]

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.clone()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.keys.copy_(sd["keys"])


@BUFFER_POLICIES.register("after-task")
class AfterTaskPolicy(BufferPolicy):
    """Experience-balanced filling at task end (Avalanche's ``ExperienceBalancedBuffer``, adaptive size).

    With G tasks seen, task g (in arrival order) gets B // G slots plus one if g < B mod G. Older tasks
    shrink by keeping their first slots in slot order; since a task's examples were written in a random
    order, what remains is still a uniformly random subset of it.
    """

    online = False

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.groups: list[int] = []  # task ids in arrival order

    @staticmethod
    def lengths(capacity: int, groups: int) -> list[int]:
        return [capacity // groups + (g < capacity % groups) for g in range(groups)]

    def task_quota(self, buf: "Buffer") -> int:
        return self.lengths(buf.capacity, len(self.groups) + 1)[-1]

    def fill_task(self, buf: "Buffer", items: BufferItems, task: int) -> None:
        if task in self.groups:
            raise ValueError(f"after-task buffer already holds task {task}")
        lengths = self.lengths(buf.capacity, len(self.groups) + 1)
        if self.groups and buf.filled:
            groups = torch.tensor(self.groups, device=buf.device)
            onehot = buf._task[: buf.filled, None] == groups[None, :]  # [filled, G-1]
            group = onehot.long().argmax(1)
            rank = (onehot.long().cumsum(0) - 1).gather(1, group[:, None]).squeeze(1)
            quota = torch.tensor(lengths[:-1], device=buf.device)
            buf._compact((rank < quota[group]).nonzero().flatten())
        self.groups.append(task)
        n = min(lengths[-1], items.y.shape[0])
        pick = torch.randperm(items.y.shape[0], generator=buf.generator, device=buf.device)[:n]
        slots = torch.arange(buf.filled, buf.filled + n, device=buf.device)
        logits = None if items.logits is None else items.logits[pick]
        buf._write(slots, BufferItems(items.x[pick], items.y[pick], logits, items.task[pick]))
        buf.filled += n

    def state_dict(self) -> dict[str, Any]:
        return {"groups": list(self.groups)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.groups = list(sd["groups"])


class Buffer:
    """A fixed-capacity rehearsal memory on ``device``.

    ``generator`` (on ``device``) drives the policy's decisions only; replay draws take the caller's
    generator (``sample``), so what is stored does not depend on how often it is replayed.
    """

    def __init__(
        self,
        capacity: int,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        device: torch.device | str,
        generator: torch.Generator,
        policy: str | BufferPolicy = "reservoir",
        store_logits: bool = False,
        dtype: torch.dtype = torch.uint8,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.num_classes = capacity, num_classes
        self.device = torch.device(device)
        self.generator = generator
        # a registered name, or a method's own policy object (iCaRL's exemplar sets)
        self.policy: BufferPolicy = BUFFER_POLICIES.create(policy, capacity, self.device) if isinstance(policy, str) else policy
        self.policy_name = policy if isinstance(policy, str) else type(policy).__name__
        rows = capacity + 1  # + the discard row
        # uint8: the loop's non-augmented images; another dtype for inputs of your own loop (float features)
        self._x = torch.zeros((rows, *input_shape), dtype=dtype, device=self.device)
        self._y = torch.zeros(rows, dtype=torch.int64, device=self.device)
        self._task = torch.zeros(rows, dtype=torch.int64, device=self.device)
        self._logits = (
            torch.zeros((rows, num_classes), dtype=torch.float32, device=self.device)
            if store_logits
            else None
        )
        self.seen = 0  # examples offered so far (every presentation, all epochs)
        self.filled = 0  # slots holding an example: always the prefix [0, filled)

    # -- views of the held examples ---------------------------------------------------------------
    x = property(lambda self: self._x[: self.filled])
    y = property(lambda self: self._y[: self.filled])
    task = property(lambda self: self._task[: self.filled])
    logits = property(lambda self: None if self._logits is None else self._logits[: self.filled])

    @property
    def online(self) -> bool:
        return self.policy.online

    @property
    def empty(self) -> bool:
        return self.filled == 0

    def __len__(self) -> int:
        return self.filled

    # -- filling ----------------------------------------------------------------------------------
    def add(
        self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None, task: int = 0
    ) -> None:
        """Offer a batch of presentations (x uint8 NON-augmented [n, C, H, W], y [n], logits [n, K])."""
        if not self.online:
            raise RuntimeError(f"buffer policy {self.policy_name!r} fills at task end: use add_task()")
        n = y.shape[0]
        if n == 0:
            return
        slots = self.policy.place(self, y, task)
        self._write(slots, BufferItems(x, y, logits, torch.full_like(y, task)))
        self.filled = self.policy.filled_after(self, n)
        self.seen += n

    def task_quota(self) -> int:
        """After-task policy: how many slots the next finished task receives."""
        return self.policy.task_quota(self)

    def add_task(
        self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None, task: int = 0
    ) -> None:
        """After-task policy: keep a random ``task_quota()`` of a finished task's examples."""
        if self.online:
            raise RuntimeError(f"buffer policy {self.policy_name!r} is online: use add()")
        self.policy.fill_task(self, BufferItems(x, y, logits, torch.full_like(y, task)), task)
        self.seen += y.shape[0]

    # -- direct management, for memories kept by their method (iCaRL's exemplar sets, X-DER) --------
    def retain(self, slots: torch.Tensor) -> None:
        """Keep only the held slots ``slots`` (ascending), moved to the front in order."""
        self._compact(slots)

    def extend(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None, task: int = 0) -> None:
        """Append examples after the held ones, no policy involved (they must fit)."""
        n = y.shape[0]
        if self.filled + n > self.capacity:
            raise ValueError(f"{n} examples do not fit: {self.filled} of {self.capacity} slots are held")
        self._write(torch.arange(self.filled, self.filled + n, device=self.device),
                    BufferItems(x, y, logits, torch.full_like(y, task)))
        self.filled += n

    def set_logits(self, slots: torch.Tensor, logits: torch.Tensor) -> None:
        """Overwrite the stored logits of held slots (X-DER's logit updates)."""
        self._logits[slots] = logits.float()

    def _write(self, slots: torch.Tensor, items: BufferItems) -> None:
        if (self._logits is None) != (items.logits is None):
            raise ValueError("logits must be given exactly when the buffer stores logits")
        if slots.device.type == "cpu" and not bool((slots < self.capacity).any()):
            return  # every example discarded (most batches of a long stream); on CPU the check costs no sync
        src = last_writer(slots, self.capacity + 1)
        self._x[slots] = items.x.index_select(0, src)
        self._y[slots] = items.y.index_select(0, src)
        self._task[slots] = items.task.index_select(0, src)
        if self._logits is not None:
            self._logits[slots] = items.logits.index_select(0, src).float()

    def _compact(self, keep: torch.Tensor) -> None:
        """Move slots ``keep`` (ascending) to the front, in order; the rest become free."""
        for t in (self._x, self._y, self._task, self._logits):
            if t is not None:
                t[: keep.shape[0]] = t[keep]
        self.filled = int(keep.shape[0])

    # -- replay -----------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, among: torch.Tensor | None = None) -> torch.Tensor:
        """min(n, filled) slot indices, uniform without replacement among the filled slots; with ``among``
        (slot indices) among those only."""
        if among is None:
            return torch.randperm(self.filled, generator=generator, device=self.device)[: min(n, self.filled)]
        pick = torch.randperm(among.numel(), generator=generator, device=self.device)[: min(n, among.numel())]
        return among.index_select(0, pick)

    def slots_before(self, task: int) -> torch.Tensor:
        """Indices of the filled slots holding examples of tasks before ``task`` (ascending)."""
        return (self.task < task).nonzero().flatten()

    def get(self, indices: torch.Tensor) -> BufferItems:
        """One gather per stored field."""
        logits = None if self._logits is None else self._logits.index_select(0, indices)
        return BufferItems(self._x.index_select(0, indices), self._y.index_select(0, indices), logits,
                           self._task.index_select(0, indices))

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cap = self.capacity
        return {
            "policy_name": self.policy_name,
            "seen": self.seen,
            "filled": self.filled,
            "x": self._x[:cap].clone(),
            "y": self._y[:cap].clone(),
            "task": self._task[:cap].clone(),
            "logits": None if self._logits is None else self._logits[:cap].clone(),
            "generator": self.generator.get_state(),
            "policy": self.policy.state_dict(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd["policy_name"] != self.policy_name or sd["x"].shape != self._x[: self.capacity].shape:
            raise ValueError(
                f"buffer state is for policy {sd['policy_name']!r} with x {tuple(sd['x'].shape)}; "
                f"this buffer is {self.policy_name!r} with x {tuple(self._x[: self.capacity].shape)}"
            )
        if (sd["logits"] is None) != (self._logits is None):
            raise ValueError("buffer state and buffer disagree on whether logits are stored")
        cap = self.capacity
        self._x[:cap].copy_(sd["x"])
        self._y[:cap].copy_(sd["y"])
        self._task[:cap].copy_(sd["task"])
        if self._logits is not None:
            self._logits[:cap].copy_(sd["logits"])
        self.seen, self.filled = int(sd["seen"]), int(sd["filled"])
        self.generator.set_state(sd["generator"])
        self.policy.load_state_dict(sd["policy"])
