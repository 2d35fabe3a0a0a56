"""Every trajectory replay runs torch on one thread (the bounds in docs/training_parity.md are measured so);
the thread count is restored after each test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
