"""Issue 21: defaults and a command line that do not trap a new user. One test (or more) per case."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from sparsecl import cli
from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.train.build import build_run
from sparsecl.train.loop import MIN_STEPS_PER_EPOCH, Trainer, startup_warnings

D = ["dataset=digits", "model=mlp", "hidden=16", "epochs=1", "progress=false", "seed=0"]
RIGL = ["sparsity.method=rigl", "sparsity.density=0.1", "sparsity.distribution=erk"]


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def fit(overrides: list[str], tmp_path, name: str = "run", **kw) -> tuple[dict, list[str]]:
    lines: list[str] = []
    run = build_run(make_config(TrainConfig, None, overrides))
    s = Trainer(run, tmp_path / name, stream_out=lines.append, warn_out=lines.append, **kw).fit()
    return s, lines


# -- 1. sparse defaults that learn ------------------------------------------------------------------------
def test_sparse_defaults_rescale_and_scale_the_lr_of_sparse_layers():
    cfg = make_config(TrainConfig, None, ["dataset=digits", *RIGL])
    assert (cfg.batch_size, cfg.sparsity.init, cfg.sparsity.lr_scaling) == (32, "rescale", "inverse")
    # a quadratic anchor penalty bounds the stable lr: no factor there
    assert make_config(TrainConfig, None, [*RIGL, "method=ewc_on"]).sparsity.lr_scaling == "none"
    run = build_run(cfg)
    run.engine.begin(None)
    for layer in run.engine.layers:
        (group,) = [g for g in run.optimizer.param_groups if any(p is layer.param for p in g["params"])]
        factor = min(0.24 / cfg.lr, layer.numel / layer.count)  # lr_max 0.24: 8x the default lr
        assert group["params"] == [layer.param] and group["lr"] == pytest.approx(cfg.lr * factor)
        assert run.engine.lr_factors[layer.name] == pytest.approx(factor)
    shared = run.optimizer.param_groups[0]
    assert shared["lr"] == cfg.lr and "lr_scale" not in shared  # biases: the configured lr
    assert max(run.engine.lr_factors.values()) == pytest.approx(8.0)  # ERK leaves d ~ 0.06: 1/d capped
    sqrt = build_run(make_config(TrainConfig, None, ["dataset=digits", *RIGL, "sparsity.lr_scaling=sqrt"]))
    sqrt.engine.begin(None)
    assert sqrt.engine.lr_factors == {layer.name: pytest.approx((layer.numel / layer.count) ** 0.5)
                                      for layer in run.engine.layers}
    # the cap is on the effective step lr / (1 - momentum): at lr 0.1 + momentum 0.9 nothing is scaled,
    # at lr 0.1 without momentum at most 2.4x
    for extra, cap in ((["lr=0.1", "momentum=0.9"], 1.0), (["lr=0.1"], 2.4)):
        r = build_run(make_config(TrainConfig, None, ["dataset=digits", *RIGL, *extra]))
        r.engine.begin(None)
        assert max(r.engine.lr_factors.values()) == pytest.approx(cap)


def test_lr_factors_survive_a_schedule_and_a_resume(tmp_path):
    over = [*D, *RIGL, "lr_schedule=cosine", "epochs=2"]
    run = build_run(make_config(TrainConfig, None, over))
    trainer = Trainer(run, tmp_path / "a", stream_out=lambda *a: None, warn_out=lambda *a: None)
    trainer._begin()
    run.lr_schedule.apply(1, 0.0)  # halfway through the cosine: factor 0.5
    for g in run.optimizer.param_groups:
        assert g["lr"] == pytest.approx(run.cfg.lr * 0.5 * g.get("lr_scale", 1.0))
    state = trainer.checkpoint_state()
    again = build_run(make_config(TrainConfig, None, over))
    resumed = Trainer(again, tmp_path / "b", stream_out=lambda *a: None)
    resumed.load_checkpoint_state(state)
    assert [g["lr"] for g in again.optimizer.param_groups] == [g["lr"] for g in run.optimizer.param_groups]
    assert again.engine.lr_factors == run.engine.lr_factors


def test_lr_scaling_needs_a_group_per_sparse_layer():
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.engine import MaskEngine

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    engine = MaskEngine(model, torch.optim.SGD(model.parameters(), lr=0.1),
                        SparsityConfig(method="static", density=0.5, lr_scaling="sqrt"), 10)
    with pytest.raises(ValueError, match="needs 0.weight alone in its optimizer param group"):
        engine.begin()


def test_default_rigl_erk_90_learns_within_3_points_of_dense_on_digits(tmp_path):
    """The issue's Done-when on digits (5 epochs, seed 0; the table in benchmarks/RESULTS.md); the RigL
    paper's setting without momentum stays far behind and is warned about."""
    base = ["dataset=digits", "epochs=5", "progress=false", "seed=0", "checkpoint.keep_model=false"]
    dense, _ = fit(base, tmp_path, "dense")
    sparse, lines = fit([*base, *RIGL], tmp_path, "rigl")
    assert abs(sparse["density"]["overall"] - 0.1) < 0.01
    assert sparse["final_avg_acc"]["class_il"] > dense["final_avg_acc"]["class_il"] - 3
    assert not [ln for ln in lines if "learn slowly" in ln]
    old, lines = fit([*base, *RIGL, "sparsity.init=dense", "sparsity.lr_scaling=none"], tmp_path, "old")
    assert old["final_avg_acc"]["class_il"] < dense["final_avg_acc"]["class_il"] - 3
    assert [ln for ln in lines if ln.startswith("warning: sparse layers with sparsity.init=dense")]


