"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs torch on one thread: CI has 2 cores, and small batches gain nothing from
    threads while timings on a shared machine become erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
