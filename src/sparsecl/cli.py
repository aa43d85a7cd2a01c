"""The command line: ``sparsecl train | datasets | export | eval``. A thin adapter over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsecl import __version__

EPILOG_TRAIN = """\
Config keys are given as key=value anywhere on the line (before or after the options); a bare key resolves
to the one section that has it (buffer_size -> continual.buffer_size); sections: sparsity.*, continual.*,
sparcl.*, checkpoint.*, distill.*. `--check` prints the resolved config without training.
Examples:
  sparsecl train dataset=fashion-mnist model=mlp epochs=1 batch_size=128 seed=0 --out runs/first
  sparsecl train stream=class-il tasks=5 method=derpp buffer_size=500 alpha=0.1 beta=0.5 lr=0.03 \\
      batch_size=32 replay_batch_size=32 epochs=1 --out runs/derpp
  sparsecl train sparsity.method=rigl sparsity.density=0.1 sparsity.distribution=erk --out runs/rigl
  sparsecl train --resume runs/derpp
"""


def _keys_help() -> str:
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import describe

    rows = describe(TrainConfig)
    width = max(len(k) for k, _, _ in rows)
    return "\n".join(f"  {k:<{width}}  {h} [default {d}]" for k, d, h in rows)


def cmd_train(args: argparse.Namespace) -> int:
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import ConfigError, load_file, make_config, to_dict
    from sparsecl.distributed import launch, runtime
    from sparsecl.train import runfolder
    from sparsecl.train.api import default_run_name

    if args.keys:
        print(_keys_help())
        return 0
    if args.report:  # fail before training when the report could not be drawn
        from sparsecl.loggers.base import require

        require("matplotlib", "report", "train --report")
    cfg = None
    if args.resume:
        if args.overrides or args.config or args.check:
            raise ConfigError("--resume takes the run's own config; give no config file, key=value overrides or --check")
        out = Path(args.resume)
        nproc, device = launch.run_settings(out)
    else:
        cfg = make_config(TrainConfig, load_file(args.config) if args.config else None, args.overrides)
        if args.check:
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        out = Path(args.out) if args.out else Path("runs") / default_run_name(cfg)
        nproc, device = cfg.nproc, cfg.device
    if launch.should_spawn(nproc):  # nproc=N: torchrun's launcher in this process, N workers
        if cfg is not None:
            runfolder.check_new(out, args.overwrite)  # fail before any worker starts
        return launch.spawn(nproc, launch.child_argv(args.argv, str(out)))
    dist = runtime.init(device)
    try:
        return _train(args, cfg, Path(dist.broadcast_object(str(out))), dist)  # a default name holds the time
    finally:
        runtime.teardown()


def _train(args: argparse.Namespace, cfg, out: Path, dist) -> int:  # noqa: ANN001 - TrainConfig | None, Dist
    """Train (or resume) in this process; under several processes rank 0 alone locks and writes ``out``."""
    import contextlib

    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config, to_dict
    from sparsecl.distributed import launch
    from sparsecl.train import checkpoint, runfolder
    from sparsecl.train.build import build_run
    from sparsecl.train.loop import Interrupted, Trainer

    main = dist.is_main
    say = print if main else _silent
    note = _note if main else _silent
    if cfg is not None:
        launch.check_world(cfg.nproc, dist)
        if main:
            runfolder.check_new(out, args.overwrite)  # fail before the data is loaded
        run = build_run(cfg)
        lock = (runfolder.open_new(out, args.overwrite, note=note, config=to_dict(cfg)) if main
                else contextlib.nullcontext())
    else:
        lock = runfolder.open_existing(out, note=note) if main else contextlib.nullcontext()
    dist.barrier()
    with lock:
        if args.resume:
            if runfolder.state(out) == "finished":  # summary.json: written when a run ends
                say(runfolder.finished_note(out))
                return 0
            ck = checkpoint.load(out, note=note)
            cfg = make_config(TrainConfig, ck["config"])
            launch.check_world(cfg.nproc, dist)
            run = build_run(cfg)
            trainer = Trainer(run, out)
            trainer.load_checkpoint_state(ck)
            say(f"resuming {out} at task {trainer.pos.task + 1}, epoch {trainer.pos.epoch + 1}, step "
                f"{trainer.state.step} (of {cfg.tasks} tasks)")
        else:
            trainer = Trainer(run, out)
        try:
            trainer.fit()
        except Interrupted as e:
            if main:
                print(str(e), file=sys.stderr)
            return 130
    say(f"results in {out}/ (summary.json, metrics.jsonl, config.yaml)")
    if args.report and main:
        from sparsecl.report import report

        print(f"report: {report([out], out / 'report')[0]}")
    return 0


def _silent(*args: object, **kwargs: object) -> None:
    pass


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_datasets(args: argparse.Namespace) -> int:
    from sparsecl.data.registry import datasets_report

    rows = datasets_report(args.root)
    print(f"{'dataset':<15} {'status':<40} {'train':>7} {'test':>7}  path")
    for r in rows:
        print(f"{r['name']:<15} {r['status']:<40} {r.get('train') or '-':>7} {r.get('test') or '-':>7}  {r.get('path') or '-'}")
    missing = [r for r in rows if r.get("how_to_get")]
    if missing:
        print("\nto get a missing dataset:")
        for r in missing:
            print(f"  {r['name']}: {r['how_to_get']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """One table over finished runs (seeds of one setting folded into mean ± std, copies of one run counted
    once, rows named by the settings that differ); FLOPs relative to the first row."""
    from sparsecl.train.compare import check_comparable, group, read_runs, render, same_runs

    runs, notes = same_runs(read_runs(args.runs))
    notes += check_comparable(runs, args.mixed)
    for line in notes:
        print(line, file=sys.stderr)
    text = render(group(runs, by_setting=not args.each), args.format)
    if args.output:
        from sparsecl.fileio import atomic_write

        atomic_write(args.output, text + "\n")
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sparsecl",
        description="Sparse training (RigL family) and sparse continual learning (ER, DER++, SparCL) on one engine.",
    )
    parser.add_argument("--version", action="version", version=f"sparsecl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on a stream of tasks", epilog=EPILOG_TRAIN,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train on a stream of tasks (tasks=1 is ordinary training). Leaves config.yaml, "
                                   "metrics.jsonl, summary.json and checkpoints in the output folder. "
                                   "`sparsecl train --keys` lists every config key with its default.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", help="YAML or TOML config file (overrides apply on top)")
    p.add_argument("--out", help="output folder (default runs/<dataset>-<model>-...)")
    p.add_argument("--overwrite", action="store_true", help="replace the sparsecl run in the output folder (other folders are never deleted)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument("--keys", action="store_true", help="list every config key, its default and meaning")
    p.add_argument("--report", action="store_true", help="write the run's report (sparsecl report) into RUN/report")
    p.add_argument("--check", action="store_true", help="resolve and validate the config, print it as YAML, "
                                                        "and exit without training")
    p.set_defaults(func=cmd_train)
    train_parser = p

    p = sub.add_parser("datasets", help="list the datasets found locally and verify their files")
    p.add_argument("--root", help="also look in this folder")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("compare", help="one table over finished runs, seeds of a setting as mean ± std (FLOPs "
                                       "relative to the first)")
    p.add_argument("runs", nargs="+", help="run folders; the first one's setting is the baseline")
    p.add_argument("--each", action="store_true", help="one row per run instead of one per setting")
    p.add_argument("--format", choices=("table", "markdown", "csv"), default="table", help="output format")
    p.add_argument("--output", help="write the table to this file instead of printing it")
    p.add_argument("--mixed", action="store_true", help="compare runs on different datasets or models "
                                                        "(a warning instead of an error)")
    p.set_defaults(func=cmd_compare)

    from sparsecl.export_cli import add_export_commands

    add_export_commands(sub)
    from sparsecl.report.cli import add_report_command
    from sparsecl.sweep.cli import add_sweep_command

    add_report_command(sub)
    add_sweep_command(sub)

    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        # key=value anywhere on the line: argparse stops taking positionals once an option came after them
        args.overrides += [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if "=" not in a or a.startswith("-")]
        if extra:
            train_parser.error(f"unrecognized arguments: {' '.join(extra)} (config keys are key=value; "
                               "`sparsecl train --keys` lists them)")
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what ``nproc=N`` hands to its workers
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Known failures become one line on stderr and exit code 2 (``SPARSECL_DEBUG=1``: the full traceback);
    anything else propagates."""
    import os

    from sparsecl.configtools import ConfigError
    from sparsecl.data.dataset import DataError
    from sparsecl.distributed.check import DivergenceError
    from sparsecl.registry import UnknownNameError
    from sparsecl.train.checkpoint import CheckpointError
    from sparsecl.train.meters import NumericalFault

    try:
        return args.func(args)
    except (ConfigError, DataError, UnknownNameError, CheckpointError, NumericalFault, DivergenceError,
            ValueError) as e:
        if os.environ.get("SPARSECL_DEBUG"):
            raise
        print(f"sparsecl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
