"""Conditional observables of a 1-D fast coordinate by quadrature on a uniform grid.

For a system with CG coordinates z ([cg_dim]) and one fast coordinate r, at inverse temperature
β (mol/kJ) and energy U(z, r) (kJ/mol), everything here is a weighted sum over a uniform grid
r_1 < ... < r_N with trapezoid weights w_j, evaluated in float64 with log-sum-exp:

    log Z(z) = log Σ_j w_j exp(−β U(z, r_j)),          F = −log Z / β,
    p_j = w_j exp(−β U_j) / Z,  ⟨U⟩ = Σ p_j U_j,  Var U = Σ p_j (U_j − ⟨U⟩)²,
    ∇F = ⟨g⟩,  ∇⟨U⟩ = ⟨g⟩ − β Cov(U, g),   g_j = ∇_z U(z, r_j) (by autograd, r fixed).

The trapezoid rule converges exponentially fast for smooth integrands that vanish at both ends of
the window, so the only real error is truncation; every call checks that the integrand at the
window's edges is below exp(EDGE_LOG_TOL) of the total and raises otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ccg.constants import KB_KJMOL_PER_K

EDGE_LOG_TOL = -30.0
"""Largest allowed log of (integrand at a window edge) / (integral): e^-30 ≈ 1e-13."""

_CHUNK_ELEMENTS = 1 << 18
"""Batch rows are processed in chunks of at most this many (row, grid point) pairs."""

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ConditionalObservables:
    """Cumulants of U under p(r | z, T), batched over z.

    Attributes:
        free_energy: F(z, T) in kJ/mol, shape [B].
        mean_energy: ⟨U⟩_z = ∂(βF)/∂β in kJ/mol, shape [B].
        energy_variance: Var_z(U) = −∂²(βF)/∂β² in (kJ/mol)², shape [B].
        mean_force: ∇_z F = ⟨∇_z U⟩_z in kJ/mol per unit z, shape [B, cg_dim].
        thermal_response: ∂(β∇_z F)/∂β = ∇_z⟨U⟩_z in kJ/mol per unit z, shape [B, cg_dim].
    """

    free_energy: torch.Tensor
    mean_energy: torch.Tensor
    energy_variance: torch.Tensor
    mean_force: torch.Tensor
    thermal_response: torch.Tensor

    def to(self, dtype: torch.dtype) -> ConditionalObservables:
        """A copy with every field cast to `dtype`."""
        return ConditionalObservables(
            self.free_energy.to(dtype),
            self.mean_energy.to(dtype),
            self.energy_variance.to(dtype),
            self.mean_force.to(dtype),
            self.thermal_response.to(dtype),
        )


def uniform_grid(
    lo: float, hi: float, n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform float64 grid [n] on [lo, hi] and its log trapezoid weights [n]."""
    grid = torch.linspace(lo, hi, n, dtype=torch.float64, device=device)
    log_w = torch.full((n,), math.log((hi - lo) / (n - 1)), dtype=torch.float64, device=device)
    log_w[0] = log_w[-1] = log_w[0] - math.log(2.0)
    return grid, log_w


