"""Free-energy surfaces on grids of torsion CG coordinates, and the arrays `ccg free-energy`
writes.

Bin centers are -pi + (i + 1/2) 2 pi / N, axes in the map's CG order, 'ij' indexing.

`free_energy_arrays` (a flow model, by importance sampling) and `cg_model_arrays` (a fitted
F_theta, evaluated directly) return the same layout, written by `save_free_energy` as an npz:

    F_kT [(N,)*d]       F / k_B T, axes in the map's CG order ('ij'), minimum shifted to 0
    F_kT_err            its standard error (delta method; F_theta: the ensemble spread)
    ess                 normalized effective sample size per point (F_theta: NaN)
    grid [d, N]         bin centers -pi + (i + 1/2) 2 pi / N (rad)
    mean_energy_kjmol   <U>_z
    mean_force          grad_z F [(N,)*d, d] in kJ/mol per CG unit
    temperature_k       T

At given CG frames (`z`), the arrays are per frame ([n_frames], [n_frames, cg_dim]) and `z`
replaces `grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.free_energy.cg_model import FreeEnergyModel
from ccg.free_energy.estimators import PointEstimates, estimate_free_energy
from ccg.io.atomic import atomic_path
from ccg.model import BackmappingModel


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


def free_energy_surface(model: BackmappingModel, temperature_k: float, *, n_grid: int = 36,
                        n_samples: int = 256, mean_force: bool = False,
                        generator: torch.Generator | None = None,
                        progress: bool = False) -> Surface:
    """F(z, T) on the torsion grid of a torsion CG map, by importance sampling through the flow.

    Args:
        model: a trained `BackmappingModel` whose CG coordinates are all torsions.
        temperature_k: T in K.
        n_grid: bins per torsion (n_grid ** cg_dim points).
        n_samples: flow samples per point.
        mean_force: also estimate grad_z F (one backward pass more).

    Returns:
        A `Surface` (its `f_kt` is F / k_B T on the grid, minimum 0).
    """
    if not bool(model.cg_map.z_circular.all()):
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


def cg_model_surface(cg_model: FreeEnergyModel, temperature_k: float,
                     n_grid: int) -> dict[str, np.ndarray]:
    """F_theta on the torsion grid, in the layout of the module docstring: F_kT (min 0),
    F_kT_err (ensemble spread), ess (NaN: no sampling), grid, mean_energy_kjmol, mean_force,
    temperature_k."""
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


def free_energy_arrays(model: BackmappingModel, temperature_k: float, *,
                       z: torch.Tensor | None = None, n_grid: int = 36, n_samples: int = 256,
                       generator: torch.Generator | None = None,
                       progress: bool = False) -> dict[str, np.ndarray]:
    """F(z, T), its error, ESS, <U>_z and the mean force through a trained flow, on the torsion
    grid (`n_grid` bins per torsion) or at CG frames `z` [M, cg_dim]; the layout of the module
    docstring."""
    if z is not None:
        est = estimate_free_energy(model, z.float(), temperature_k, n_samples=n_samples,
                                   mean_force=True, generator=generator, progress=progress)
        arrays = {"F_kT": est.beta_f - est.beta_f.min(), "z": z}

        def shape(values: torch.Tensor) -> torch.Tensor:
            return values
    else:
        surface = free_energy_surface(model, temperature_k, n_grid=n_grid, n_samples=n_samples,
                                      mean_force=True, generator=generator, progress=progress)
        est = surface.estimates
        arrays = {"F_kT": surface.f_kt, "grid": surface.grid}
        shape = surface.reshape
    arrays.update({
        "F_kT_err": shape(est.beta_f_err), "ess": shape(est.ess),
        "mean_energy_kjmol": shape(est.mean_energy_kjmol), "mean_force": shape(est.mean_force),
    })
    payload = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    payload["temperature_k"] = np.array(float(temperature_k))
    return payload


def cg_model_arrays(cg_model: FreeEnergyModel, temperature_k: float, *,
                    z: torch.Tensor | None = None, n_grid: int = 36) -> dict[str, np.ndarray]:
    """F_theta(z, T) on the torsion grid or at CG frames `z` [M, cg_dim], in the layout of the
    module docstring (F_kT_err: the ensemble spread; ess: NaN)."""
    if z is None:
        return cg_model_surface(cg_model, temperature_k, n_grid)
    z = z.double()
    obs = cg_model.observables(z, temperature_k)
    return {
        "F_kT": (obs["beta_f"] - obs["beta_f"].min()).detach().numpy(), "z": z.numpy(),
        "F_kT_err": obs["beta_f_std"].detach().numpy(), "ess": np.full(len(z), np.nan),
        "mean_energy_kjmol": obs["mean_energy_kjmol"].detach().numpy(),
        "mean_force": obs["mean_force"].detach().numpy(),
        "temperature_k": np.array(float(temperature_k)),
    }


def save_free_energy(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write `free_energy_arrays` / `cg_model_arrays` output as an npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)
