"""SparCL: TDM densities and schedule, DDR removal counts, DGM masking, the all-off identity, FLOPs."""

from __future__ import annotations

import torch
from torch import nn

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.data.batch import Batch
from sparsecl.sparcl.config import SparclConfig
from sparsecl.sparcl.ddr import DynamicDataRemoval
from sparsecl.sparcl.dgm import DynamicGradientMasking, topk_mask
from sparsecl.sparcl.tdm import TaskAwareDynamicMasking, task_events
from sparsecl.sparse.flops import profile_layers
from sparsecl.train.build import build_run
from sparsecl.train.hooks import LoopState, StepOutput
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
        last_step = type("S", (), {"dense_weight_grad": False})()

        @staticmethod
        def densities():
            return {"overall": 0.5, "layers": {"0.weight": 0.5}}

    class Grads:
        @staticmethod
        def grad_densities():
            return {"0.weight": 0.25}

    meter = FlopsMeter(model, (4,), Engine(), grad_density=Grads())
    assert [c.macs for c in meter.profile] == [12, 6]
    meter.after_step(None, None, StepOutput(torch.zeros(()), torch.zeros(1), n_forward=10, n_forward_only=2))
    # per example: forward 2*(12*0.5 + 6) = 24; grad to activations 24; grad to weights 2*(12*0.25 + 6) = 18
    # 10 examples with backward: 10 * 66 = 660; 2 forward-only: 2 * 24 = 48
    rep = meter.report()
    assert rep["train"] == 708
    # dense: forward 2*(12+6) = 36 per example, 3x with backward: 10 * 108 + 2 * 36 = 1152
    assert rep["train_dense"] == 1152
    # a second identical step is charged with the first (same key): exactly twice the counts
    meter.after_step(None, None, StepOutput(torch.zeros(()), torch.zeros(1), n_forward=10, n_forward_only=2))
    assert meter.report()["train"] == 2 * 708
    assert profile_layers(model, (4,))[0].param == "0.weight"


def test_dgm_keeps_only_active_entries_under_a_weight_mask():
    torch.manual_seed(1)
    model = nn.Linear(10, 10)
    nn.functional.mse_loss(model(torch.randn(4, 10)), torch.randn(4, 10)).backward()
    wmask = torch.zeros(10, 10, dtype=torch.bool)
    wmask[:, :3] = True  # 30 % active

    class Engine:
        mask_version = 0
        masks = {"weight": wmask}
        told: list = []

        def premasked(self, params):
            self.told = list(params)

    engine = Engine()
    dgm = DynamicGradientMasking({"weight": model.weight}, ratio=0.8, interval=30, alpha=0.5, beta=0.5, engine=engine)
    dense = model.weight.grad.clone()
    dgm.after_backward(None, None, StepOutput(torch.zeros(()), torch.zeros(1), 1))
    kept = dgm.masks["weight"].bool()
    assert int(kept.sum()) == 20 and not (kept & ~wmask).any()  # top 20 of the 30 active entries
    # the gradient is masked by DGM and the weight mask in one multiply, and the engine is told to skip its own
    assert torch.equal(model.weight.grad, dense * kept) and engine.told == [model.weight]
    top = torch.topk((dense.abs() * wmask).flatten(), 20).indices
    assert set(kept.flatten().nonzero().flatten().tolist()) == set(top.tolist())
    assert dgm.grad_densities() == {"weight": 0.2}


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

        def premasked(self, params):
            pass

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
