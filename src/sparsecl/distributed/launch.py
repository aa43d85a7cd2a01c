"""``sparsecl train ... nproc=N``: start N processes on this machine exactly as ``torchrun`` would.

The convenience runs ``torch.distributed.run`` (torchrun's own code) in this process with
``--standalone --nproc_per_node=N -m sparsecl <the same arguments>``: a c10d rendezvous on localhost at
a free port, workers watched by the elastic agent (one failing stops the others). The workers find
WORLD_SIZE in their environment and train; they never spawn again. For several machines use torchrun
directly (README, "Multi-process and multi-GPU training").
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sparsecl.configtools import ConfigError
from sparsecl.distributed.runtime import Dist, launched


def should_spawn(nproc: int | None) -> bool:
    return nproc is not None and nproc > 1 and not launched()


def run_settings(run_dir: Path) -> tuple[int | None, str]:
    """(nproc, device) of an existing run, from its config.yaml (resume decides from them whether to spawn
    and which backend to join; the checkpoint itself is read under the run folder's lock)."""
    try:
        cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
        return cfg.get("nproc"), str(cfg.get("device", "cpu"))
    except (OSError, yaml.YAMLError, AttributeError):
        return None, "cpu"  # the resume itself reports what is wrong with the folder


def check_world(nproc: int | None, dist: Dist) -> None:
    """A config's ``nproc`` must agree with the launcher's world size."""
    if nproc is not None and launched() and nproc != dist.world:
        raise ConfigError(f"nproc={nproc} but the launcher started {dist.world} processes; leave nproc unset "
                          "under torchrun or make them agree")
    if nproc is not None and nproc > 1 and not launched():
        raise ConfigError(f"nproc={nproc}: the processes were not started (call sparsecl.distributed.launch.spawn)")


def child_argv(argv: list[str], out: str) -> list[str]:
    """The workers' command line: the same one, with the output folder fixed (a default name holds the
    time, which the workers must not each compute)."""
    has_out = any(a == "--out" or a.startswith("--out=") for a in argv)
    return list(argv) if has_out or "--resume" in argv else [*argv, "--out", out]


def spawn(nproc: int, argv: list[str]) -> int:
    """Run ``python -m sparsecl <argv>`` in ``nproc`` processes; the first failing worker's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "sparsecl", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in codes if c > 0), 1)
    return 0
