"""The public API (``sparsecl.<name>``, docs/api.md): lazy, complete, and each piece usable on its own."""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsecl
from sparsecl.continual.replay import derpp_terms
from sparsecl.data.dataset import DataError


def test_import_is_light_and_every_public_name_resolves():
    code = ("import sys, sparsecl; assert 'torch' not in sys.modules, 'import sparsecl loaded torch'; "
            "import sparsecl.train.build; assert callable(sparsecl.train); "
            "[getattr(sparsecl, n) for n in sparsecl.__all__]; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-1500:]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparsecl.nope  # noqa: B018


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _steps(model, optimizer, sparsifier, x, y, n, start):
    for i in range(start, start + n):
        optimizer.zero_grad()
        F.cross_entropy(model(x[i % 4::4]), y[i % 4::4]).backward()
        sparsifier.step()


def test_sparsifier_state_dict_round_trip_resumes_bit_identically():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)

    def fresh():
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt, sparsecl.Sparsifier(model, opt, method="rigl", density=0.25, total_steps=40, delta_t=5)

    model, opt, sp = fresh()
    assert sp.density() == pytest.approx(0.25, abs=1e-3)
    _steps(model, opt, sp, x, y, 12, 0)
    saved = copy.deepcopy([m.state_dict() for m in (model, opt, sp)])
    _steps(model, opt, sp, x, y, 13, 12)  # crosses mask updates at steps 15, 20, 25
    m2, o2, s2 = fresh()
    for obj, sd in zip((m2, o2, s2), saved):
        obj.load_state_dict(sd)
    _steps(m2, o2, s2, x, y, 13, 12)
    for (n, a), b in zip(model.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), n
    assert all(torch.equal(sp.masks[n], s2.masks[n]) for n in sp.masks)
    assert sp.engine.mask_version == s2.engine.mask_version > 0


def test_sparsifier_validates_through_sparsity_config():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="sparsity.method"):
        sparsecl.Sparsifier(model, opt, method="nope", density=0.1, total_steps=10)


def test_array_dataset_from_float_grey_tensors():
    x = torch.linspace(0, 1, 6 * 4).reshape(6, 2, 2)
    ds = sparsecl.ArrayDataset.from_tensors("t", x, torch.tensor([0, 1, 2, 0, 1, 2]), x[:2], torch.tensor([0, 2]))
    assert ds.x_train.dtype == torch.uint8 and ds.input_shape == (1, 2, 2) and ds.num_classes == 3
    assert int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0
    with pytest.raises(DataError, match="uint8, or float in \\[0, 1\\]"):
        sparsecl.ArrayDataset.from_tensors("t", x * 2, torch.zeros(6).long(), x, torch.zeros(6).long())


@pytest.fixture
def registry(monkeypatch):
    """The dataset registry as it was: names registered by a test are gone afterwards."""
    from sparsecl.data.registry import DATASETS

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))


def test_register_dataset_by_name_and_twice_refused(registry):
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    ds = sparsecl.ArrayDataset.from_tensors("mine", x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([1, 0, 1, 0]))
    sparsecl.register_dataset("test-api-mine", lambda: ds)
    assert sparsecl.load_dataset("test-api-mine") is ds
    with pytest.raises(ValueError, match="registered twice"):
        sparsecl.register_dataset("test-api-mine", ds)


