"""Suite-wide settings: one intra-op thread (the tests use tiny tensors, where thread hand-off costs more
than it saves, and CI has two cores)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
