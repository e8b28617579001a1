"""Comparing free-energy surfaces with a reference (an MD histogram, another model).

What a user does with ccg's surfaces and their own simulations: histogram the reference's CG
samples on the same grid as `ccg free-energy` (`histogram_free_energy`), then compare the two
surfaces by the RMSE after the best constant shift (`rmse_after_shift`,
`shifted_difference`), by the KL divergence of their grid distributions (`kl_divergence`),
and by the populations of states (`state_populations`).

Every surface here is F / k_B T (dimensionless) as a numpy array of any shape, one value per
grid bin, on a common grid; empty bins are `inf` (or NaN). Free energies are defined up to a
constant, so every function is invariant to adding one to either surface. The grid is that of
`ccg.grid_centers`: n bins per torsion over [-pi, pi), centers -pi + (i + 1/2) 2 pi / n, axes
in the CG order ('ij' indexing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def _surface(f: object, name: str) -> np.ndarray:
    array = np.asarray(f, dtype=np.float64)
    if array.ndim == 0 or array.size == 0:
        raise ValueError(f"Expected {name} as an array of F / kT per grid bin; got shape "
                         f"{list(array.shape)}.")
    return array


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"Expected {names} on the same grid; got shapes {list(a.shape)} and "
                         f"{list(b.shape)}. Evaluate both with the same number of bins.")


def histogram_free_energy(samples: object, n_grid: int, *,
                          pseudo_count: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """F / k_B T of torsion samples on the `ccg free-energy` grid, from their histogram.

    Args:
        samples: [n, d] torsions in rad (for example (phi, psi) of an MD run, or `ccg
            simulate` frames); wrapped onto [-pi, pi) before binning.
        n_grid: bins per torsion (the `--grid` of `ccg free-energy`), >= 2.
        pseudo_count: None: empty bins get F = inf. A number c > 0: empty bins get the free
            energy of c counts (a finite penalty for a state the samples missed).

    Returns:
        (f_kt, counts): F / k_B T = -log(counts / n), shifted so its minimum is 0, and the
        counts, both of shape (n_grid,) * d.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"Expected samples of shape [n, d] (torsions in rad); got "
                         f"{list(x.shape)}. One torsion per sample: use samples[:, None].")
    if not np.isfinite(x).all():
        raise ValueError(f"The samples contain {int((~np.isfinite(x)).sum())} non-finite "
                         "values; drop those frames first.")
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 2:
        raise ValueError(f"Expected n_grid as an integer >= 2; got {n_grid!r}.")
    if pseudo_count is not None and not pseudo_count > 0:
        raise ValueError(f"Expected pseudo_count > 0 (or None); got {pseudo_count!r}.")
    wrapped = np.remainder(x + math.pi, 2 * math.pi) - math.pi
    edges = np.linspace(-math.pi, math.pi, n_grid + 1)
    counts, _ = np.histogramdd(wrapped, bins=[edges] * x.shape[1])
    filled = counts if pseudo_count is None else np.maximum(counts, float(pseudo_count))
    with np.errstate(divide="ignore"):
        f = -np.log(filled / counts.sum())
    return f - f[np.isfinite(f)].min(), counts


def shifted_difference(f_a: object, f_b: object, mask: object = None) -> np.ndarray:
    """f_a - f_b minus its mean over the compared bins: the difference after the best shift.

    Args:
        f_a, f_b: F / k_B T on the same grid.
        mask: bool array of that shape (for example `f_ref < 4`); None: every bin. Bins where
            either surface is not finite are left out as well.

    Returns:
        The shifted difference, same shape, NaN outside the compared bins (mean 0 over them).
    """
    a, b = _surface(f_a, "f_a"), _surface(f_b, "f_b")
    _same_shape(a, b, "f_a and f_b")
    sel = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        _same_shape(a, m, "the surfaces and the mask")
        sel &= m
    if not sel.any():
        raise ValueError("No bin to compare: the mask selects no bin where both surfaces are "
                         "finite. Check the mask (for example f_ref < 4) and the grids.")
    diff = np.full(a.shape, np.nan)
    diff[sel] = a[sel] - b[sel]
    return diff - diff[sel].mean()


def rmse_after_shift(f_a: object, f_b: object, mask: object = None) -> float:
    """RMSE (in k_B T) of f_a - f_b over the masked, finite bins after the best constant shift.

    Args:
        f_a, f_b: F / k_B T on the same grid.
        mask: bool array of that shape (usually the reference's populated bins, f_ref < 4);
            None: every bin where both are finite.
    """
    diff = shifted_difference(f_a, f_b, mask)
    return float(np.sqrt(np.nanmean(diff**2)))


def _boltzmann(f: np.ndarray) -> np.ndarray:
    """p ∝ exp(-F) on the grid, normalized; bins with non-finite F have p = 0."""
    finite = np.isfinite(f)
    if not finite.any():
        raise ValueError("The surface has no finite bin.")
    p = np.zeros(f.shape)
    p[finite] = np.exp(-(f[finite] - f[finite].min()))
    return p / p.sum()


def kl_divergence(f_ref: object, f_model: object) -> float:
    """KL(p_ref || p_model) of the grid distributions p ∝ exp(-F) (natural log, >= 0).

    Bins empty in the reference (non-finite f_ref) contribute nothing; a bin the reference
    populates where f_model is not finite makes the divergence inf.
    """
    ref, model = _surface(f_ref, "f_ref"), _surface(f_model, "f_model")
    _same_shape(ref, model, "f_ref and f_model")
    p, q = _boltzmann(ref), _boltzmann(model)
    sel = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[sel] * (np.log(p[sel]) - np.log(q[sel]))))


def state_populations(f_kt: object, states: Mapping[str, object]) -> dict[str, float]:
    """Population (probability) of each state under p ∝ exp(-F) on the grid.

    Args:
        f_kt: F / k_B T on a grid (empty bins inf: population 0).
        states: name -> bool array of the grid's shape, True on the state's bins (for example
            `np.broadcast_to(grid[0][:, None] > 0, f_kt.shape)` for phi > 0 on a (phi, psi)
            grid).

    Returns:
        {name: fraction in [0, 1]}; states that tile the grid sum to 1.
    """
    p = _boltzmann(_surface(f_kt, "f_kt"))
    out = {}
    for name, state in states.items():
        m = np.asarray(state, dtype=bool)
        _same_shape(p, m, f"f_kt and the state {name!r}")
        out[name] = float(p[m].sum())
    return out
