"""SparCL: TDM densities and schedule, DDR removal counts, DGM masking, the all-off identity, FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.data.batch import Batch
from sparsecl.kernels.execution import ExecutionFlags
from sparsecl.sparcl.config import SparclConfig
from sparsecl.sparcl.ddr import DynamicDataRemoval
from sparsecl.sparcl.dgm import DynamicGradientMasking, topk_mask
from sparsecl.sparcl.tdm import TaskAwareDynamicMasking, task_events
from sparsecl.sparse.flops import profile_layers
from sparsecl.train.build import build_run
from sparsecl.contract import LoopState, StepOutput
from sparsecl.train.loop import TIMING_KEYS, Trainer
from sparsecl.train.meters import FlopsMeter

SMALL = ["dataset=digits", "model=mlp", "hidden=64,64", "tasks=2", "method=derpp", "buffer_size=100",
         "batch_size=16", "replay_batch_size=16", "epochs=2", "lr=0.05", "progress=false", "seed=1",
         "checkpoint.at_task_end=false", "checkpoint.keep_model=false"]


def train(tmp_path, *extra: str):
    run = build_run(make_config(TrainConfig, None, [*SMALL, *extra]))
    summary = Trainer(run, tmp_path, stream_out=lambda *a: None).fit()
    return run, summary


def test_schedule_matches_the_release_as_fractions():
    ev = task_events(SparclConfig())
    assert [(round(e.at, 2), e.kind) for e in ev] == [(0.0, "expand")] + [
        (k / 10, "cycle") for k in range(1, 9)] + [(0.9, "shrink")]


def test_tdm_exact_density_at_task_ends_and_excursions_in_between(tmp_path):
    run, summary = train(tmp_path, "sparcl.tdm=true", "sparsity.density=0.2", "sparcl.tdm_step=0.05",
                         "sparcl.tdm_interval=0.25", "sparcl.tdm_freeze=0.75", "sparcl.tdm_grad_batches=3")
    tdm = next(c for c in run.components if isinstance(c, TaskAwareDynamicMasking))
    eng = run.engine
    total = sum(layer.numel for layer in eng.layers)
    target = sum(tdm.target) / total
    plus = sum(t + e for t, e in zip(tdm.target, tdm.extra)) / total
    per_task = [[(e["event"], e["density"]) for e in tdm.log if e["task"] == t] for t in range(2)]
    expected = [("expand", plus), ("cycle", target), ("cycle", target), ("shrink", target)]
    for events in per_task:  # the schedule restarts at every task
        assert [k for k, _ in events] == [k for k, _ in expected]
        for (_, got), (_, want) in zip(events, expected):
            assert abs(got - want) < 1e-12
    assert [layer.count for layer in eng.layers] == tdm.target  # exact per-layer count at the end
    assert abs(summary["density"]["overall"] - target) < 1e-12
    assert all(name.startswith("hidden.") for name in eng.masks)  # classifier dense (release default)
    for layer in eng.layers:  # inactive weights exactly zero
        assert torch.all(layer.param[~layer.mask] == 0)


def test_tdm_cycle_drops_lowest_importance_and_regrows_elsewhere(tmp_path):
    run, _ = train(tmp_path, "tasks=1", "epochs=1", "sparcl.tdm=true", "sparsity.density=0.5",
                   "sparcl.tdm_interval=0.5", "sparcl.tdm_freeze=0.9", "sparcl.tdm_importance=release")
    tdm = next(c for c in run.components if isinstance(c, TaskAwareDynamicMasking))
    assert [e["event"] for e in tdm.log] == ["expand", "cycle", "shrink"]


def test_tdm_weight_dropped_and_regrown_in_one_cycle_restarts_at_zero(tmp_path):
    run, _ = train(tmp_path, "tasks=1", "epochs=1", "sparcl.tdm=true", "sparsity.density=0.9", "momentum=0.9",
                   "sparcl.tdm_step=0.05")
    tdm = next(c for c in run.components if isinstance(c, TaskAwareDynamicMasking))
    eng = run.engine
    installed: dict[str, list[torch.Tensor]] = {}
    set_mask = eng.set_mask
    eng.set_mask = lambda name, m: (installed.setdefault(name, []).append(m.clone()), set_mask(name, m))[1]
    before = {layer.name: (layer.mask.clone(), layer.param.detach().clone()) for layer in eng.layers}
    cycle = next(e for e in task_events(run.cfg.sparcl) if e.kind == "cycle")
    tdm._apply(cycle, LoopState(run.model, run.optimizer, None, torch.device("cpu"), total_steps=1))
    regrown_dropped = 0
    for layer in eng.layers:
        old_mask, old_w = before[layer.name]
        after_drop = installed[layer.name][0]
        back = old_mask & ~after_drop & layer.mask  # dropped, then grown again in the same cycle
        regrown_dropped += int((old_w[back] != 0).sum())  # they held weights ...
        assert bool((layer.param[back] == 0).all())  # ... and restart at 0
        state = run.optimizer.state[layer.param]
        assert "momentum_buffer" not in state or bool((state["momentum_buffer"][back] == 0).all())
    assert regrown_dropped > 0  # the case is exercised (with nonzero weights to lose)


def _state(active: torch.Tensor, epoch: int, epochs: int) -> LoopState:
    model = nn.Linear(2, 2)
    st = LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1), None, torch.device("cpu"), total_steps=1,
                   epochs_per_task=epochs)
    st.active_idx, st.epoch = active, epoch
    return st


def _record(ddr: DynamicDataRemoval, idx: torch.Tensor, correct: torch.Tensor, st: LoopState) -> None:
    y = torch.zeros(len(idx), dtype=torch.long)
    logits = torch.stack([correct.float(), 1 - correct.float()], 1)  # argmax 0 == y where correct
    batch = Batch(torch.zeros(len(idx), 1), y, torch.zeros(len(idx), 1, dtype=torch.uint8), idx, 0)
    ddr.after_step(st, batch, StepOutput(torch.zeros(()), logits, len(idx)))


def test_ddr_removes_exact_counts_easiest_first_and_never_again():
    n = 20
    ddr = DynamicDataRemoval(n, ratio=0.3, removals=3, start=0.25, interval=0.25,
                             generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    st = _state(torch.arange(n), 0, 4)
    ddr.on_task_start(st, None)
    assert [ddr.count(k) for k in range(3)] == [2, 2, 2]
    idx = torch.arange(n)
    # examples 0-9: always right (0 forgetting events); 10-14: right, wrong, right (1 event); 15-19 never right
    pattern = [torch.arange(n) < 15, torch.arange(n) < 10, torch.arange(n) < 15]
    for c in pattern:
        _record(ddr, idx, c, st)
    ddr.on_epoch_end(st, type("T", (), {"id": 0})())
    removed = set(range(n)) - set(st.active_idx.tolist())
    assert len(removed) == 2 and removed <= set(range(10))  # the easiest (never forgotten, learned)
    seen_removed = set(removed)
    for e in (1, 2):
        st.epoch = e
        for c in pattern:
            _record(ddr, st.active_idx, c[st.active_idx], st)
        before = set(st.active_idx.tolist())
        ddr.on_epoch_end(st, type("T", (), {"id": 0})())
        after = set(st.active_idx.tolist())
        assert after < before and len(before - after) == 2 and not (after & seen_removed)
        seen_removed |= before - after
    assert len(st.active_idx) == n - 6 and set(range(15, 20)) <= set(st.active_idx.tolist())
    stats = (ddr.prev.clone(), ddr.forgets.clone(), ddr.learned.clone())
    _record(ddr, st.active_idx, torch.ones(n - 6, dtype=torch.bool), st)  # all removals done: not recorded
    assert all(torch.equal(a, b) for a, b in zip(stats, (ddr.prev, ddr.forgets, ddr.learned)))
    st.epoch = 3  # last epoch: nothing more is removed
    ddr.on_epoch_end(st, type("T", (), {"id": 0})())
    assert len(st.active_idx) == n - 6


def test_ddr_counts_forgetting_across_a_removal_with_one_presentation_per_window():
    """One epoch per window (a few epochs per task): the presentation before a removal is the history the
    next window's first presentation is compared with, so a correct -> wrong transition still counts."""
    n = 20
    ddr = DynamicDataRemoval(n, ratio=0.5, removals=2, start=1 / 3, interval=1 / 3,
                             generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    st = _state(torch.arange(n), 0, 3)
    ddr.on_task_start(st, None)
    _record(ddr, torch.arange(n), torch.ones(n, dtype=torch.bool), st)  # epoch 0: all right
    ddr.on_epoch_end(st, type("T", (), {"id": 0})())
    assert len(st.active_idx) == 15
    st.epoch = 1
    active = st.active_idx
    forgot = active[:5]  # right in epoch 0, wrong now: one forgetting event each
    _record(ddr, active, ~torch.isin(active, forgot), st)
    assert ddr.forgets[forgot].tolist() == [1] * 5 and int(ddr.forgets.sum()) == 5
    ddr.on_epoch_end(st, type("T", (), {"id": 0})())
    removed = set(active.tolist()) - set(st.active_idx.tolist())
    assert len(removed) == 5 and not removed & set(forgot.tolist())  # the forgotten ones are harder: kept
    ddr.on_task_start(_state(torch.arange(n), 0, 3), None)  # a new task has no history
    assert bool((ddr.prev == -1).all()) and not bool(ddr.forgets.any())


def test_ddr_records_nothing_in_a_tasks_last_epoch():
    ddr = DynamicDataRemoval(6, ratio=0.5, removals=1, start=0.5, interval=0.5,
                             generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    for epochs, recorded in ((1, False), (2, True)):
        st = _state(torch.arange(6), 0, epochs)
        ddr.on_task_start(st, None)
        _record(ddr, torch.arange(6), torch.arange(6) < 3, st)
        assert bool(ddr.learned.any()) == recorded and bool((ddr.prev >= 0).any()) == recorded


def test_ddr_in_the_loop_shrinks_epochs_by_the_configured_counts(tmp_path):
    run, _ = train(tmp_path, "tasks=1", "epochs=4", "sparcl.ddr=true", "sparcl.ddr_ratio=0.4",
                   "sparcl.ddr_removals=2", "sparcl.ddr_start=0.25", "sparcl.ddr_interval=0.25")
    import json

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    sizes = [x["examples"] for x in lines if x["event"] == "epoch"]
    n = run.stream.tasks[0].train_idx.numel()
    r = round(0.4 * n / 2)
    assert sizes == [n, n - r, n - round(0.4 * n), n - round(0.4 * n)]


def test_dgm_masked_gradient_equals_dense_gradient_times_mask():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    dense = {n: p.grad.clone() for n, p in model.named_parameters()}
    dgm = DynamicGradientMasking({"0.weight": model[0].weight}, ratio=0.8, interval=30, alpha=0.5, beta=0.5)
    out = StepOutput(loss, torch.zeros(8, 3), 8)
    dgm.after_backward(None, None, out)
    mask = dgm.masks["0.weight"]
    assert int(mask.sum()) == round(0.2 * 30)
    top = torch.topk(dense["0.weight"].abs().flatten(), 6).indices
    assert set(mask.flatten().nonzero().flatten().tolist()) == set(top.tolist())
    assert torch.equal(model[0].weight.grad, dense["0.weight"] * mask)
    assert torch.equal(model[2].weight.grad, dense["2.weight"])  # dense layers untouched
    assert dgm.grad_densities() == {"0.weight": 0.2}
    # reused in between refreshes: a new gradient is masked with the SAME mask
    model.zero_grad()
    nn.functional.cross_entropy(model(x * 2), y).backward()
    fresh = model[0].weight.grad.clone()
    dgm.after_backward(None, None, out)
    assert torch.equal(dgm.masks["0.weight"], mask) and torch.equal(model[0].weight.grad, fresh * mask)


def test_all_switches_off_is_bit_identical_to_dense_derpp(tmp_path):
    _, a = train(tmp_path / "a")
    _, b = train(tmp_path / "b", "sparcl.ddr_ratio=0.5", "sparcl.dgm_ratio=0.9", "sparcl.tdm_step=0.02")
    for s in (a, b):
        for k in (*TIMING_KEYS, "config"):
            s.pop(k, None)
    assert a == b


def test_sparcl_flops_by_hand_on_a_two_layer_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))

    class Engine:  # layer 0 at density 0.5, layer 1 dense
        mask_version = 0
        density = 0.5

        @staticmethod
        def needs_dense_grad():
            return False

        def densities(self):
            return {"overall": self.density, "layers": {"0.weight": self.density}}

    class Grads:
        @staticmethod
        def step_grad_densities():
            return {"0.weight": 0.25}

    meter = FlopsMeter(model, (4,), Engine(), grad_density=Grads())
    assert [c.macs for c in meter.profile] == [12, 6]
    meter.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), n_forward=10, n_forward_only=2))
    # per example: forward 2*(12*0.5 + 6) = 24; grad to activations 24; grad to weights 2*(12*0.25 + 6) = 18
    # 10 examples with backward: 10 * 66 = 660; 2 forward-only: 2 * 24 = 48
    rep = meter.report()
    assert rep["train"] == 708
    # dense: forward 2*(12+6) = 36 per example, 3x with backward: 10 * 108 + 2 * 36 = 1152
    assert rep["train_dense"] == 1152
    # a second identical step is charged with the first (same key): exactly twice the counts
    meter.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), n_forward=10, n_forward_only=2))
    assert meter.report()["train"] == 2 * 708
    assert profile_layers(model, (4,))[0].param == "0.weight"
    # an extra backward (SparCL's gradient split) over the step's 10 examples: activations 24 + weights at
    # the WEIGHT density 2*(12*0.5 + 6) = 24 per example; dense 2 * 36
    meter.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), n_forward=10, extra_backward=1))
    rep = meter.report()
    assert rep["train"] == 2 * 708 + 660 + 480 and rep["train_dense"] == 3 * 1152 - 72 + 720

    # a step a component asked dense weight gradients for (TDM's gradient regrowth)
    dense = FlopsMeter(model, (4,), Engine(), grad_density=Grads(), flags=ExecutionFlags())
    dense.flags.dense_step = True
    dense.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), n_forward=10))
    # weights' gradient dense: 2*(12 + 6) = 36 per example instead of 18
    assert dense.report()["train"] == 10 * (24 + 24 + 36)


