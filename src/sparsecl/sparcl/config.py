"""SparCL's three switches and their schedules (Wang et al., NeurIPS 2022). Times are fractions of a task."""

from __future__ import annotations

from dataclasses import dataclass

from sparsecl.configtools import choices, helpfield
from sparsecl.sparcl.ddr import DDR_WINDOWS



@dataclass
class SparclConfig:
    """TDM (weights), DDR (data) and DGM (gradients): independent switches, all off by default.

    The release's schedule for 50 epochs per task is reproduced by the defaults, written as fractions of
    a task: TDM updates every 5/50 = 0.1 of a task and freezes the mask at 45/50 = 0.9; DDR removes 30 % of
    the data in 4 equal steps at 5, 10, 15, 20 of 50 epochs (start 0.1, interval 0.1); DGM drops the
    fraction g of each sparse layer's gradient entries, counted over all entries (release: g = 0.8 at 75 %
    sparsity; default here 1 - 0.8 x density, the same 20 % of the active gradients at any sparsity), and
    refreshes its mask every 30 iterations.
    """

    tdm: bool = helpfield("task-aware dynamic masking (weight sparsity at sparsity.density)", default=False)
    ddr: bool = helpfield("dynamic data removal (data sparsity)", default=False)
    dgm: bool = helpfield("dynamic gradient masking (gradient sparsity)", default=False)
    # TDM
    tdm_importance: str = helpfield("paper: |w| + a|grad current| + b|grad buffer| (accumulated) | release: |w| + 0.5|grad total| (last batch)", default="paper")
    tdm_alpha_w: float = helpfield("weight of the current-task gradient in the weight importance", default=0.5)
    tdm_beta_w: float = helpfield("weight of the buffer gradient in the weight importance", default=0.5)
    tdm_grad_batches: int = helpfield("batches whose gradients the paper-form importance accumulates", default=5)
    tdm_step: float = helpfield("the +/- density excursion e of a shrink/expand (fraction of each layer)", default=0.01)
    tdm_interval: float = helpfield("intra-task shrink-then-expand period, as a fraction of the task", default=0.1)
    tdm_freeze: float = helpfield("inter-task shrink point (mask frozen after), as a fraction of the task", default=0.9)
    tdm_regrow: str = helpfield("random (release) | gradient (RigL-style)", default="random")
    layers: str = helpfield("which layers TDM/DGM sparsify: sparcl (release: residual 3x3 convs / MLP hidden layers) | all", default="sparcl")
    # DDR
    ddr_ratio: float = helpfield("total fraction of each task's data removed", default=0.3)
    ddr_removals: int = helpfield("number of equal removal steps", default=4)
    ddr_start: float = helpfield("first removal, as a fraction of the task", default=0.1)
    ddr_interval: float = helpfield("time between removals, as a fraction of the task", default=0.1)
    ddr_window: str = helpfield("what a removal scores: removal (spec, release: forgetting events since the last "
                                "removal) | task (since the task began: more than one presentation per example "
                                "when removals are one epoch apart)", default="removal")
    # DGM
    dgm_ratio: float | None = helpfield("g: fraction of each sparse layer's gradient entries dropped, counted over ALL "
                                        "entries (none: 1 - 0.8 x sparsity.density, the release's 0.8 at 75 %)", default=None)
    dgm_interval: int = helpfield("iterations between gradient-mask refreshes", default=30)
    dgm_alpha_g: float = helpfield("weight of the current-task gradient in the gradient importance", default=0.5)
    dgm_beta_g: float = helpfield("weight of the buffer gradient in the gradient importance", default=0.5)

    def __post_init__(self) -> None:
        choices("sparcl.tdm_importance", self.tdm_importance, ("paper", "release"))
        choices("sparcl.tdm_regrow", self.tdm_regrow, ("random", "gradient"))
        choices("sparcl.layers", self.layers, ("sparcl", "all"))
        choices("sparcl.ddr_window", self.ddr_window, DDR_WINDOWS)
        fractions = {"tdm_interval": self.tdm_interval, "tdm_freeze": self.tdm_freeze,
                     "ddr_start": self.ddr_start, "ddr_interval": self.ddr_interval}
        for name, v in fractions.items():
            if not 0 < v <= 1:
                raise ValueError(f"sparcl.{name} must be a fraction of a task in (0, 1], got {v}")
        if not 0 <= self.tdm_step < 1:
            raise ValueError(f"sparcl.tdm_step must be in [0, 1), got {self.tdm_step}")
        if self.tdm_grad_batches < 1:
            raise ValueError(f"sparcl.tdm_grad_batches must be >= 1, got {self.tdm_grad_batches}")
        if self.tdm_interval >= self.tdm_freeze:
            raise ValueError(f"sparcl.tdm_interval ({self.tdm_interval}) must be smaller than tdm_freeze ({self.tdm_freeze})")
        if not 0 <= self.ddr_ratio < 1:
            raise ValueError(f"sparcl.ddr_ratio must be in [0, 1), got {self.ddr_ratio}")
        if self.ddr_removals < 1:
            raise ValueError(f"sparcl.ddr_removals must be >= 1, got {self.ddr_removals}")
        cutoff = self.ddr_start + (self.ddr_removals - 1) * self.ddr_interval
        if cutoff >= 1:
            raise ValueError(f"sparcl: the last DDR removal falls at {cutoff:.2f} of the task, after its end; lower ddr_start/ddr_interval/ddr_removals")
        if self.dgm_ratio is not None and not 0 < self.dgm_ratio < 1:
            raise ValueError(f"sparcl.dgm_ratio must be in (0, 1), got {self.dgm_ratio}")
        if self.dgm_interval < 1:
            raise ValueError(f"sparcl.dgm_interval must be >= 1, got {self.dgm_interval}")
        for name in ("tdm_alpha_w", "tdm_beta_w", "dgm_alpha_g", "dgm_beta_g"):
            if getattr(self, name) < 0:
                raise ValueError(f"sparcl.{name} must be >= 0, got {getattr(self, name)}")
