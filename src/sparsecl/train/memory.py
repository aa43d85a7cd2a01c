"""Process memory for training: let glibc keep freed blocks for reuse.

Every training step allocates the same large tensors again (activations, dense-shaped weight gradients,
the convolution kernels' planes). glibc serves blocks above its mmap threshold (128 KiB, raised
dynamically as mmapped blocks are freed) with fresh pages and returns them to the kernel on free, so a
step can pay a page fault per 4 KiB page of its large tensors. In the ResNet-18 CSR training step the
zero fill of the dense-shaped weight gradients took 40-80 ms per 3 steps with glibc's defaults and 9-10 ms
with this setting (``python benchmarks/profile_step.py resnet --density 0.1 --mode csr --threads 2``, with
and without ``--no-malloc-reuse``; session 6). A later sitting on the same VM measured 52-93 ms with or
without it (benchmarks/RESULTS.md, "Session 7"): the gain depends on the host's memory management. ``keep_freed_memory`` sets the mmap threshold to glibc's maximum
(32 MiB on 64-bit) and the trim threshold to 1 GiB, so blocks below 32 MiB come from the heap and stay
there for the next step. This is a process-wide setting (the resident size stays at its peak instead of
shrinking between steps); the run config's ``malloc_reuse`` turns it off. Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's upper limit (32 MiB on 64-bit)
TRIM_THRESHOLD = 1 << 30

_applied = False


def keep_freed_memory() -> bool:
    """Apply the setting once per process; True when glibc took it."""
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # no C library found, or one without mallopt (macOS)
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
