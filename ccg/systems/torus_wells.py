"""A d-dimensional analytic system on the torus: a product of double wells on circles.

x = (z, r), shape [B, 2d]: z = x[:, :d] are angles (rad, periodic on [-π, π)), r = x[:, d:] one
fast coordinate per angle (dimensionless). Energies kJ/mol, temperatures K, β = 1/(k_B T):

    U(z, r) = Σ_i [ V_i(z_i) + k_i(z_i) (r_i − m(z_i))² / 2 ],
    V_i(z)  = h_i cos² z − ε_i sin z          (wells near ±π/2, barriers near 0 and ±π),
    k_i(z)  = k_0 exp(κ_i sin z)               (the z > 0 well is stiffer: less entropy),
    m(z)    = μ cos z.

r given z is Gaussian, so the free energy is exact and separable:

    F(z, T) = Σ_i F_i(z_i, T),   F_i(z, T) = V_i(z) + (1 / 2β) log(β k_i(z) / 2π),

with ⟨U⟩_z = Σ V_i + d/(2β), Var_z U = d/(2β²), ∇F_i = V_i' + κ_i cos z / (2β) and the thermal
response ∇⟨U⟩ = V_i'. The energy favours the z > 0 well by 2 ε_i, the entropy the z < 0 well by
κ_i k_B T, so the populations shift towards z < 0 as T rises (the well minima cross at
2 ε_i / κ_i k_B, 100-2400 K for the defaults; z0's populations turn over between 300 and
600 K). Everything marginal is a product of 1-D integrals over circles, done here by
Gauss-Legendre quadrature (accurate to ~1e-13): the partition functions (`log_partition_1d`),
the mass of any arc (`arc_log_mass`), exact 1-D / 2-D projections on a bins grid
(`projection`) and the population of any box (`box_population`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.systems._quadrature import ConditionalObservables
from ccg.systems.analytic import AnalyticSystem
from ccg.systems.registry import SYSTEMS

__all__ = ["TorusDoubleWells"]

BARRIERS_KJMOL = (10.0, 12.0, 8.0, 11.0, 9.0, 13.0)
"""h_i, cycled over the coordinates (≈ 3-5 k_B T at 300 K)."""
TILTS_KJMOL = (1.5, 2.5, 1.0, 2.0, 0.5, 3.0)
"""ε_i: the z > 0 well lies 2 ε_i lower in energy."""
ENTROPY_COUPLINGS = (1.0, 0.5, 1.5, 0.8, 1.2, 0.3)
"""κ_i: the z > 0 well is stiffer by e^{2κ_i}, which costs it κ_i k_B T of entropy."""
MAX_DIMS = 12
_NODES = np.polynomial.legendre.leggauss(96)
_MAX_REJECTION_ROUNDS = 1000


def _cycled(values: Sequence[float], d: int) -> torch.Tensor:
    return torch.tensor([values[i % len(values)] for i in range(d)], dtype=torch.float64)


@SYSTEMS.register("torus-wells", kind="analytic", default_map="split")
class TorusDoubleWells(AnalyticSystem):
    """Product of `n_dims` double wells on circles, each with one Gaussian fast coordinate.

    Args:
        n_dims: d, the number of CG angles (1 to 12; 3 to 6 is what it is for).
        stiffness: k_0 in kJ/mol (per unit r²), > 0.
        mean_shift: μ, the z-dependent shift of r's mean (dimensionless).

    See the module docstring for U, F and the exact marginals. `z_periodic` tells the
    "split" map that z lives on circles (flow context cos z, sin z).
    """

    name = "torus-wells"
    z_periodic = True

    def __init__(self, n_dims: int = 4, stiffness: float = 50.0, mean_shift: float = 0.3) -> None:
        if isinstance(n_dims, bool) or not isinstance(n_dims, int) or not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"Expected n_dims as an integer in [1, {MAX_DIMS}]; got {n_dims!r}.")
        if not (math.isfinite(stiffness) and stiffness > 0):
            raise ValueError(f"Expected stiffness > 0 (kJ/mol, finite); got {stiffness}.")
        if not math.isfinite(mean_shift):
            raise ValueError(f"Expected a finite mean_shift; got {mean_shift}.")
        d = n_dims
        self.cg_dim = d
        self.event_shape = (2 * d,)
        self.stiffness, self.mean_shift = float(stiffness), float(mean_shift)
        self.barriers = _cycled(BARRIERS_KJMOL, d)
        self.tilts = _cycled(TILTS_KJMOL, d)
        self.couplings = _cycled(ENTROPY_COUPLINGS, d)
        self.cg_bounds = ([-math.pi] * d, [math.pi] * d)
        self._kwargs = {"n_dims": d, "stiffness": self.stiffness, "mean_shift": self.mean_shift}

    # ---- the energy and its pieces (z: [B, d], any float dtype) --------------------------

    def _params(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(p.to(dtype=like.dtype, device=like.device)
                     for p in (self.barriers, self.tilts, self.couplings))

    def well_energy(self, z: torch.Tensor) -> torch.Tensor:
        """V_i(z_i) = h_i cos² z_i − ε_i sin z_i in kJ/mol; z [B, d] -> [B, d]."""
        h, eps, _ = self._params(z)
        return h * torch.cos(z) ** 2 - eps * torch.sin(z)

    def k_fast(self, z: torch.Tensor) -> torch.Tensor:
        """k_i(z_i) = k_0 exp(κ_i sin z_i) in kJ/mol; z [B, d] -> [B, d]."""
        _, _, kappa = self._params(z)
        return self.stiffness * torch.exp(kappa * torch.sin(z))

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        d = self.cg_dim
        z, r = x[:, :d], x[:, d:]
        dr = r - self.mean_shift * torch.cos(z)
        return (self.well_energy(z) + 0.5 * self.k_fast(z) * dr**2).sum(1)

    def coordinate_free_energy(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """F_i(z_i, T) in kJ/mol: z [B, d] (rad), beta [B] or [B, 1] (mol/kJ) -> [B, d]."""
        b = beta.reshape(-1, 1).to(z)
        return self.well_energy(z) + 0.5 / b * torch.log(b * self.k_fast(z) / (2 * math.pi))

    # ---- closed forms ---------------------------------------------------------------------

    def _free_energy(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.coordinate_free_energy(z, beta).sum(1)

    def _observables(self, z: torch.Tensor, beta: torch.Tensor) -> ConditionalObservables:
        h, eps, kappa = self._params(z)
        d, b = self.cg_dim, beta[:, None]
        slope = -h * torch.sin(2 * z) - eps * torch.cos(z)  # V_i'
        return ConditionalObservables(
            free_energy=self._free_energy(z, beta),
            mean_energy=self.well_energy(z).sum(1) + d / (2 * beta),
            energy_variance=d / (2 * beta**2),
            mean_force=slope + kappa * torch.cos(z) / (2 * b),
            thermal_response=slope,
        )

    def _sample_conditional(self, z: torch.Tensor, beta: torch.Tensor,
                            generator: torch.Generator | None) -> torch.Tensor:
        eps = torch.randn(z.shape, dtype=torch.float64, device=z.device, generator=generator)
        return self.mean_shift * torch.cos(z) + eps / torch.sqrt(beta[:, None] * self.k_fast(z))

    def _coordinate_f(self, i: int, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """F_i(z, T) in kJ/mol of one coordinate: z and beta of one shape -> that shape."""
        h, eps, kappa = (float(p[i]) for p in (self.barriers, self.tilts, self.couplings))
        k = self.stiffness * torch.exp(kappa * torch.sin(z))
        return h * torch.cos(z) ** 2 - eps * torch.sin(z) + torch.log(beta * k / (2 * math.pi)
                                                                      ) / (2 * beta)

    def _sample_marginal(self, beta: torch.Tensor,
                         generator: torch.Generator | None) -> torch.Tensor:
        """Exact z ~ exp(−βF), coordinate by coordinate, by rejection from the uniform on the
        circle against min F_i (on a 4096-point grid, less a margin above its grid error)."""
        kw = {"dtype": torch.float64, "device": beta.device}
        grid = torch.linspace(-math.pi, math.pi, 4097, **kw)
        levels, row_level = torch.unique(beta, return_inverse=True)
        out = torch.empty(beta.shape[0], self.cg_dim, **kw)
        for i in range(self.cg_dim):
            f_min = self._coordinate_f(i, grid[None, :], levels[:, None]).min(1).values - 0.01
            todo = torch.arange(beta.shape[0], device=beta.device)
            for _ in range(_MAX_REJECTION_ROUNDS):
                if todo.numel() == 0:
                    break
                prop = (2 * torch.rand(todo.numel(), generator=generator, **kw) - 1) * math.pi
                b = beta[todo]
                log_acc = -b * (self._coordinate_f(i, prop, b) - f_min[row_level[todo]])
                acc = torch.log(torch.rand(todo.numel(), generator=generator, **kw)) < log_acc
                out[todo[acc], i] = prop[acc]
                todo = todo[~acc]
            else:
                raise RuntimeError(f"Rejection sampling of z did not finish in "
                                   f"{_MAX_REJECTION_ROUNDS} rounds; raise the temperature.")
        return out

    # ---- exact marginals by 1-D quadrature -----------------------------------------------

    @staticmethod
    def _scalar_beta(temperature_k: float) -> float:
        t = float(temperature_k)
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"Expected temperature_k > 0 K (finite); got {temperature_k}.")
        return 1.0 / (KB_KJMOL_PER_K * t)

    def _log_mass(self, dim: int, lo: np.ndarray, hi: np.ndarray, beta: float) -> np.ndarray:
        """log ∫_lo^hi exp(−β F_dim(z)) dz for arrays of intervals lo < hi (no wrapping)."""
        x, w = _NODES
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        half = (hi - lo)[..., None] / 2
        nodes = (lo + hi)[..., None] / 2 + half * x
        z = torch.zeros(nodes.size, self.cg_dim, dtype=torch.float64)
        z[:, dim] = torch.from_numpy(nodes.reshape(-1))
        f = self.coordinate_free_energy(z, torch.tensor([beta], dtype=torch.float64))[:, dim]
        log_f = (-beta * f).numpy().reshape(nodes.shape) + np.log(w) + np.log(half)
        return np.logaddexp.reduce(log_f, axis=-1)

    def arc_log_mass(self, dim: int, lo: float, hi: float, temperature_k: float) -> float:
        """log ∫ exp(−β F_dim(z)) dz over the arc from `lo` to `hi` (rad; lo > hi wraps
        through π; lo == hi is the whole circle) of coordinate `dim`, at T (K)."""
        if not 0 <= dim < self.cg_dim:
            raise ValueError(f"Expected dim in [0, {self.cg_dim}); got {dim}.")
        beta = self._scalar_beta(temperature_k)
        lo, hi = (math.remainder(v, 2 * math.pi) for v in (lo, hi))
        lo, hi = (-math.pi if v == math.pi else v for v in (lo, hi))
        if lo < hi:
            return float(self._log_mass(dim, np.array(lo), np.array(hi), beta))
        parts = [(lo, math.pi), (-math.pi, hi)]
        logs = [self._log_mass(dim, np.array(a), np.array(b), beta) for a, b in parts if b > a]
        return float(np.logaddexp.reduce(logs))

    def log_partition_1d(self, temperature_k: float) -> np.ndarray:
        """log Z_i = log ∫_{−π}^{π} exp(−β F_i) dz for each coordinate: [d] (F_i in kJ/mol)."""
        beta = self._scalar_beta(temperature_k)
        edges = np.linspace(-math.pi, math.pi, 9)
        return np.array([np.logaddexp.reduce(self._log_mass(i, edges[:-1], edges[1:], beta))
                         for i in range(self.cg_dim)])

    def projection(self, dims: Sequence[int], temperature_k: float, n_bins: int) -> np.ndarray:
        """Exact bin-averaged projected free energy F / k_B T on an n_bins grid per axis.

        F_proj(bin) = −log[(1/area) ∫_bin ∫ exp(−βF(z)) dz_rest dz_dims], absolute (no shift),
        bins [−π + j 2π/n, −π + (j+1) 2π/n). Returns shape (n_bins,) * len(dims), axes in the
        order of `dims`.
        """
        beta = self._scalar_beta(temperature_k)
        dims = [int(i) for i in dims]
        if not dims or len(set(dims)) != len(dims) or not all(0 <= i < self.cg_dim for i in dims):
            raise ValueError(f"Expected distinct dims in [0, {self.cg_dim}); got {dims}.")
        edges = np.linspace(-math.pi, math.pi, n_bins + 1)
        log_z = self.log_partition_1d(temperature_k)
        total = sum(log_z[j] for j in range(self.cg_dim) if j not in dims)
        out = np.full((n_bins,) * len(dims), total)
        for axis, i in enumerate(dims):
            mass = self._log_mass(i, edges[:-1], edges[1:], beta)
            shape = [1] * len(dims)
            shape[axis] = n_bins
            out = out + mass.reshape(shape)
        area = (2 * math.pi / n_bins) ** len(dims)
        return -(out - math.log(area))

    def box_population(self, bounds: Mapping[int, tuple[float, float]],
                       temperature_k: float) -> float:
        """Exact probability of the box {z: z_i on the arc bounds[i] for every listed i} under
        p(z) ∝ exp(−βF(z, T)); arcs as in `arc_log_mass`."""
        log_z = self.log_partition_1d(temperature_k)
        log_p = sum(self.arc_log_mass(i, lo, hi, temperature_k) - log_z[i]
                    for i, (lo, hi) in bounds.items())
        return float(math.exp(log_p))
