"""The continual-learning section of a run's configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparsecl.configtools import closest, did_you_mean, helpfield
from sparsecl.continual.buffer import BUFFER_POLICIES
from sparsecl.continual.methods import CL_METHODS


@dataclass(frozen=True)
class ContinualConfig:
    """Which continual method, with which buffer and loss weights (mammoth names in brackets).

    method:            a ``CL_METHODS`` name: sgd, joint, er, der, derpp, agem, er_ace, icarl, xder_ce,
                       ewc_on, lwf_mc, si.
    buffer_size:       buffer capacity B [buffer_size]; 0 for methods without a buffer (sgd, joint), > 0 for
                       the others.
    replay_batch_size: examples per replay draw [minibatch_size]; 0 = the current batch's size.
    alpha:             weight of DER/DER++'s logit-matching MSE term (mammoth DER++ at B=200: 0.1).
    beta:              weight of DER++'s replay CE term (0.5).
    masked_head:       current-data CE over the current task's classes only (SparCL's ``--use_cl_mask``);
                       None: on in SparCL runs (any ``sparcl.*`` switch on; the run config resolves it), else
                       off.
    buffer_policy:     a ``BUFFER_POLICIES`` name: reservoir (mammoth), class-balanced, after-task
                       (Avalanche's experience-balanced filling).
    agem_batch:        A-GEM's reference-gradient sample size (the paper's P = 256).
    gamma, eta, margin: X-DER's logit-transplant cap, constraint weight and constraint margin (mammoth
                       ``--gamma`` 0.85, ``--eta`` 0.1, ``--m`` 0.3).
    ewc_lambda, ewc_gamma: online EWC's penalty weight and Fisher decay (mammoth ``--e_lambda``, ``--gamma``;
                       its Split CIFAR-10 setting 10 and 1).
    si_c, si_xi:       Synaptic Intelligence's penalty weight and damping (mammoth ``--c``, ``--xi``; its
                       Permuted MNIST setting 0.1 and 0.1).
    replay_from_task:  the first task (0-based) whose steps draw from the buffer. 0: from the first task on
                       (mammoth, and sparsecl's behaviour before the option existed: replay starts as soon
                       as the buffer holds anything, i.e. during task 0 on task 0's own examples); 1: from
                       the second task on, as the SparCL release does (its buffer fills during task 0 but
                       is first replayed in task 1). The buffer is filled the same way either way. ER-ACE
                       never replays in its first task, whatever this says.

    Each method reads only some of these (its ``options``); one it ignores must stay at its default, so a
    misplaced setting fails instead of being silently ignored.
    """

    method: str = helpfield("sgd | joint | er | der | derpp | agem | er_ace | icarl | xder_ce | ewc_on | lwf_mc | si",
                            default="sgd")
    buffer_size: int = helpfield("buffer capacity (0 for methods without a buffer: sgd, joint)", default=0)
    replay_batch_size: int = helpfield("examples per replay draw (0: the current batch's size)", default=32)
    alpha: float = helpfield("weight of DER/DER++'s logit-matching MSE term", default=0.1)
    beta: float = helpfield("weight of DER++'s replay cross-entropy term", default=0.5)
    masked_head: bool | None = helpfield("current-data CE over the current task's classes only (SparCL's "
                                         "--use_cl_mask; none: on in SparCL runs, else off)", default=None)
    buffer_policy: str = helpfield("reservoir | class-balanced | after-task", default="reservoir")
    agem_batch: int = helpfield("A-GEM's reference-gradient sample size (the paper's P = 256)", default=256)
    # X-DER (mammoth --gamma, --eta, --m)
    gamma: float = helpfield("X-DER: a transplanted logit is scaled to at most gamma x the stored true-class "
                             "logit", default=0.85)
    eta: float = helpfield("X-DER: weight of the past/future logit constraints", default=0.1)
    margin: float = helpfield("X-DER: margin of the past/future logit constraints", default=0.3)
    # online EWC (mammoth --e_lambda, --gamma)
    ewc_lambda: float = helpfield("online EWC: weight of the Fisher-weighted quadratic penalty", default=10.0)
    ewc_gamma: float = helpfield("online EWC: decay of the accumulated Fisher at each task end", default=1.0)
    # Synaptic Intelligence (mammoth --c, --xi)
    si_c: float = helpfield("Synaptic Intelligence: weight of the importance-weighted quadratic penalty",
                            default=0.1)
    si_xi: float = helpfield("Synaptic Intelligence: damping xi of the importance normalisation", default=0.1)
    replay_from_task: int = helpfield("first task (0-based) whose steps replay from the buffer: 0 from the first "
                                      "task on (mammoth), 1 from the second (the SparCL release)", default=0)

    def __post_init__(self) -> None:
        if self.method not in CL_METHODS:
            valid = CL_METHODS.names()
            raise ValueError(f"unknown continual method {self.method!r}; valid: {', '.join(valid)}"
                             f"{did_you_mean(closest(self.method, valid))}")
        if self.buffer_policy not in BUFFER_POLICIES:
            valid = BUFFER_POLICIES.names()
            raise ValueError(f"unknown buffer_policy {self.buffer_policy!r}; valid: {', '.join(valid)}"
                             f"{did_you_mean(closest(self.buffer_policy, valid))}")
        _check_int("buffer_size", self.buffer_size, 0)
        _check_int("replay_batch_size", self.replay_batch_size, 0)
        _check_int("agem_batch", self.agem_batch, 1)
        _check_int("replay_from_task", self.replay_from_task, 0)
        for name in ("alpha", "beta", "gamma", "eta", "margin", "ewc_lambda", "ewc_gamma", "si_c", "si_xi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.masked_head is not None and not isinstance(self.masked_head, bool):
            raise ValueError(f"masked_head must be true, false or none, got {self.masked_head!r}")
        reads = CL_METHODS.get(self.method).options
        if "buffer_size" in reads and self.buffer_size == 0:
            raise ValueError(f"method {self.method!r} keeps a buffer: buffer_size must be > 0")
        unused = [
            f.name
            for f in dataclasses.fields(self)
            if f.name != "method" and f.name not in reads and getattr(self, f.name) != f.default
        ]
        if unused:
            takes = ", ".join(reads) or "none"
            raise ValueError(f"method {self.method!r} does not use {', '.join(unused)}; it reads: {takes}")

    @property
    def needs_buffer(self) -> bool:
        return "buffer_size" in CL_METHODS.get(self.method).options


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
