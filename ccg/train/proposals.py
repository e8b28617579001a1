"""Proposals rho(z) over CG space and pi(T) over temperatures for data-free training.

Every proposal draws a batch with an explicit `torch.Generator`, so a seeded run is
reproducible, and returns tensors of the requested dtype/device.
"""

from __future__ import annotations

import math

import torch

from ccg._checks import check_finite, check_temperature


class UniformTorus:
    """z uniform on [-pi, pi)^d (torsion CG maps)."""

    def __init__(self, cg_dim: int):
        self.cg_dim = int(cg_dim)

    def sample(self, n: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
        """[n, cg_dim] in rad."""
        u = torch.rand(n, self.cg_dim, generator=generator, dtype=torch.float64)
        return (2 * math.pi * u - math.pi).to(dtype=dtype, device=device)


class UniformBox:
    """z uniform in a box [low, high] per dimension (analytic systems)."""

    def __init__(self, low, high):
        self.low = torch.as_tensor(low, dtype=torch.float64).reshape(-1)
        self.high = torch.as_tensor(high, dtype=torch.float64).reshape(-1)
        if self.low.shape != self.high.shape or bool((self.high <= self.low).any()):
            raise ValueError(
                f"Expected low < high elementwise with equal shapes; got low={self.low.tolist()}, "
                f"high={self.high.tolist()}."
            )
        self.cg_dim = self.low.numel()

    def sample(self, n: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
        u = torch.rand(n, self.cg_dim, generator=generator, dtype=torch.float64)
        return (self.low + u * (self.high - self.low)).to(dtype=dtype, device=device)


class FrameProposal:
    """z drawn uniformly from a fixed set of CG frames [N, cg_dim] (bead maps, CG samples)."""

    def __init__(self, frames: torch.Tensor):
        if frames.ndim != 2 or frames.shape[0] == 0:
            raise ValueError(
                f"Expected CG frames of shape [N, cg_dim] with N >= 1; got {list(frames.shape)}."
            )
        check_finite(frames, "CG frames")
        self.frames = frames.detach().to(torch.float64)
        self.cg_dim = frames.shape[1]

    def sample(self, n: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
        idx = torch.randint(self.frames.shape[0], (n,), generator=generator)
        return self.frames[idx].to(dtype=dtype, device=device)


class TemperatureSampler:
    """Training temperatures in [t_low, t_max]: uniform in beta, in log T, or in T.

    With `anneal_fraction > 0` the lower bound starts at t_max and decreases linearly to
    t_min over that fraction of the run (progress in [0, 1] is passed to `sample`). With
    `values`, temperatures are drawn uniformly from that list instead (for example only 300 and
    600 K, to test how the model transfers to the temperatures between).
    """

    def __init__(self, t_min: float, t_max: float, mode: str = "beta", anneal_fraction=0.0,
                 values: list[float] | None = None):
        check_temperature(t_min, "t_min")
        check_temperature(t_max, "t_max")
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min} K) is above t_max ({t_max} K); swap them.")
        if mode not in ("beta", "log", "uniform"):
            raise ValueError(f'Unknown temperature sampling "{mode}". Must be one of '
                             "['beta', 'log', 'uniform'].")
        self.t_min, self.t_max, self.mode = float(t_min), float(t_max), mode
        self.anneal_fraction = float(anneal_fraction)
        self.values = None
        if values is not None:
            for v in values:
                check_temperature(v, "t_values")
            self.values = torch.tensor([float(v) for v in values], dtype=torch.float64)
            if self.values.numel() == 0:
                raise ValueError("t_values is empty; give at least one temperature or None.")

    def lower_bound(self, progress: float) -> float:
        if self.anneal_fraction <= 0:
            return self.t_min
        frac = min(1.0, progress / self.anneal_fraction)
        return self.t_max + frac * (self.t_min - self.t_max)

    def sample(self, n: int, generator: torch.Generator, dtype, device, progress: float = 1.0):
        """[n] temperatures in K."""
        if self.values is not None:
            idx = torch.randint(len(self.values), (n,), generator=generator)
            return self.values[idx].to(dtype=dtype, device=device)
        low, high = self.lower_bound(progress), self.t_max
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        if self.mode == "beta":
            t = 1.0 / (1.0 / high + u * (1.0 / low - 1.0 / high))
        elif self.mode == "log":
            t = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            t = low + u * (high - low)
        return t.to(dtype=dtype, device=device)
