"""``sparsecl sweep`` (issue 20): the cross product of a grid x seeds, validated before anything runs; a
sweep interrupted and run again skips finished runs, resumes the interrupted one and gives the same table
as an uninterrupted sweep; the process pool and submitit's LocalExecutor give the same table too."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from sparsecl import cli
from sparsecl.configtools import ConfigError
from sparsecl.report import read_inputs
from sparsecl.sweep import load_sweep, run_sweep
from sparsecl.sweep.config import SlurmConfig
from sparsecl.train.loop import TIMING_KEYS, Trainer

BASE = {"dataset": "digits", "model": "mlp", "hidden": [32], "tasks": 2, "epochs": 1, "batch_size": 64, "lr": 0.1,
        "method": "er", "buffer_size": 50, "progress": False}
GRID = {"sparsity": {"dense": {}, "static-50": {"sparsity.method": "static", "sparsity.density": 0.5}}}


def write(tmp_path, name="s", **kw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "out": str(tmp_path / name), **kw}, sort_keys=False))
    return path


def without_times(table):
    return [{k: v for k, v in row.items() if k != "train_time_s"} for row in table]


def test_sweep_file_expands_to_the_cross_product(tmp_path):
    sweep = load_sweep(write(tmp_path, base=BASE, grid={"method": ["er", "derpp"], **GRID}, seeds=[0, 1],
                             slurm={"partition": "gpu", "gpus_per_node": 1}))
    assert [r.name for r in sweep.runs] == [f"method-{m}_sparsity-{s}_s{seed}" for m in ("er", "derpp")
                                            for s in ("dense", "static-50") for seed in (0, 1)]
    assert {r.label for r in sweep.runs} == {f"method={m}_sparsity={s}" for m in ("er", "derpp") for s in ("dense", "static-50")}
    last = sweep.runs[-1].config
    assert (last.continual.method, last.sparsity.method, last.sparsity.density, last.seed) == ("derpp", "static", 0.5, 1)
    assert last.continual.buffer_size == 50 and last.hidden == (32,)
    assert sweep.slurm == SlurmConfig(partition="gpu", gpus_per_node=1) and sweep.executor == "local"


def test_a_list_of_grids_is_the_union_of_their_products(tmp_path):
    dense = {"sparsity": {"dense": {}}}
    sparse = {"sparsity.method": ["set", "rigl"], "sparsity.density": [0.1, 0.2]}
    sweep = load_sweep(write(tmp_path, base=BASE, grid=[dense, sparse], seeds=[0]))
    assert [r.label for r in sweep.runs] == ["sparsity=dense"] + [f"sparsity.method={m}_sparsity.density={d}"
                                                                  for m in ("set", "rigl") for d in (0.1, 0.2)]
    assert [(r.config.sparsity.method, r.config.sparsity.density) for r in sweep.runs] == [
        ("dense", 1.0), ("set", 0.1), ("set", 0.2), ("rigl", 0.1), ("rigl", 0.2)]


@pytest.mark.parametrize("kw, message", [
    ({"grid": {"method": []}}, "grid axis 'method' must be a non-empty list of values or a mapping of variants"),
    ({"grid": {"seed": [1, 2]}}, "give seeds as `seeds: [...]`, not as a grid axis"),
    ({"grid": {"lr": [0.1, -1]}}, "run lr--1_s0: lr must be > 0, got -1.0"),
    ({"grid": {"nope": [1]}}, "unknown config key 'nope'"),
    ({"seeds": [0, 0]}, "seeds repeat: [0, 0]"),
    ({"seeds": "0"}, "seeds must be a non-empty list of integers, got '0'"),
    ({"executor": "mpi"}, "executor 'mpi' is not valid; choose one of: local, serial, submitit-local, slurm"),
    ({"grids": {}}, "unknown key 'grids'"),
    ({"slurm": {"timeout_min": "long"}}, "slurm.timeout_min: cannot read 'long' as int"),
])
def test_bad_sweep_files_are_one_line(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_sweep(write(tmp_path, base=BASE, **kw))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_interrupted_sweep_resumes_to_the_same_table(tmp_path, monkeypatch):
    grid = dict(base=BASE, grid=GRID, seeds=[0, 1], executor="serial")
    whole = run_sweep(load_sweep(write(tmp_path, "whole", **grid)), report=False, say=lambda s: None)
    assert whole.started == [r.name for r in load_sweep(tmp_path / "whole.yaml").runs] and not whole.failed

    step = Trainer._step
    def stop_third_run_at_step_5(self, *args):  # noqa: ANN001 - as SIGTERM would, mid-task
        step(self, *args)
        if self.out.name == "sparsity-static-50_s0" and self.state.step == 5:
            self._stop = "SIGTERM"
    monkeypatch.setattr(Trainer, "_step", stop_third_run_at_step_5)
    sweep = load_sweep(write(tmp_path, "cut", **grid))
    first = run_sweep(sweep, report=False, say=lambda s: None)
    assert first.interrupted == ["sparsity-static-50_s0", "sparsity-static-50_s1"]  # the last one never started
    monkeypatch.setattr(Trainer, "_step", step)
    again = run_sweep(sweep, report=True, say=lambda s: None)
    assert again.skipped == ["sparsity-dense_s0", "sparsity-dense_s1"]
    assert again.resumed == ["sparsity-static-50_s0"] and again.started == ["sparsity-static-50_s1"]
    assert without_times(again.table) == without_times(whole.table)
    assert without_times(json.loads((tmp_path / "cut" / "table.json").read_text())) == without_times(whole.table)
    a, b = (json.loads((tmp_path / d / "runs" / "sparsity-static-50_s0" / "summary.json").read_text())
            for d in ("whole", "cut"))
    assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {k: v for k, v in b.items() if k not in TIMING_KEYS}
    assert [r.label for r in read_inputs([tmp_path / "cut"]).all] == [r.label for r in sweep.runs]
    assert (tmp_path / "cut" / "report" / "compare_acc_vs_flops.png").is_file()
    assert run_sweep(sweep, report=False, say=lambda s: None).skipped == [r.name for r in sweep.runs]


def test_process_pool_and_submitit_local_give_the_same_table(tmp_path):
    pytest.importorskip("submitit")
    # one run each: a spawned worker's start (importing torch) dominates, the training is under a second
    grid = dict(base={**BASE, "tasks": 1}, grid={"lr": [0.1]}, seeds=[3], workers=2)
    sweeps = [load_sweep(write(tmp_path, name, executor=name if name != "pool" else "local", **grid))
              for name in ("pool", "submitit-local")]
    with ThreadPoolExecutor(2) as both:  # the two cold starts overlap
        pool, sub = both.map(lambda sw: run_sweep(sw, report=False, say=lambda s: None), sweeps)
    assert pool.started == sub.started == ["lr-0.1_s3"] and not pool.failed and not sub.failed
    assert without_times(pool.table) == without_times(sub.table) and pool.table[0]["seeds"] == [3]
    assert list((tmp_path / "submitit-local" / "submitit").iterdir())  # submitit's own job folder: it ran the job


def test_cli_refuses_a_folder_of_another_config(tmp_path, capsys):
    path = write(tmp_path, base={**BASE, "tasks": 1}, grid={"lr": [0.1]}, executor="serial")
    assert cli.main(["sweep", str(path), "--no-report"]) == 0
    assert cli.main(["sweep", str(path), "--list"]) == 0 and capsys.readouterr().out.endswith("lr-0.1_s0\n")
    path.write_text(path.read_text().replace("batch_size: 64", "batch_size: 32"))
    assert cli.main(["sweep", str(path), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another config" in err and err.count("\n") == 1


def test_slurm_executor_hands_submitit_the_resources_and_the_train_commands(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    seen = {}

    class Job:
        def result(self):
            return 0

    class FakeAutoExecutor:  # stands in for the cluster: records what sparsecl asks of it
        def __init__(self, folder, cluster):
            seen.update(folder=folder, cluster=cluster)

        def update_parameters(self, **kw):
            seen["params"] = kw

        def map_array(self, fn, jobs):
            seen["fn"], seen["jobs"] = fn, list(jobs)
            return [Job() for _ in seen["jobs"]]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeAutoExecutor)
    sweep = load_sweep(write(tmp_path, base=BASE, grid={"lr": [0.1, 0.2]}, executor="slurm",
                             slurm={"partition": "gpu", "timeout_min": 30, "cpus_per_task": 4, "gpus_per_node": 1,
                                    "mem_gb": 16}))
    outcome = run_sweep(sweep, report=False, say=lambda s: None)
    assert seen["cluster"] == "slurm" and seen["folder"] == str(tmp_path / "s" / "submitit" / "%j")
    assert seen["params"] == {"timeout_min": 30, "cpus_per_task": 4, "gpus_per_node": 1, "slurm_array_parallelism": 64,
                              "name": "s", "slurm_partition": "gpu", "mem_gb": 16}
    from sparsecl.sweep.executors import run_job

    assert seen["fn"] is run_job
    assert seen["jobs"] == [["--config", str(tmp_path / "s" / "configs" / f"lr-{lr}_s0.yaml"), "--out",
                             str(tmp_path / "s" / "runs" / f"lr-{lr}_s0"), "--overwrite"] for lr in (0.1, 0.2)]
    assert outcome.started == ["lr-0.1_s0", "lr-0.2_s0"] and not outcome.failed
