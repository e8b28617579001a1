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


def assert_normalized_torus_density(proposal, dim: int, temperature_k: float,
                                    generator: torch.Generator, n: int = 200_000) -> None:
    """A z proposal's log_prob is a normalized density on [-pi, pi)^dim that its samples
    follow: E_uniform[rho / u] = 1 and E_rho[u / rho] = 1, each within 4 standard errors."""
    import math

    from ccg.training.proposals import UniformTorus

    temps = torch.full((n,), float(temperature_k), dtype=torch.float64)
    volume = (2 * math.pi) ** dim
    z = UniformTorus(dim).sample(n, generator, torch.float64, "cpu")
    ratio = torch.exp(proposal.log_prob(z, temps)) * volume
    assert abs(float(ratio.mean()) - 1.0) < 4 * float(ratio.std()) / math.sqrt(n)
    zs = proposal.sample(n, generator, torch.float64, "cpu", temps)
    inv = torch.exp(-proposal.log_prob(zs, temps)) / volume
    assert abs(float(inv.mean()) - 1.0) < 4 * float(inv.std()) / math.sqrt(n)