# -- 2. scenarios -------------------------------------------------------------------------------------
def test_task_il_trains_with_the_task_masked_head(tmp_path):
    over = [*D, "tasks=5", "method=sgd"]
    assert make_config(TrainConfig, None, [*over, "stream=task-il"]).continual.masked_head is True
    assert not make_config(TrainConfig, None, [*over, "stream=class-il"]).continual.masked_head
    cil, _ = fit([*over, "stream=class-il"], tmp_path, "cil")
    til, lines = fit([*over, "stream=task-il"], tmp_path, "til")
    assert (cil["scenario"], til["scenario"]) == ("class-il", "task-il")
    assert til["acc_matrix"] != cil["acc_matrix"]  # it trains differently, not only reports differently
    assert til["final_avg_acc"]["task_il"] > cil["final_avg_acc"]["task_il"]
    text = "\n".join(lines).splitlines()
    titles = [ln for ln in text if "accuracy (%) on each task" in ln]
    assert titles[0].startswith("Task-IL") and titles[1].startswith("Class-IL")  # its own scenario first
    assert [ln for ln in text if ln.startswith("task 1/5:")][0].startswith("task 1/5: Task-IL ")
    with pytest.raises(ValueError, match="stream=task-il trains with a task-masked head, which method icarl"):
        make_config(TrainConfig, None, [*over, "stream=task-il", "method=icarl", "buffer_size=50"])
    with pytest.raises(ValueError, match="leave masked_head unset"):
        make_config(TrainConfig, None, [*over, "stream=task-il", "masked_head=false"])


def test_domain_il_streams_are_labelled_domain_il(tmp_path):
    s, lines = fit([*D, "stream=permuted", "tasks=2", "method=sgd"], tmp_path)
    assert s["scenario"] == "domain-il"
    text = "\n".join(lines)
    assert "Domain-IL" in text and "Task-IL" not in text and "Class-IL" not in text
    assert [ln for ln in lines if ln.startswith("task 1/2:")][0].startswith("task 1/2: Domain-IL ")


# -- 3. overrides anywhere ----------------------------------------------------------------------------
def test_overrides_are_accepted_after_the_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "dataset=digits", "--out", str(out), "hidden=8", "progress=false", "epochs=1",
                     "checkpoint.keep_model=false"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["hidden"] == [8] and cfg["progress"] is False
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--out", str(tmp_path / "x"), "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


# -- 4. suggestions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("item,hint", [
    ("sparsity=rigl", "unknown config key 'sparsity' (did you mean sparsity.method=rigl?); `sparsecl train --keys` lists every key"),
    ("method=der++", "(did you mean derpp?)"),
    ("optimiser=adam", "(did you mean optimizer=adam?)"),
    ("lrr=0.1", "unknown config key 'lrr' (did you mean lr?); `sparsecl train --keys` lists every key"),
    ("sparsity.distribution=ERK", "(did you mean erk?)"),
    ("buffer_policy=reservior", "(did you mean reservoir?)"),
])
def test_suggestions_by_closeness_over_keys_and_values(item, hint, capsys):
    assert cli.main(["train", item, "--check"]) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.strip().splitlines()) == 1