def test_flops_of_a_step_are_charged_at_the_masks_it_ran_under():
    """A mask update at the end of a step (engine.step(), TDM's after_step) counts from the next step on."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))

    class Engine:
        mask_version, density = 0, 0.5

        @staticmethod
        def needs_dense_grad():
            return False

        def densities(self):
            return {"overall": self.density, "layers": {"0.weight": self.density}}

    engine = Engine()
    meter = FlopsMeter(model, (4,), engine)
    out = StepOutput(torch.zeros(()), torch.zeros(1), n_forward=1)
    meter.after_backward(None, None, out)  # step 1 runs at density 0.5 ...
    engine.mask_version, engine.density = 1, 0.25  # ... and its after_step prunes to 0.25
    meter.after_step(None, None, out)
    assert meter.report()["train"] == 3 * 2 * (12 * 0.5 + 6)  # forward, both gradients at 0.5
    meter.after_backward(None, None, out)  # step 2 at 0.25
    assert meter.report()["train"] == 3 * 2 * (12 * 0.5 + 6) + 3 * 2 * (12 * 0.25 + 6)


def test_dgm_keeps_only_active_entries_under_a_weight_mask():
    torch.manual_seed(1)
    model = nn.Linear(10, 10)
    nn.functional.mse_loss(model(torch.randn(4, 10)), torch.randn(4, 10)).backward()
    wmask = torch.zeros(10, 10, dtype=torch.bool)
    wmask[:, :3] = True  # 30 % active

    class Engine:
        mask_version = 0
        masks = {"weight": wmask}

    engine = Engine()
    dgm = DynamicGradientMasking({"weight": model.weight}, ratio=0.8, interval=30, alpha=0.5, beta=0.5, engine=engine)
    dense = model.weight.grad.clone()
    dgm.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), 1))
    kept = dgm.masks["weight"].bool()
    assert int(kept.sum()) == 20 and not (kept & ~wmask).any()  # top 20 of the 30 active entries
    # DGM zeroes the dropped ACTIVE entries only (inactive ones are the engine's weight mask's job)
    assert torch.equal(model.weight.grad, torch.where(wmask & ~kept, 0.0, dense))
    assert torch.equal(model.weight.grad * wmask, dense * kept)
    top = torch.topk((dense.abs() * wmask).flatten(), 20).indices
    assert set(kept.flatten().nonzero().flatten().tolist()) == set(top.tolist())
    assert dgm.grad_densities() == {"weight": 0.2}


def test_dgm_rescores_at_once_when_the_weight_masks_change():
    """A weight TDM grows mid-interval gets its gradient on the next step, not at the next scheduled refresh."""
    weight = nn.Parameter(torch.zeros(2, 4))
    wmask = torch.tensor([[True, True, False, False], [True, True, False, False]])

    class Engine:
        mask_version = 0
        masks = {"weight": wmask}

    engine = Engine()
    dgm = DynamicGradientMasking({"weight": weight}, ratio=0.5, interval=30, alpha=0.5, beta=0.5, engine=engine)
    out = StepOutput(torch.zeros(()), torch.zeros(1), 1)
    weight.grad = torch.arange(1.0, 9.0).view(2, 4)
    dgm.after_backward(None, None, out)
    assert dgm.refreshes == 1 and not dgm.refresh_due()
    weight.grad = torch.arange(1.0, 9.0).view(2, 4)
    assert dgm.step_grad_densities() is None  # a refresh step is charged the whole active gradient
    dgm.after_backward(None, None, out)  # same masks: the gradient mask is reused
    assert dgm.refreshes == 1 and dgm.step_grad_densities() == {"weight": 0.5}
    grown = torch.tensor([[True, True, True, True], [False, False, False, False]])
    engine.masks, engine.mask_version = {"weight": grown}, 1  # a mask update (as TDM's) between steps
    assert dgm.refresh_due()
    weight.grad = torch.arange(1.0, 9.0).view(2, 4)
    dgm.after_backward(None, None, out)
    assert dgm.refreshes == 2 and weight.grad[0].tolist() == [1.0, 2.0, 3.0, 4.0]  # the grown weights' too
    assert dgm.state_dict()["scored_under"] == 1


def test_dgm_never_keeps_a_zero_score_gradient():
    """Fewer active entries score above 0 than there are slots: the release's top-k fills up with
    zero-score (inactive) entries, so exactly the positive-score active ones keep their gradient."""
    weight = nn.Parameter(torch.zeros(4, 5))
    weight.grad = torch.zeros(4, 5)
    weight.grad[0, :3] = torch.tensor([3.0, -1.0, 2.0])  # unit 0 alive; units 1-3 dead (zero gradient)
    wmask = torch.zeros(4, 5, dtype=torch.bool)
    wmask[:, :3] = True  # 12 active, 3 of them with a nonzero gradient

    class Engine:
        mask_version = 0
        masks = {"weight": wmask}

    dgm = DynamicGradientMasking({"weight": weight}, ratio=0.5, interval=30, alpha=0.5, beta=0.5, engine=Engine())
    dgm.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), 1))  # keep = 10 slots
    assert dgm.masks["weight"].flatten().nonzero().flatten().tolist() == [0, 1, 2]


def test_topk_mask_among_ranks_only_the_given_entries():
    score = torch.tensor([[9.0, 1.0, 5.0], [7.0, 3.0, 8.0]])
    among = torch.tensor([1, 2, 4, 5])  # flat indices: scores 1, 5, 3, 8
    assert topk_mask(score, 2, among).tolist() == [[False, False, True], [False, False, True]]
    assert topk_mask(score, 9, among).flatten().nonzero().flatten().tolist() == [1, 2, 4, 5]  # at most all
    assert topk_mask(score, 2).tolist() == [[True, False, False], [False, False, True]]  # no among: all ranked
    assert not topk_mask(score, 0, among).any()


def test_sparcl_runs_resolve_masked_head_and_dgm_ratio():
    """SparCL's importance terms are defined on the masked-head loss (the release's --use_cl_mask): on by
    default in a SparCL run, off in a plain one, as set when given; g defaults to 1 - 0.8 x density."""
    base = ["method=derpp", "buffer_size=100", "tasks=2"]
    sparcl = make_config(TrainConfig, None, [*base, "sparcl.tdm=true", "sparcl.dgm=true", "sparsity.density=0.1"])
    assert sparcl.continual.masked_head is True and sparcl.sparcl.dgm_ratio == 0.92
    assert make_config(TrainConfig, None, [*base, "sparcl.ddr=true"]).continual.masked_head is True
    assert make_config(TrainConfig, None, base).continual.masked_head is False
    off = make_config(TrainConfig, None, [*base, "sparcl.ddr=true", "masked_head=false"])
    assert off.continual.masked_head is False
    dense_dgm = make_config(TrainConfig, None, [*base, "sparcl.dgm=true"])
    assert dense_dgm.sparcl.dgm_ratio == 0.2  # dense layers: drop 20 % of the gradients, as at any density
    assert make_config(TrainConfig, None, ["method=joint", "sparcl.ddr=true", "tasks=2"]).continual.masked_head is None


def test_ddr_task_window_ranks_by_the_whole_history():
    """``window="task"``: counts survive a removal, so examples forgotten before the first removal still
    rank hardest at the second; the default window starts afresh (all scores 0 here)."""
    n = 12
    for window in ("task", "removal"):
        ddr = DynamicDataRemoval(n, ratio=0.5, removals=2, start=1 / 4, interval=1 / 4,
                                 generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), window=window)
        st = _state(torch.arange(n), 0, 4)
        ddr.on_task_start(st, None)
        forgetful = torch.arange(n) < 3
        _record(ddr, torch.arange(n), torch.ones(n, dtype=torch.bool), st)  # all right
        _record(ddr, torch.arange(n), ~forgetful, st)  # 0-2 forget (one event each)
        _record(ddr, torch.arange(n), torch.ones(n, dtype=torch.bool), st)  # all right again
        ddr.on_epoch_end(st, type("T", (), {"id": 0})())  # removes 3 of the never-forgotten 3-11
        assert set(range(3)) <= set(st.active_idx.tolist())
        st.epoch = 1
        _record(ddr, st.active_idx, torch.ones(len(st.active_idx), dtype=torch.bool), st)  # all right
        assert ddr.forgets[:3].tolist() == ([1, 1, 1] if window == "task" else [0, 0, 0])
        ddr.on_epoch_end(st, type("T", (), {"id": 0})())  # removes 3 more
        assert len(st.active_idx) == n - 6
        if window == "task":
            assert set(range(3)) <= set(st.active_idx.tolist())  # still the hardest: kept


def test_tdm_on_tasks_too_short_for_the_schedule_still_ends_each_at_the_target(tmp_path):
    """About 6 steps per task, 10 events needing 5 gradient batches each: superseded events are skipped
    (logged), nothing fires after the freeze shrink, and the shrink happens by the task's end."""
    run, summary = train(tmp_path, "sparcl.tdm=true", "sparsity.density=0.2", "epochs=1", "batch_size=128")
    tdm = next(c for c in run.components if isinstance(c, TaskAwareDynamicMasking))
    assert max(run.plan) <= 6
    for t in range(2):
        events = [e for e in tdm.log if e["task"] == t]
        applied = [e["event"] for e in events if not e.get("skipped")]
        assert applied[-1] == "shrink" and applied.count("shrink") == 1
        assert any(e.get("skipped") for e in events)
    assert [layer.count for layer in run.engine.layers] == tdm.target
    assert abs(summary["density"]["overall"] - sum(tdm.target) / sum(l.numel for l in run.engine.layers)) < 1e-12


