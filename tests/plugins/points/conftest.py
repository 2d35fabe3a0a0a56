"""Test set-up for the points plugin: one intra-op thread (the tensors here are tiny, and on a
shared 2-core machine a second spinning thread costs far more than it saves)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
