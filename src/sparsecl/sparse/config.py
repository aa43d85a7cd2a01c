"""The ``sparsity`` section of the config: which method, how sparse, where, and on what schedule.

Times are fractions of the full (already multiplied) run unless named ``*_step``; the CLI spells fields
``sparsity.<field>=value``. Every check raises ``ValueError`` with one line listing what is valid;
method-specific checks live on the method (``SparseMethod.validate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecl.configtools import choices, helpfield
from sparsecl.kernels.paths import PATH_CHOICES
from sparsecl.sparse.distributions import DISTRIBUTIONS, SCORED_DISTRIBUTIONS
from sparsecl.sparse.filters import LAYER_FILTERS
from sparsecl.sparse.methods import SPARSE_METHODS
from sparsecl.sparse.patterns import MASK_PATTERNS
from sparsecl.sparse.schedule import DROP_SCHEDULES

LR_SCALINGS = ("auto", "sqrt", "inverse", "none")  # see MaskEngine._scale_learning_rates; auto: TrainConfig


@dataclass
class SparsityConfig:
    """Sparse training: RigL and its family (spec/SPARSE_TRAINING.md)."""

    method: str = helpfield("auto (dense at density 1) | dense | static | magnitude | snip | set | snfs | rigl | gmp | lth | small_dense", default="auto")
    density: float = helpfield("target fraction of active weights over the sparse layers, in (0, 1]", default=1.0)
    distribution: str = helpfield("uniform | er | erk | custom | global (snip/gmp/lth only)", default="uniform")
    custom_densities: dict[str, float] | None = helpfield("layer name -> density (distribution=custom)", default=None)
    layers: str = helpfield("all | sparcl | comma list of module names", default="all")
    dense_first: bool = helpfield("keep the first Linear/Conv of the model dense", default=False)
    dense_last: bool = helpfield("keep the last Linear/Conv of the model dense", default=False)
    delta_t: int = helpfield("steps between mask updates (set/snfs/rigl/gmp)", default=100)
    t_end: float = helpfield("last mask update, as a fraction of training", default=0.75)
    begin: float = helpfield("first possible mask update, as a fraction of training", default=0.0)
    drop_fraction: float = helpfield("alpha: fraction of active weights dropped per update, before decay", default=0.3)
    drop_schedule: str = helpfield("cosine | linear | constant decay of the drop fraction", default="cosine")
    grad_accumulation: int = helpfield("rigl: batches whose dense gradients are summed for the grow score", default=1)
    multiplier: int = helpfield("RigL_Mx: train M times longer (epochs scaled), schedule anchors scale along", default=1)
    gmp_begin: float = helpfield("gmp: pruning starts, fraction of training", default=0.0)
    gmp_end: float = helpfield("gmp: pruning ends at the target density, fraction of training", default=0.75)
    gmp_initial_density: float = helpfield("gmp: density at gmp_begin (1: start dense)", default=1.0)
    lth_rounds: int = helpfield("lth: pruning rounds R (R + 1 trainings, the last at the target density)", default=3)
    lth_rewind_step: int = helpfield("lth: rewind survivors to their value after this step (0: initialisation)", default=0)
    init: str = helpfield("surviving weights of the first mask: rescale (per output unit, scaled to the dense "
                          "unit's squared sum: its activation variance at init) | dense (kept as initialised: "
                          "the RigL paper's setting)", default="rescale")
    lr_scaling: str = helpfield("per-sparse-layer learning-rate factor from the layer's initial density d: auto "
                                "(inverse, but none under ewc_on/si, whose quadratic penalty bounds the stable lr) | "
                                "sqrt (1/sqrt(d)) | inverse (1/d) | none (the RigL paper's setting); capped by "
                                "lr_max", default="auto")
    lr_max: float = helpfield("largest effective learning rate, lr x factor / (1 - SGD momentum), lr_scaling may "
                              "give a sparse layer (8x the default lr); a factor never goes below 1", default=0.24)
    execution: str = helpfield("how sparse layers compute in training: auto (CSR kernels per layer where the "
                               "fitted cost model says they are faster) | csr | masked (dense weight x mask)",
                               default="auto")
    pattern: str = helpfield("unstructured | n:m", default="unstructured")
    nm_n: int = helpfield("n:m pattern: weights kept per group", default=2)
    nm_m: int = helpfield("n:m pattern: group size along the input dimension", default=4)

    def __post_init__(self) -> None:
        choices("sparsity.method", self.method, ["auto", *SPARSE_METHODS.names()])
        if self.method == "auto" and self.density == 1.0:
            self.method = "dense"
        elif self.method == "auto":  # a run's config gives sparcl.tdm=true the method magnitude before this
            raise ValueError(f"sparsity.density={self.density} needs a sparse-training method: set sparsity.method "
                             "(static, magnitude, snip, set, snfs, rigl, gmp, lth) or sparcl.tdm=true")
        choices("sparsity.distribution", self.distribution, DISTRIBUTIONS.names())
        choices("sparsity.drop_schedule", self.drop_schedule, DROP_SCHEDULES.names())
        choices("sparsity.pattern", self.pattern, MASK_PATTERNS.names())
        choices("sparsity.execution", self.execution, PATH_CHOICES)
        choices("sparsity.init", self.init, ("dense", "rescale"))
        choices("sparsity.lr_scaling", self.lr_scaling, LR_SCALINGS)
        self._check_ranges()
        self._check_options()
        if self.method != "auto":
            SPARSE_METHODS.get(self.method).validate(self)

    def _check_ranges(self) -> None:
        if not 0 < self.density <= 1:
            raise ValueError(f"sparsity.density must be in (0, 1], got {self.density}")
        ints = {"delta_t": self.delta_t, "grad_accumulation": self.grad_accumulation, "multiplier": self.multiplier,
                "lth_rounds": self.lth_rounds, "nm_m": self.nm_m, "lth_rewind_step": self.lth_rewind_step}
        for name, v in ints.items():
            least = 0 if name == "lth_rewind_step" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"sparsity.{name} must be an integer >= {least}, got {v!r}")
        if not 0 <= self.begin <= self.t_end <= 1 or self.t_end == 0:
            raise ValueError(f"sparsity needs 0 <= begin <= t_end <= 1 and t_end > 0, "
                             f"got begin={self.begin} t_end={self.t_end}")
        if not 0 <= self.gmp_begin < self.gmp_end <= 1:
            raise ValueError(f"sparsity needs 0 <= gmp_begin < gmp_end <= 1, got {self.gmp_begin}, {self.gmp_end}")
        if not 0 <= self.drop_fraction <= 1:
            raise ValueError(f"sparsity.drop_fraction must be in [0, 1], got {self.drop_fraction}")
        if not self.lr_max > 0:
            raise ValueError(f"sparsity.lr_max must be > 0, got {self.lr_max}")
        if not 0 < self.gmp_initial_density <= 1:
            raise ValueError(f"sparsity.gmp_initial_density must be in (0, 1], got {self.gmp_initial_density}")
        if self.grad_accumulation > self.delta_t:
            raise ValueError(f"sparsity.grad_accumulation ({self.grad_accumulation}) must not exceed "
                             f"delta_t ({self.delta_t})")

    def _check_options(self) -> None:
        if (self.custom_densities is not None) != (self.distribution == "custom"):
            raise ValueError("sparsity.custom_densities is given exactly when distribution=custom")
        for name, d in (self.custom_densities or {}).items():
            if not 0 < d <= 1:
                raise ValueError(f"sparsity.custom_densities[{name!r}] must be in (0, 1], got {d}")
        if self.layers not in LAYER_FILTERS and not any(s.strip() for s in self.layers.split(",")):
            raise ValueError(f"sparsity.layers must be one of {', '.join(LAYER_FILTERS.names())} "
                             f"or a comma list of module names, got {self.layers!r}")
        if self.method == "auto":
            return  # checked again once the run's config resolves the method
        method = SPARSE_METHODS.get(self.method)
        if self.distribution in SCORED_DISTRIBUTIONS and not method.scored:
            scored = [n for n in SPARSE_METHODS.names() if SPARSE_METHODS.get(n).scored]
            raise ValueError(f"sparsity.distribution={self.distribution!r} ranks weights by score; "
                             f"use it with one of: {', '.join(scored)}")
        if self.pattern == "n:m":
            self._check_nm(method)

    def _check_nm(self, method: type) -> None:
        if not 1 <= self.nm_n < self.nm_m:
            raise ValueError(f"sparsity n:m needs 1 <= nm_n < nm_m, got {self.nm_n}:{self.nm_m}")
        if not method.supports_nm:
            ok = [n for n in SPARSE_METHODS.names() if SPARSE_METHODS.get(n).supports_nm]
            raise ValueError(f"sparsity.pattern=n:m works with methods: {', '.join(ok)}; got {self.method!r}")
        if abs(self.density - self.nm_n / self.nm_m) > 1e-9:
            raise ValueError(f"sparsity.pattern=n:m fixes the density to nm_n/nm_m = {self.nm_n / self.nm_m}; "
                             f"set sparsity.density accordingly (got {self.density})")
        if self.distribution != "uniform":
            raise ValueError("sparsity.pattern=n:m needs distribution=uniform (every layer keeps nm_n/nm_m)")
