"""Named, explicit random generators derived from one seed (never the global RNG).

Each consumer (model init, data order, augmentation, replay, masks, stream) gets its own generator
seeded from ``(seed, name)`` through a stable hash (crc32, not Python's salted ``hash``), so adding a
consumer never shifts another's random stream, and every generator's state can be checkpointed.
"""

from __future__ import annotations

import zlib

import torch


def derive_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def generator(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, name))
    return g
