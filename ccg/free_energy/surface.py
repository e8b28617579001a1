"""Free-energy surfaces on grids of torsion CG coordinates.

Bin centers are -pi + (i + 1/2) 2 pi / N, axes in the map's CG order, 'ij' indexing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.free_energy.estimators import PointEstimates, estimate_free_energy


def grid_centers(n_grid: int) -> torch.Tensor:
    """[n_grid] bin centers -pi + (i + 1/2) 2 pi / n_grid in rad (float64)."""
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 2:
        raise ValueError(f"Expected the grid size as an integer >= 2; got {n_grid!r}.")
    i = torch.arange(n_grid, dtype=torch.float64)
    return -math.pi + (i + 0.5) * 2 * math.pi / n_grid


def grid_points(n_grid: int, cg_dim: int) -> torch.Tensor:
    """All grid points [n_grid**cg_dim, cg_dim], 'ij' order (last axis fastest)."""
    axes = [grid_centers(n_grid)] * cg_dim
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


@dataclass
class Surface:
    """A free-energy surface at one temperature.

    Attributes:
        grid: [d, N] bin centers (rad).
        temperature_k: T in K.
        estimates: the per-point `PointEstimates` (flattened, 'ij' order).
    """

    grid: torch.Tensor
    temperature_k: float
    estimates: PointEstimates

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.grid.shape[1],) * self.grid.shape[0]

    @property
    def f_kt(self) -> torch.Tensor:
        """F / k_B T on the grid, shape (N,)*d, shifted so its minimum is 0."""
        f = self.estimates.beta_f.reshape(self.shape)
        return f - f.min()

    @property
    def f_kjmol(self) -> torch.Tensor:
        return self.f_kt * KB_KJMOL_PER_K * self.temperature_k

    def reshape(self, values: torch.Tensor) -> torch.Tensor:
        """Per-point values [N**d, ...] -> (N,)*d + trailing shape."""
        return values.reshape(*self.shape, *values.shape[1:])


def torsion_surface(model, temperature_k: float, *, n_grid: int = 36, n_samples: int = 256,
                    mean_force: bool = False, generator: torch.Generator | None = None,
                    progress: bool = False) -> Surface:
    """F(z, T) on the torsion grid of a torsion CG map (1-D or 2-D)."""
    circular = getattr(model.cg_map, "z_circular", None)
    if circular is None or not bool(torch.as_tensor(circular).all()):
        raise ValueError(
            "A grid surface needs a torsion CG map (all CG coordinates periodic); this model's "
            "map has Cartesian/linear CG coordinates. Evaluate at CG frames instead "
            "(estimate_free_energy(model, z, T) or `ccg free-energy --frames FILE`)."
        )
    z = grid_points(n_grid, model.cg_dim)
    estimates = estimate_free_energy(model, z, temperature_k, n_samples=n_samples,
                                     mean_force=mean_force, generator=generator,
                                     progress=progress)
    grid = torch.stack([grid_centers(n_grid)] * model.cg_dim)
    return Surface(grid=grid, temperature_k=float(temperature_k), estimates=estimates)


def cg_model_surface(cg_model, temperature_k: float, n_grid: int) -> dict[str, np.ndarray]:
    """F_theta on the torsion grid, in the npz layout of `ccg free-energy` (see its docstring):
    F_kT (min 0), F_kT_err (ensemble spread), ess (NaN: no sampling), grid, mean_energy_kjmol,
    mean_force, temperature_k."""
    if not bool(cg_model.cg_map.z_circular.all()):
        raise ValueError("A grid needs a torsion CG map (all CG coordinates periodic); this model "
                         "has Cartesian or linear CG coordinates. Evaluate it at CG frames "
                         "instead (--frames).")
    d = cg_model.cg_dim
    z = grid_points(n_grid, d).double()
    obs = cg_model.observables(z, float(temperature_k))
    shape = (n_grid,) * d
    f = obs["beta_f"].detach().reshape(shape)
    # the spread of the members' surfaces, each aligned to the ensemble by its Boltzmann-weighted
    # mean offset (values fix F only up to a constant per temperature)
    members = cg_model.observables(z, float(temperature_k), members=True)["beta_f"]
    weight = torch.softmax(-obs["beta_f"], 0)
    offset = ((members - obs["beta_f"]) * weight).sum(1, keepdim=True)
    spread = (members - offset).std(0) if members.shape[0] > 1 else torch.zeros_like(f)
    centers = grid_centers(n_grid).double()
    return {
        "F_kT": (f - f.min()).numpy(),
        "F_kT_err": spread.reshape(shape).numpy(),
        "ess": np.full(shape, np.nan),
        "grid": torch.stack([centers] * d).numpy(),
        "mean_energy_kjmol": obs["mean_energy_kjmol"].detach().reshape(shape).numpy(),
        "mean_force": obs["mean_force"].detach().reshape(*shape, d).numpy(),
        "temperature_k": np.array(float(temperature_k)),
    }
