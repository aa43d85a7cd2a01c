"""``sparsecl sweep``: grids of settings x seeds run locally or on Slurm (submitit), resumable, with the
aggregated table and report. ``config`` (the file), ``executors`` (where runs run), ``run`` (orchestration)."""

from sparsecl.sweep.config import Sweep, load_sweep
from sparsecl.sweep.run import Outcome, run_sweep

__all__ = ["Outcome", "Sweep", "load_sweep", "run_sweep"]
