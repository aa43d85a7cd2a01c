"""Every bad input tried, with the one-line message it must get (docs/bad_inputs.md is made from this list
by scripts/bad_input_table.py; tests/test_bad_input.py runs each case)."""

from __future__ import annotations

D = ["dataset=digits", "progress=false"]  # a small real dataset so each case is quick

# (what is wrong, sparsecl arguments, regex the one-line error must match)
CASES: list[tuple[str, list[str], str]] = [
    ("unknown key", ["train", *D, "lrr=0.1"], r"unknown config key 'lrr' \(did you mean lr"),
    ("value of the wrong type", ["train", *D, "batch_size=abc"], r"batch_size: cannot read 'abc' as int"),
    ("density 0", ["train", *D, "sparsity.method=rigl", "sparsity.density=0"], r"sparsity.density must be in \(0, 1\], got 0.0"),
    ("density above 1", ["train", *D, "sparsity.method=static", "sparsity.density=1.5"], r"sparsity.density must be in \(0, 1\], got 1.5"),
    ("density below 1 without a method", ["train", *D, "sparsity.density=0.1"], r"needs a sparse-training method: set sparsity.method"),
    ("dense method with a density", ["train", *D, "sparsity.method=dense", "sparsity.density=0.5"], r"sparsity.method=dense trains every weight"),
    ("negative learning rate", ["train", *D, "lr=-1"], r"lr must be > 0, got -1.0"),
    ("validation fraction of 1", ["train", *D, "validation=1"], r"validation must be a fraction in \[0, 1\), got 1.0"),
    ("zero epochs", ["train", *D, "epochs=0"], r"epochs must be >= 1, got 0"),
    ("unknown optimiser", ["train", *D, "optimizer=rmsprop"], r"optimizer='rmsprop' is not valid; choose one of: adam, adamw, sgd"),
    ("unknown continual method", ["train", *D, "method=foo"], r"unknown continual method 'foo'; valid: agem, der, derpp, er, er_ace, ewc_on, icarl, joint, lwf_mc, sgd, si, xder_ce"),
    ("unknown sparse method", ["train", *D, "sparsity.method=foo"], r"sparsity.method='foo' is not valid; choose one of: auto, dense"),
    ("unknown model", ["train", *D, "model=foo"], r"unknown model 'foo'; valid: cnn, mlp, resnet18, wrn"),
    ("unknown dataset", ["train", "dataset=foo", "progress=false"], r"unknown dataset 'foo'; valid: cifar10, cifar100, digits"),
    ("tasks that do not divide the classes", ["train", *D, "tasks=3"], r"tasks=3 must divide the 10 classes of digits"),
    ("iCaRL on a domain-incremental stream", ["train", *D, "stream=rotated", "tasks=2", "method=icarl", "buffer_size=20"], r"method icarl needs a class- or task-incremental stream"),
    ("rehearsal method without a buffer", ["train", *D, "method=er"], r"buffer_size must be > 0"),
    ("buffer larger than the data", ["train", *D, "method=er", "buffer_size=5000"], r"buffer_size=5000 is larger than the 1437 training examples of digits"),
    ("sparse schedule ending before it begins", ["train", *D, "sparsity.method=rigl", "sparsity.density=0.1", "sparsity.begin=0.5", "sparsity.t_end=0.1"], r"0 <= begin <= t_end <= 1"),
    ("step lr schedule without its epochs", ["train", *D, "lr_schedule=step"], r"lr_schedule=step needs lr_step_epochs"),
    ("TDM without a target sparsity", ["train", *D, "sparcl.tdm=true"], r"sparcl.tdm needs a target sparsity"),
    ("TDM with another mask method", ["train", *D, "sparcl.tdm=true", "sparsity.method=rigl", "sparsity.density=0.1"], r"sparcl.tdm drives the masks itself"),
    ("DDR schedule past the task end", ["train", *D, "sparcl.ddr_start=0.5", "sparcl.ddr_interval=0.3", "sparcl.ddr_removals=3"], r"last DDR removal falls at 1.10 of the task"),
    ("DGM with a method that grows by gradient", ["train", *D, "sparcl.dgm=true", "sparsity.method=rigl", "sparsity.density=0.1"], r"sparcl.dgm cannot run with sparsity.method=rigl"),
    ("DGM ratio that drops nothing", ["train", *D, "sparcl.tdm=true", "sparcl.dgm=true", "sparsity.density=0.1", "sparcl.dgm_ratio=0.8"], r"sparcl.dgm_ratio=0.8 <= sparsity 0.9"),
    ("lottery tickets on a task stream", ["train", *D, "tasks=5", "sparsity.method=lth", "sparsity.density=0.2"], r"sparsity.method=lth needs tasks=1"),
    ("unknown execution path", ["train", *D, "sparsity.execution=fast"], r"sparsity.execution='fast' is not valid; choose one of: auto, csr, masked"),
    ("unknown sparse initialisation", ["train", *D, "sparsity.init=zero"], r"sparsity.init='zero' is not valid; choose one of: dense, rescale"),
    ("a section given a value", ["train", *D, "sparsity=rigl"], r"unknown config key 'sparsity' \(did you mean sparsity.method=rigl\?\); `sparsecl train --keys` lists every key"),
    ("a method name spelt as in the paper", ["train", *D, "method=der++"], r"unknown continual method 'der\+\+'.*\(did you mean derpp\?\)"),
    ("an integer beyond int64", ["train", *D, "epochs=100000000000000000000"], r"epochs: '100000000000000000000' is out of range"),
    ("a learning rate of inf", ["train", *D, "lr=inf"], r"lr: 'inf' is not a finite number"),
    ("Task-IL with a method without a masked head", ["train", *D, "stream=task-il", "tasks=2", "method=icarl", "buffer_size=20"], r"stream=task-il trains with a task-masked head, which method icarl does not have"),
    ("distillation teacher missing", ["train", *D, "distill.teacher=/nonexistent/teacher"], r"no run folder or exported model at /nonexistent/teacher"),
    ("distillation temperature 0", ["train", *D, "distill.temperature=0"], r"temperature must be a finite number > 0"),
    ("missing config file", ["train", "--config", "/nonexistent/run.yaml"], r"config file /nonexistent/run.yaml does not exist"),
    ("dataset files missing", ["train", "dataset=mnist", "data_dir=/nonexistent", "download=false", "progress=false"], r"mnist.*not found"),
    ("resume of a folder that does not exist", ["train", "--resume", "/nonexistent/run"], r"no run folder at /nonexistent/run"),
    ("resume with overrides", ["train", "--resume", "/nonexistent/run", "lr=0.1"], r"--resume takes the run's own config"),
    ("export of a folder that is no run", ["export", "/nonexistent/run"], r"/nonexistent/run is not a run folder"),
    ("eval of a missing file", ["eval", "/nonexistent/model.spcl"], r"no run folder or exported model at /nonexistent/model.spcl"),
    ("eval quantised on the sparse kernels", ["eval", "/nonexistent/run", "--quantize", "dynamic-int8", "--kernels", "auto"],
     r"--quantize runs on CPU in float32, without --kernels"),
    ("eval with 2:4 kernels on CPU", ["eval", "/nonexistent/run", "--kernels", "semi-structured"],
     r"2:4 semi-structured needs --device cuda"),
]
CASES += [
    ("density that leaves a layer empty", ["train", *D, "sparsity.method=rigl", "sparsity.density=1e-9",
                                           "sparsity.distribution=erk"],
     r"sparsity.density=1e-09 leaves layer \S+ with no active weight .* the smallest density .* is \d"),
    ("negative checkpoint interval", ["train", *D, "checkpoint.minutes=-1"], r"checkpoint.minutes must be a number >= 0"),
]


