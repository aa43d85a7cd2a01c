"""The command line: ``sparsecl train | datasets | export | eval``. A thin adapter over the library."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from sparsecl import __version__

EPILOG_TRAIN = """\
Config keys are given as key=value after the options; a bare key resolves to the one section that has
it (buffer_size -> continual.buffer_size); sections: sparsity.*, sparcl.*, checkpoint.*.
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
    from sparsecl.configtools import ConfigError, load_file, make_config
    from sparsecl.train import checkpoint

    if args.keys:
        print(_keys_help())
        return 0
    from sparsecl.distributed import launch, runtime

    if args.resume:
        if args.overrides or args.config:
            raise ConfigError("--resume takes the run's own config; give no config file or key=value overrides")
        out = Path(args.resume)
        ck = checkpoint.load(out)
        cfg = make_config(TrainConfig, ck["config"])
    else:
        cfg = make_config(TrainConfig, load_file(args.config) if args.config else None, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / _default_name(cfg)
    if launch.should_spawn(cfg.nproc):
        if not args.resume:
            _prepare_out(out, args.overwrite)  # refuse a non-empty folder here, before any worker starts
        return launch.spawn(cfg.nproc, launch.child_argv(args.argv, str(out)))
    dist = runtime.init(cfg.device)
    try:
        launch.check_world(cfg.nproc, dist)
        return _train(args, cfg, out, ck if args.resume else None, dist)
    finally:
        runtime.teardown()


def _train(args: argparse.Namespace, cfg, out: Path, ck, dist) -> int:  # noqa: ANN001
    from sparsecl.configtools import to_dict
    from sparsecl.train.build import build_run
    from sparsecl.train.loop import Interrupted, Trainer

    say = print if dist.is_main else (lambda *a, **k: None)
    out = Path(dist.broadcast_object(str(out)))  # a default name holds the time: rank 0's
    if ck is not None:
        run = build_run(cfg)
        trainer = Trainer(run, out)
        trainer.load_checkpoint_state(ck)
        say(f"resuming {out} at task {trainer.pos.task + 1}, epoch {trainer.pos.epoch + 1}, step {trainer.state.step}")
    else:
        if dist.is_main:
            _prepare_out(out, args.overwrite)
        dist.barrier()
        run = build_run(cfg)
        import yaml

        if dist.is_main:
            (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        trainer = Trainer(run, out)
    try:
        trainer.fit()
    except Interrupted as e:
        if dist.is_main:
            print(str(e), file=sys.stderr)
        return 130
    say(f"results in {out}/ (summary.json, metrics.jsonl, config.yaml)")
    return 0


def _default_name(cfg) -> str:  # noqa: ANN001
    import time

    return f"{cfg.dataset}-{cfg.model}-{cfg.continual.method}-{cfg.sparsity.method}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare_out(out: Path, overwrite: bool) -> None:
    from sparsecl.configtools import ConfigError

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output folder {out} is not empty; pass --overwrite to replace it, or --resume {out} to continue it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def cmd_datasets(args: argparse.Namespace) -> int:
    from sparsecl.data.registry import datasets_report

    rows = datasets_report(args.root)
    print(f"{'dataset':<15} {'status':<40} {'train':>7} {'test':>7}  path")
    for r in rows:
        print(f"{r['name']:<15} {r['status']:<40} {r.get('train') or '-':>7} {r.get('test') or '-':>7}  {r.get('path') or '-'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """One table over finished runs (seeds of one setting folded into mean ± std); FLOPs relative to
    the first row."""
    from sparsecl.train.compare import group, read_runs, table

    print(table(group(read_runs(args.runs), by_setting=not args.each)))
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
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument("--keys", action="store_true", help="list every config key, its default and meaning")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("datasets", help="list the datasets found locally and verify their files")
    p.add_argument("--root", help="also look in this folder")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("compare", help="one table over finished runs, seeds of a setting as mean ± std (FLOPs "
                                       "relative to the first)")
    p.add_argument("runs", nargs="+", help="run folders; the first one's setting is the baseline")
    p.add_argument("--each", action="store_true", help="one row per run instead of one per setting")
    p.set_defaults(func=cmd_compare)

    from sparsecl.export.cli import add_export_commands

    add_export_commands(sub)

    args = parser.parse_args(argv)
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