# -- 5. compare ---------------------------------------------------------------------------------------
def test_compare_counts_a_copy_of_a_run_once_and_refuses_mixed_datasets(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"d{seed}"
        assert cli.main(["train", *D, f"seed={seed}", "--out", str(out)]) == 0
        runs.append(out)
    shutil.copytree(runs[0], tmp_path / "d0-resumed")  # the same run (config and seed): not a third seed
    capsys.readouterr()
    assert cli.main(["compare", *map(str, runs), str(tmp_path / "d0-resumed")]) == 0
    got = capsys.readouterr()
    assert "d0-resumed is the same run as d0" in got.err
    assert got.out.splitlines()[2].split()[:2] == ["d0", "2"]  # one setting, two seeds
    assert cli.main(["compare", *map(str, runs), "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0].startswith("setting,seeds,scenario,Class-IL,Task-IL") and len(csv_lines) == 2
    md = tmp_path / "t.md"
    assert cli.main(["compare", *map(str, runs), "--format", "markdown", "--output", str(md)]) == 0
    assert md.read_text().startswith("| setting | seeds |") and "|---|" in md.read_text()
    other = tmp_path / "fm"
    s = summary(runs[0])
    s["config"]["dataset"] = "fashion-mnist"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps(s))
    capsys.readouterr()
    assert cli.main(["compare", str(runs[0]), str(other)]) == 2
    assert "the runs mix datasets (digits, fashion-mnist)" in capsys.readouterr().err
    assert cli.main(["compare", str(runs[0]), str(other), "--mixed"]) == 0
    got = capsys.readouterr()
    assert "warning: the runs mix datasets" in got.err
    assert [ln.split()[0] for ln in got.out.splitlines()[2:]] == ["dataset=digits", "dataset=fashion-mnist"]


# -- 6. few steps per epoch ---------------------------------------------------------------------------
def test_a_task_with_few_steps_per_epoch_is_warned_about():
    few = build_run(make_config(TrainConfig, None, [*D, "batch_size=128"]))
    (line,) = startup_warnings(few)
    assert line.startswith(f"warning: task 1 has 12 optimizer steps per epoch (1437 examples, batch_size=128); "
                           f"with fewer than {MIN_STEPS_PER_EPOCH}")
    assert startup_warnings(build_run(make_config(TrainConfig, None, D))) == []  # batch 32: 45 steps


# -- 7. datasets --------------------------------------------------------------------------------------
def test_datasets_says_how_to_get_each_missing_set(monkeypatch, capsys):
    from sparsecl.data.registry import DATASETS, DatasetSpec

    monkeypatch.setattr(DatasetSpec, "find", lambda self, root=None: None)
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "to get a missing dataset:" in out
    for name in DATASETS:
        assert f"  {name}: {DATASETS.get(name).how_to_get()}" in out
    assert "download=true" in DATASETS.get("mnist").how_to_get()
    digits = DATASETS.get("digits")
    assert digits.how_to_get().startswith(digits.install_hint) and "scikit-learn" in digits.install_hint
    assert "apt-get install dataset-fashion-mnist" in DATASETS.get("fashion-mnist").how_to_get()


# -- 8. eval table ------------------------------------------------------------------------------------
def test_eval_prints_a_table_and_json_on_request(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *D, "tasks=2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["task", "Class-IL", "Task-IL"] and [ln.split()[0] for ln in lines[2:5]] == ["T0", "T1", "avg"]
    assert cli.main(["eval", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert f"{got['avg_class_il']:.2f}" == lines[4].split()[1] and got["scenario"] == "class-il"


# -- 9. progress lines --------------------------------------------------------------------------------
def test_one_progress_line_per_epoch_when_output_is_not_a_terminal(tmp_path):
    _, lines = fit([*D, "tasks=2", "epochs=3", "progress=true"], tmp_path)
    epochs = [ln for ln in lines if " epoch " in ln]
    assert [ln.split(":")[0] for ln in epochs] == [f"task {t}/2 epoch {e}/3" for t in (1, 2) for e in (1, 2, 3)]
    _, quiet = fit([*D, "tasks=2", "epochs=3"], tmp_path, "quiet")  # progress=false: none
    assert not [ln for ln in quiet if " epoch " in ln]


# -- 10. resume of a finished run ---------------------------------------------------------------------
def test_resume_of_a_finished_run_says_it_is_finished(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *D, "tasks=2", "--out", str(out)]) == 0
    before = (out / "summary.json").read_text()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{out} is finished (2 of 2 tasks trained)") and "resuming" not in said
    assert (out / "summary.json").read_text() == before
    clock = tmp_path / "clock"  # no checkpoint at the task ends: the last one is mid-run, the run is still done
    assert cli.main(["train", *D, "epochs=2", "checkpoint.at_task_end=false", "checkpoint.every=20",
                     "--out", str(clock)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(clock)]) == 0
    assert capsys.readouterr().out.startswith(f"{clock} is finished (1 of 1 tasks trained)")


# -- 11. device=auto ----------------------------------------------------------------------------------
def test_device_defaults_to_auto_and_records_the_resolved_device(tmp_path):
    expect = "cuda" if torch.cuda.is_available() else "cpu"
    assert make_config(TrainConfig).device == expect
    s, _ = fit(D, tmp_path)
    assert s["config"]["device"] == expect


# -- 12. replay_from_task -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["er", "der", "derpp", "xder_ce"])
def test_replay_from_task_1_replays_only_from_the_second_task(method, tmp_path):
    over = [*D, "tasks=2", f"method={method}", "buffer_size=50", "replay_batch_size=16"]
    draws = {"er": 1, "der": 1, "derpp": 2, "xder_ce": 2}[method]
    run = build_run(make_config(TrainConfig, None, [*over, "replay_from_task=1"]))
    late = Trainer(run, tmp_path / "late", stream_out=lambda *a: None).fit()
    sizes = [int(t.train_idx.numel()) for t in run.stream.tasks]
    # task 0: the current batches only; task 1: every step also forwards the replay draws
    assert late["examples_processed"] == sizes[0] + sizes[1] + draws * 16 * run.plan[1]
    early, _ = fit([*over, "replay_from_task=0"], tmp_path, "early")  # sparsecl's (mammoth's) behaviour
    assert early["examples_processed"] == late["examples_processed"] + draws * 16 * (run.plan[0] - 1)


def test_replay_from_task_is_refused_where_nothing_replays():
    with pytest.raises(ValueError, match="method 'sgd' does not use replay_from_task"):
        make_config(TrainConfig, None, ["method=sgd", "replay_from_task=1"])