# Bad files: each builder makes the damaged or hostile file under a fresh folder and returns the arguments.
_HELD: list = []  # locks held on behalf of "another run"


def _trained_run(tmp) -> "Path":  # noqa: ANN001
    from pathlib import Path

    from sparsecl import cli

    run = Path(tmp) / "trained"
    if not (run / "final_model.pt").exists():
        assert cli.main(["train", *D, "model=mlp", "hidden=16", "epochs=1", "batch_size=256",
                         "checkpoint.at_task_end=true", "--out", str(run)]) == 0
    return run


def _copy_run(tmp, name):  # noqa: ANN001, ANN202
    import shutil
    from pathlib import Path

    dst = Path(tmp) / name
    shutil.copytree(_trained_run(tmp), dst)
    return dst


def _malicious_checkpoint(tmp):  # noqa: ANN001, ANN202
    import torch

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp}/pwned",))

    run = _copy_run(tmp, "hostile")
    (run / "summary.json").unlink()
    torch.save({"format_version": 1, "x": Payload()}, run / "ckpt.pt")
    (run / "ckpt.prev.pt").unlink(missing_ok=True)
    return ["train", "--resume", str(run)]


def _flipped_checkpoint(tmp):  # noqa: ANN001, ANN202
    run = _copy_run(tmp, "flipped")
    (run / "summary.json").unlink()
    (run / "ckpt.prev.pt").unlink(missing_ok=True)
    data = bytearray((run / "ckpt.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    (run / "ckpt.pt").write_bytes(bytes(data))
    return ["train", "--resume", str(run)]


def _foreign_folder(tmp):  # noqa: ANN001, ANN202
    from pathlib import Path

    d = Path(tmp) / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"\xff\xd8")
    return ["train", *D, "--out", str(d), "--overwrite"]


def _locked_folder(tmp):  # noqa: ANN001, ANN202
    from pathlib import Path

    from sparsecl.train.runfolder import open_new

    d = Path(tmp) / "busy"
    _HELD.append(open_new(d, overwrite=False, note=lambda s: None))  # "another run" holds it
    return ["train", *D, "--out", str(d), "--overwrite"]


def _no_checkpoint_yet(tmp):  # noqa: ANN001, ANN202
    from pathlib import Path

    from sparsecl.train.runfolder import open_new

    d = Path(tmp) / "early"
    open_new(d, overwrite=False, note=lambda s: None).release()
    return ["train", "--resume", str(d)]


def _export(tmp, name, mutate):  # noqa: ANN001, ANN202
    from pathlib import Path

    from datafiles import resign_export

    from sparsecl import cli

    f = Path(tmp) / f"{name}.spcl"
    assert cli.main(["export", str(_trained_run(tmp)), "--output", str(f)]) == 0
    f.write_bytes(resign_export(f.read_bytes(), mutate))
    return ["eval", str(f)]


def _huge_export(tmp):  # noqa: ANN001, ANN202
    def mutate(h):  # noqa: ANN001, ANN202
        rec = h["tensors"][0]
        rec.update(shape=[2**29], layout="indices", nnz=0, fields={"index_code": "plain32"},
                   arrays=[["values", "float32", 0], ["indices", "uint32", 0]])
        h["payload_bytes"] = h["payload_bytes"]  # the payload stays; its records no longer add up
    return _export(tmp, "huge", mutate)


def _wrong_shape_export(tmp):  # noqa: ANN001, ANN202
    return _export(tmp, "shape", lambda h: h["meta"]["config"].update(hidden=[17]))


def _truncated_final_model(tmp):  # noqa: ANN001, ANN202
    run = _copy_run(tmp, "cut")
    p = run / "final_model.pt"
    p.write_bytes(p.read_bytes()[:1000])
    return ["export", str(run)]


def _partial_data_dir(tmp):  # noqa: ANN001, ANN202
    from pathlib import Path

    from datafiles import write_idx_dataset

    d = Path(tmp) / "fm-partial"
    write_idx_dataset(d)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    return ["train", "dataset=fashion-mnist", f"data_dir={d}", "progress=false", "--out", f"{tmp}/r-partial"]


def _unpublished_data(tmp):  # noqa: ANN001, ANN202
    from pathlib import Path

    from datafiles import write_idx_dataset

    d = Path(tmp) / "fm-other"
    write_idx_dataset(d)
    return ["train", "dataset=fashion-mnist", f"data_dir={d}", "progress=false", "--out", f"{tmp}/r-other"]


FILE_CASES = [
    ("malicious pickle in ckpt.pt (must not run)", _malicious_checkpoint, r"ckpt.pt: refused: UnpicklingError"),
    ("a flipped bit in the only checkpoint", _flipped_checkpoint, r"ckpt.pt: damaged"),
    ("--overwrite on a folder that is not a run", _foreign_folder, r"holds no sparsecl run"),
    ("a second run on a folder in use", _locked_folder, r"is in use by pid \d+"),
    ("--resume of a run stopped before its first checkpoint", _no_checkpoint_yet,
     r"has no checkpoint yet .* --overwrite"),
    ("export of a few KB declaring a [2^29] tensor", _huge_export, r"refusing to allocate"),
    ("export whose weights do not fit its config", _wrong_shape_export, r"do not belong to the model of their config"),
    ("truncated final_model.pt", _truncated_final_model, r"final_model.pt: damaged or not a torch file"),
    ("data_dir missing one file", _partial_data_dir, r"t10k-labels-idx1-ubyte.gz: missing file: .* holds part of fashion-mnist"),
    ("data file that is not the published one", _unpublished_data, r"checksum mismatch.*not the published one"),
]
