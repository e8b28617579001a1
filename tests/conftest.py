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


def rewrite_model_file(path, out, edit) -> None:
    """Read a ccg model file, apply edit(header, tensors) (in place), write it to `out` (with a
    fresh, valid checksum): a file that is intact as a container but altered in content."""
    from ccg.io.tensor_file import read_tensor_file, write_tensor_file

    header, tensors = read_tensor_file(path)
    edit(header, tensors)
    write_tensor_file(out, header, tensors)