def _grid_x(z: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Configurations [b * N, cg_dim + 1] pairing each z row with every grid point."""
    b, n = z.shape[0], grid.shape[0]
    zz = z.unsqueeze(1).expand(b, n, z.shape[1])
    rr = grid.view(1, n, 1).expand(b, n, 1)
    return torch.cat([zz, rr], dim=2).reshape(b * n, -1)


def check_edges(
    log_integrand: torch.Tensor, log_total: torch.Tensor, beta: torch.Tensor, window: str
) -> None:
    """Raise ValueError if the integrand [B, N] is not negligible at both window edges."""
    edge = torch.maximum(log_integrand[:, 0], log_integrand[:, -1]) - log_total
    bad = ~(edge < EDGE_LOG_TOL)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        t = 1.0 / (KB_KJMOL_PER_K * float(beta[i]))
        raise ValueError(
            f"The quadrature window {window} truncates the Boltzmann factor in "
            f"{int(bad.sum())} of {bad.numel()} rows (first: row {i}, T = {t:.1f} K, "
            f"edge/total = e^{float(edge[i]):.1f}; expected < e^{EDGE_LOG_TOL:.0f}). "
            "Widen the window (a larger range) or lower the temperature."
        )


def log_partition(
    energy_fn: EnergyFn, z: torch.Tensor, beta: torch.Tensor, lo: float, hi: float, n: int
) -> torch.Tensor:
    """log Z(z) = log ∫ exp(−β U(z, r)) dr over r in [lo, hi] (n points); shape [B].

    Args:
        energy_fn: U(x) for x [M, cg_dim + 1] float64, returns [M] kJ/mol.
        z: CG coordinates, float64 [B, cg_dim].
        beta: inverse temperatures, float64 [B], mol/kJ.
    """
    grid, log_w = uniform_grid(lo, hi, n, z.device)
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = []
    with torch.no_grad():
        for s in range(0, z.shape[0], rows):
            zc, bc = z[s : s + rows], beta[s : s + rows]
            u = energy_fn(_grid_x(zc, grid)).view(zc.shape[0], n)
            ell = -bc[:, None] * u + log_w
            log_z = torch.logsumexp(ell, dim=1)
            check_edges(ell, log_z, bc, f"r in [{lo}, {hi}]")
            out.append(log_z)
    return torch.cat(out)


def observables(
    energy_fn: EnergyFn, z: torch.Tensor, beta: torch.Tensor, lo: float, hi: float, n: int
) -> ConditionalObservables:
    """All conditional cumulants (see module docstring) by quadrature over r in [lo, hi].

    Arguments as in `log_partition`. Results are float64 and carry no autograd graph.
    """
    grid, log_w = uniform_grid(lo, hi, n, z.device)
    rows = max(1, _CHUNK_ELEMENTS // n)
    cg_dim = z.shape[1]
    parts: list[tuple[torch.Tensor, ...]] = []
    for s in range(0, z.shape[0], rows):
        zc, bc = z[s : s + rows], beta[s : s + rows]
        b = zc.shape[0]
        with torch.enable_grad():
            x = _grid_x(zc.detach(), grid).requires_grad_(True)
            u_flat = energy_fn(x)
            (gx,) = torch.autograd.grad(u_flat.sum(), x)
        u = u_flat.detach().view(b, n)
        g = gx[:, :cg_dim].view(b, n, cg_dim)
        ell = -bc[:, None] * u + log_w
        log_z = torch.logsumexp(ell, dim=1)
        check_edges(ell, log_z, bc, f"r in [{lo}, {hi}]")
        p = torch.exp(ell - log_z[:, None])
        mean_u = (p * u).sum(1)
        du = u - mean_u[:, None]
        mean_g = torch.einsum("bn,bnd->bd", p, g)
        cov_ug = torch.einsum("bn,bnd->bd", p * du, g)
        parts.append(
            (
                -log_z / bc,
                mean_u,
                (p * du * du).sum(1),
                mean_g,
                mean_g - bc[:, None] * cov_ug,
            )
        )
    return ConditionalObservables(*(torch.cat(f) for f in zip(*parts, strict=True)))


def sample_on_grid(
    log_density: torch.Tensor,
    grid: torch.Tensor,
    index: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Samples from the piecewise-linear interpolants of densities on a uniform grid.

    Args:
        log_density: unnormalized log-densities at the grid points, float64 [U, N] (U rows).
        grid: uniform grid, float64 [N].
        index: which row of `log_density` each sample follows, int64 [B]; default arange(U).
        generator: optional torch.Generator on the grid's device.

    Returns:
        Samples, float64 [B]. The interpolant's cell masses are the trapezoid masses, so the
        sampled law matches the trapezoid quadrature used for F; its density differs from the
        exact one by O(h²) (h the spacing: the variance is inflated by about h²/6).
    """
    n_rows, n = log_density.shape
    if index is None:
        index = torch.arange(n_rows, device=grid.device)
    p = torch.exp(log_density - log_density.max(dim=1, keepdim=True).values)
    p0, p1 = p[:, :-1], p[:, 1:]
    cdf = torch.cumsum(0.5 * (p0 + p1), dim=1)
    # Row k's normalized CDF shifted into (k, k + 1]: one sorted 1-D array for all rows.
    offsets = torch.arange(n_rows, dtype=torch.float64, device=grid.device)[:, None]
    flat = (cdf / cdf[:, -1:] + offsets).reshape(-1)
    u = torch.rand(index.shape[0], 2, dtype=torch.float64, device=grid.device, generator=generator)
    pos = torch.searchsorted(flat, index + u[:, 0].clamp_min(1e-16))
    cell = (pos - index * (n - 1)).clamp(0, n - 2)
    a0, a1 = p0[index, cell], p1[index, cell]
    # Inverse CDF of the linear density a0 + (a1 - a0) t on t in [0, 1], in a stable form.
    v = u[:, 1]
    t = v * (a0 + a1) / (a0 + torch.sqrt(a0 * a0 + v * (a1 * a1 - a0 * a0))).clamp_min(1e-300)
    return grid[cell] + t.clamp(0.0, 1.0) * (grid[1] - grid[0])


def sample_conditional(
    energy_fn: EnergyFn,
    z: torch.Tensor,
    beta: torch.Tensor,
    lo: float,
    hi: float,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One r ~ exp(−βU(z, r)) per row on the grid over [lo, hi] (see `sample_on_grid`); [B].

    Rows with equal (z, β) share one density evaluation; the rest is chunked by memory.
    """
    grid, _ = uniform_grid(lo, hi, n, z.device)
    keys, inverse = torch.unique(torch.cat([z, beta[:, None]], 1), dim=0, return_inverse=True)
    order = torch.argsort(inverse)
    bounds = torch.searchsorted(inverse[order], torch.arange(keys.shape[0] + 1, device=z.device))
    out = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)
    rows = max(1, _CHUNK_ELEMENTS // n)
    with torch.no_grad():
        for s in range(0, keys.shape[0], rows):
            kc = keys[s : s + rows]
            u = energy_fn(_grid_x(kc[:, :-1], grid)).view(kc.shape[0], n)
            idx = order[int(bounds[s]) : int(bounds[min(s + rows, keys.shape[0])])]
            out[idx] = sample_on_grid(-kc[:, -1:] * u, grid, inverse[idx] - s, generator)
    return out


def sample_marginal(
    free_energy_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    beta: torch.Tensor,
    lo: float,
    hi: float,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z ~ exp(−βF(z)) for a 1-D z on the grid over [lo, hi] (see `sample_on_grid`); [B, 1].

    Args:
        free_energy_fn: F(z [M, 1], beta [M]) in kJ/mol, float64 [M].
        beta: inverse temperatures, float64 [B]; one grid is built per distinct value.
    """
    grid, log_w = uniform_grid(lo, hi, n, beta.device)
    z = torch.empty(beta.shape[0], 1, dtype=torch.float64, device=beta.device)
    for b in torch.unique(beta):
        rows = torch.nonzero(beta == b).squeeze(1)
        bb = b.expand(n)
        log_p = -bb * free_energy_fn(grid[:, None], bb)
        ell = (log_p + log_w)[None]
        check_edges(ell, torch.logsumexp(ell, 1), bb[:1], f"z in [{lo}, {hi}] (z_range)")
        index = torch.zeros_like(rows)
        z[rows, 0] = sample_on_grid(log_p[None], grid, index, generator)
    return z
