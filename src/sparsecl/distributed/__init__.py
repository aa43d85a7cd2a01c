"""Data-parallel training on torch.distributed (gloo on CPU, NCCL on CUDA; launched by torchrun).

``runtime``: the process group, rank/world, the shard rule and collectives; ``step``: what the loop does
differently on N processes; ``check``: ``debug_sync``'s cross-rank state fingerprints; ``launch``:
``sparsecl train ... nproc=N``. README, "Multi-process and multi-GPU training", says what is exactly
equivalent to one process and what only statistically.
"""

from sparsecl.distributed.runtime import Dist, current, init, launched, teardown

__all__ = ["Dist", "current", "init", "launched", "teardown"]
