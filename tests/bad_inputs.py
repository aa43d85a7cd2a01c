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
    ("unknown optimiser", ["train", *D, "optimizer=rmsprop"], r"optimizer='rmsprop' is not valid; choose one of: sgd, adam, adamw"),
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