def _png(path, value, size=(3, 3)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def test_image_folder_reads_labels_by_sorted_class_folder(tmp_path, registry):
    pytest.importorskip("PIL")
    for split in ("train", "test"):
        _png(tmp_path / split / "b" / "1.png", 200)
        _png(tmp_path / split / "a" / "2.png", 10)
        _png(tmp_path / split / "a" / "1.png", 20)
    sparsecl.register_image_folder("test-api-folder", tmp_path, mode="L")
    ds = sparsecl.load_dataset("test-api-folder")
    assert ds.y_train.tolist() == [0, 0, 1]  # a, a, b
    assert ds.x_train[:, 0, 0, 0].tolist() == [20, 10, 200]  # file-name order within a class
    assert ds.input_shape == (1, 3, 3)


def test_image_folder_refuses_mixed_sizes_and_class_mismatch(tmp_path):
    pytest.importorskip("PIL")
    from sparsecl.data.folder import ImageFolderReader

    for split in ("train", "test"):
        _png(tmp_path / split / "a" / "1.png", 1)
        _png(tmp_path / split / "b" / "1.png", 1)
    _png(tmp_path / "train" / "b" / "2.png", 1, size=(4, 4))
    with pytest.raises(DataError, match="resize them to one size"):
        ImageFolderReader("L")(tmp_path, 2)
    (tmp_path / "train" / "b" / "2.png").unlink()
    _png(tmp_path / "test" / "c" / "1.png", 1)
    with pytest.raises(DataError, match="class folders differ"):
        ImageFolderReader("L")(tmp_path, 2)


def _buffer(store_logits=True):
    return sparsecl.Buffer(8, (3,), 4, device="cpu", generator=torch.Generator().manual_seed(0),
                           store_logits=store_logits, dtype=torch.float32)


def test_replay_terms_are_the_methods_terms_on_the_same_draws():
    model = nn.Linear(3, 4)
    replay = sparsecl.DERppReplay(_buffer(), alpha=0.3, beta=0.5, generator=torch.Generator().manual_seed(2))
    assert float(replay.loss(model, 4)) == 0.0  # empty buffer
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, generator=g), torch.randint(0, 4, (6,), generator=g)
    replay.observe(x, y, torch.randn(6, 4, generator=g))
    state = replay.generator.get_state()
    got = replay.loss(model, 4)
    replay.generator.set_state(state)
    r1, r2 = replay.draw(4), replay.draw(4)
    assert torch.equal(got, derpp_terms(model(r1.x), r1.logits, model(r2.x), r2.y, 0.3, 0.5))
    with pytest.raises(ValueError, match="store_logits=True"):
        sparsecl.DERReplay(_buffer(False), alpha=0.3, generator=torch.Generator())
    er = sparsecl.ERReplay(_buffer(False), generator=torch.Generator().manual_seed(4))
    er.observe(x, y, torch.randn(6, 4))  # logits ignored: this buffer keeps none
    assert len(er.buffer) == 6 and er.loss(model, 3).requires_grad


class _Rec(sparsecl.Component):
    def __init__(self, log, name):
        self.log, self.name, self.n = log, name, 0

    def after_step(self, state, batch, out):
        self.log.append(self.name)
        self.n += 1

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, sd):
        self.n = sd["n"]


def test_pipeline_calls_in_order_stores_state_by_name_and_refuses_a_wrong_order():
    log = []
    p = sparsecl.Pipeline({"tdm": _Rec(log, "tdm"), "mine": _Rec(log, "mine"), "dgm": _Rec(log, "dgm")},
                          order=("tdm", "dgm"))
    p.after_step(None, None, None)
    assert log == ["tdm", "mine", "dgm"]
    assert p.state_dict() == {"tdm": {"n": 1}, "mine": {"n": 1}, "dgm": {"n": 1}}
    with pytest.raises(ValueError, match="does not match"):
        p.load_state_dict({"tdm": {"n": 0}})
    with pytest.raises(ValueError, match="wrong order: dgm, tdm; they must run as tdm, dgm"):
        sparsecl.Pipeline({"dgm": _Rec(log, "dgm"), "tdm": _Rec(log, "tdm")}, order=("tdm", "dgm"))


def test_train_from_python_refuses_a_foreign_folder_and_resume_continues_the_run(tmp_path):
    from sparsecl.configtools import ConfigError
    from sparsecl.train.api import resume

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    cfg = {"dataset": "digits", "hidden": [32], "epochs": 1, "progress": False, "checkpoint.keep_model": False}
    with pytest.raises(ConfigError, match="holds no sparsecl run"):
        sparsecl.train(cfg, tmp_path / "foreign", stream_out=lambda line: None)
    lines = []
    summary = sparsecl.train(cfg, tmp_path / "run", stream_out=lines.append, sparsity__method="set",
                             sparsity__density=0.5)
    assert summary["density"]["overall"] == pytest.approx(0.5, abs=1e-3)
    assert summary["config"]["sparsity"]["method"] == "set" and any("task 1/1" in line for line in lines)
    again = resume(tmp_path / "run", stream_out=lambda line: None)  # finished: nothing left, same results
    assert again["acc_matrix"] == summary["acc_matrix"]


