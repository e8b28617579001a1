"""The base density of circular dims: wrapped Cauchy, optionally a two-state mixture.

One component: a wrapped Cauchy of concentration ρ around a centre c,

    log p(u) = log(1 - ρ²) - log 2π - log(1 + ρ² - 2ρ cos(u - c)),

drawn exactly by the Möbius map u = c + 2 atan((1 - ρ)/(1 + ρ) tan(v / 2)) of a uniform v
(ρ = 0: uniform). Two components (a torsion with a second minimum, such as a peptide ω's cis
state): the same width at c and at c + offset, the second with probability sigmoid(λ(T)),

    λ(T) = -energy_kt · T_ref / T + log_ratio,

the harmonic-well population ratio of the two minima (see `ccg.training.base_modes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LOG_2PI = math.log(2.0 * math.pi)


def wrapped_cauchy_log_prob(u: torch.Tensor, centre: torch.Tensor,
                            rho: torch.Tensor) -> torch.Tensor:
    """Elementwise log density of a wrapped Cauchy (rad); broadcasts u, centre, rho."""
    return (torch.log1p(-rho * rho) - LOG_2PI
            - torch.log1p(rho * rho - 2.0 * rho * torch.cos(u - centre)))


def mobius(v: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Map uniform angles v in [-π, π) to a wrapped Cauchy(0, ρ) (elementwise, exact)."""
    return 2.0 * torch.atan((1.0 - rho) / (1.0 + rho) * torch.tan(0.5 * v))


class CircularModes(torch.nn.Module):
    """Second components of the circular base: per dim an offset (rad) and the two numbers of
    λ(T); dims without one have `mask` False.

    Args:
        dim: n_r.
        modes: rows (dim, offset, energy_kt, log_ratio), at most one per dim.
        circular: BoolTensor [dim]; every row's dim must be circular.
    """

    def __init__(self, dim: int, modes: Sequence[Sequence[float]] | None,
                 circular: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        rows = [tuple(float(v) for v in m) for m in (modes or [])]
        mask = torch.zeros(dim, dtype=torch.bool)
        values = torch.zeros(3, dim, dtype=dtype)
        for row in rows:
            if len(row) != 4 or not all(math.isfinite(v) for v in row):
                raise ValueError(
                    "Expected circular_modes rows (dim, offset rad, energy_kt, log_ratio) of "
                    f"finite numbers; got {row}."
                )
            d = int(row[0])
            if d != row[0] or not 0 <= d < dim or not bool(circular[d]) or bool(mask[d]):
                raise ValueError(
                    f"circular_modes row {row}: dim must be the index of a circular dim "
                    f"(0..{dim - 1}), at most once; got {row[0]}."
                )
            mask[d] = True
            values[:, d] = torch.tensor(row[1:], dtype=dtype)
        self.rows = [[int(r[0]), r[1], r[2], r[3]] for r in sorted(rows)]
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("offset", values[0], persistent=False)
        self.register_buffer("energy_kt", values[1], persistent=False)
        self.register_buffer("log_ratio", values[2], persistent=False)

    @property
    def active(self) -> bool:
        return bool(self.rows)

    def log_odds(self, context: torch.Tensor, temperature_scaling: bool) -> torch.Tensor:
        """λ [B, dim] (0 where there is no second mode: use with `mask`)."""
        t_ratio = torch.exp(-context[:, -1:])  # T_ref / T, [B, 1]
        if not temperature_scaling:
            t_ratio = torch.ones_like(t_ratio)
        lam = -self.energy_kt.to(context.dtype) * t_ratio + self.log_ratio.to(context.dtype)
        return torch.where(self.mask, lam, torch.zeros_like(lam))

    def pick(self, context: torch.Tensor, temperature_scaling: bool,
             generator: torch.Generator | None) -> torch.Tensor:
        """Offsets [B, dim] of each row's component: `offset` with probability sigmoid(λ)."""
        lam = self.log_odds(context, temperature_scaling)
        u = torch.rand(lam.shape, dtype=lam.dtype, device=lam.device, generator=generator)
        second = self.mask & (u < torch.sigmoid(lam))
        return torch.where(second, self.offset.to(lam.dtype), torch.zeros_like(lam))

    def log_prob(self, u: torch.Tensor, centre: torch.Tensor, rho: torch.Tensor,
                 context: torch.Tensor, temperature_scaling: bool) -> torch.Tensor:
        """Elementwise log density [B, dim] of the mixture on masked dims, the single wrapped
        Cauchy elsewhere."""
        one = wrapped_cauchy_log_prob(u, centre, rho)
        if not self.active:
            return one
        lam = self.log_odds(context, temperature_scaling)
        two = wrapped_cauchy_log_prob(u, centre + self.offset.to(u.dtype), rho)
        mixed = torch.logaddexp(torch.nn.functional.logsigmoid(-lam) + one,
                                torch.nn.functional.logsigmoid(lam) + two)
        return torch.where(self.mask, mixed, one)