def _host_args(name: str) -> list[str]:
    """The smallest valid continual section for method ``name`` (buffer, replay size as it reads them)."""
    from sparsecl.continual.methods import CL_METHODS

    reads = CL_METHODS.get(name).options
    args = [f"method={name}"]
    if "buffer_size" in reads:
        args.append("buffer_size=60")
    if "replay_batch_size" in reads:
        args.append("replay_batch_size=16")
    return args


def _all_methods() -> list[str]:
    from sparsecl.continual.methods import CL_METHODS

    return CL_METHODS.names()


@pytest.mark.parametrize("name", _all_methods())
def test_all_three_switches_compose_with_every_continual_method(name, tmp_path):
    """SparCL on any host: the run ends, every task ends at the target density, DDR shrank the data and
    the training FLOPs are far below the dense count."""
    base = ["dataset=digits", "model=mlp", "hidden=64,64", "tasks=2", "batch_size=16", "epochs=2", "lr=0.05",
            "progress=false", "seed=1", "checkpoint.at_task_end=false", "checkpoint.keep_model=false"]
    cfg = make_config(TrainConfig, None, [*base, *_host_args(name), "sparsity.density=0.2", "sparcl.tdm=true",
                                          "sparcl.ddr=true", "sparcl.dgm=true", "sparcl.dgm_ratio=0.9"])
    run = build_run(cfg)
    summary = Trainer(run, tmp_path, stream_out=lambda *a: None).fit()
    ends = [r["density"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "task_end"]
    trained = [n > 0 for n in run.plan]
    assert ends and all(abs(d - 0.2) < 1e-3 for d, t in zip(ends, trained) if t)
    assert summary["flops"]["train"] < 0.5 * summary["flops"]["train_dense"]
    full = 2 * sum(run.method.train_size(t) for t in run.stream.tasks)  # 2 epochs over every training set
    assert summary["data_examples"] < full  # DDR removed examples from the later epochs