def test_the_run_declares_one_ordered_pipeline_and_a_wrong_order_is_refused():
    from sparsecl.configtools import make_config
    from sparsecl.train.build import PIPELINE_ORDER, build_run

    cfg = make_config(sparsecl.TrainConfig, {"dataset": "digits", "tasks": 2, "method": "derpp", "buffer_size": 50,
                                             "sparsity.density": 0.2, "sparcl.tdm": True, "sparcl.ddr": True,
                                             "sparcl.dgm": True, "progress": False})
    run = build_run(cfg)
    assert run.components.names() == ["method", "execution", "tdm", "ddr", "dgm", "flops"]
    parts = dict(run.components.components)
    swapped = {k: parts[k] for k in ("method", "execution", "dgm", "ddr", "tdm", "flops")}
    with pytest.raises(ValueError, match="wrong order"):
        sparsecl.Pipeline(swapped, PIPELINE_ORDER)
    # TDM and DGM share one gradient split: a step on which both score takes ONE extra backward
    tdm, dgm = parts["tdm"], parts["dgm"]
    assert tdm.split is dgm.split
    model = run.model
    x = run.stream.dataset.x_train[:8].float().div(255)
    tdm.on_task_start(run_state := sparsecl.LoopState(model, run.optimizer, None, torch.device("cpu"), 10), None)
    logits = model(x)
    cur, buf = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)), logits.pow(2).mean()
    out = sparsecl.StepOutput(cur + buf, logits, 8, parts={"current": cur, "buffer": buf})
    run_state.task_progress = 0.1  # TDM's first cycle is due (it collects gradients); DGM has no masks yet
    tdm.before_backward(run_state, None, out)
    dgm.before_backward(run_state, None, out)
    assert out.extra_backward == 1
    assert all(a is b for a, b in zip(tdm._pending_gcur, dgm._gcur, strict=True))


def test_tdm_queries_are_pure():
    sc = sparsecl.SparclConfig(tdm=True, tdm_interval=0.2, tdm_freeze=0.5)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsecl.MaskEngine(model, opt, sparsecl.SparsityConfig(method="magnitude", density=0.5), 10)
    engine.begin()
    tdm = sparsecl.TaskAwareDynamicMasking(engine, sc, torch.Generator().manual_seed(0))
    state = sparsecl.LoopState(model, opt, None, torch.device("cpu"), 10)
    tdm.on_task_start(state, None)
    state.task_progress = 0.45  # the cycle at 0.2 and at 0.4 are due: 0.2 is superseded
    keys = ("next_event", "collected", "log")
    before = copy.deepcopy({k: tdm.state_dict()[k] for k in keys})
    assert tdm._due(state).at == pytest.approx(0.4)
    assert not tdm.needs_dense_grad(state)
    assert {k: tdm.state_dict()[k] for k in keys} == before  # queries changed nothing
    tdm._skip(state)  # an acting hook commits the skip: logged once
    tdm._skip(state)
    assert [e for e in tdm.log if e.get("skipped")] == [{"task": 0, "event": "cycle", "at": 0.2, "skipped": True}]


def test_derived_settings_are_explicit_printed_and_in_the_summary(tmp_path):
    from sparsecl.configtools import make_config, to_dict

    given = {"dataset": "digits", "tasks": 2, "epochs": 1, "method": "derpp", "buffer_size": 50,
             "sparsity.density": 0.2, "sparcl.tdm": True, "sparcl.dgm": True, "progress": False,
             "checkpoint.keep_model": False}
    cfg = make_config(sparsecl.TrainConfig, given)
    assert {d["key"]: (d["given"], d["value"]) for d in cfg.derived} == {
        "sparsity.lr_scaling": ("auto", "inverse"), "sparsity.method": ("auto", "magnitude"),
        "sparsity.layers": ("all", "sparcl"), "continual.masked_head": (None, True), "sparcl.dgm_ratio": (None, 0.84)}
    assert make_config(sparsecl.TrainConfig, to_dict(cfg)).derived == []  # resolved: nothing left to derive
    assert cfg.resolve() == []
    lines = []
    summary = sparsecl.train(cfg, tmp_path / "run", stream_out=lines.append)
    assert summary["derived"] == cfg.derived
    assert "derived sparsity.layers=sparcl (given all): TDM sparsifies sparcl.layers" in lines
