"""``keep_freed_memory``: applied once per process where glibc provides mallopt, a no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform

import pytest

from sparsecl.train import memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_setting_once(monkeypatch):
    monkeypatch.setattr(memory, "_applied", False)
    calls = []
    real = ctypes.CDLL

    class Spy:
        def __init__(self, name):
            self.lib = real(name)
            fn = self.lib.mallopt

            def mallopt(param, value):
                calls.append((param, value))
                return fn(param, value)

            self.mallopt = mallopt

    monkeypatch.setattr(memory.ctypes, "CDLL", Spy)
    assert memory.keep_freed_memory()
    assert calls == [(memory.M_MMAP_THRESHOLD, 32 * 2**20), (memory.M_TRIM_THRESHOLD, 2**30)]
    assert memory.keep_freed_memory() and len(calls) == 2  # once per process


def test_without_mallopt_it_does_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: None)
    assert memory.keep_freed_memory() is False


def test_config_switch_exists():
    from sparsecl.config import TrainConfig

    assert TrainConfig().malloc_reuse is True and TrainConfig(malloc_reuse=False).malloc_reuse is False
