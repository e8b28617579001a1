"""Projections of F(z, T) onto one or two CG coordinates, by reweighting joint samples.

With joint samples (z_k, r_k) and weights w_k (`ccg.free_energy.joint`), E[w 1{z in bin}] is the
integral of exp(-beta F(z)) over the bin and all other coordinates, so the projected free energy
on a bins x bins grid (or bins, for one coordinate) is estimated without any grid over the rest:

    F_proj(bin) / k_B T = -log( Ẑ_bin / area ),   Ẑ_bin = (1/N) sum_k w_k 1{z_k in bin},

absolute (it is the bin average of the projected density exp(-beta F_proj) per rad^k, not
shifted; `Projection.shifted` has minimum 0). Its standard error is the delta method on the
mean: SE(log Ẑ) = SE(Ẑ) / Ẑ, with SE(Ẑ) from the independent samples, or from `n_batches`
batch means when the samples are correlated. Bins are [-pi + j 2 pi / n, -pi + (j + 1) 2 pi / n)
(rad) on each axis, in the order of `dims`; empty bins are inf with SE inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ccg.free_energy.joint import JointSamples


@dataclass
class Projection:
    """F projected onto `dims` at one temperature (numpy arrays, float64).

    Attributes:
        dims: indices of the CG coordinates, one per axis.
        names: their names.
        edges: bin edges [n_bins + 1] in rad (the same on every axis).
        f_kt: F_proj / k_B T, shape (n_bins,) * len(dims), absolute (per rad^k).
        f_kt_err: its standard error, same shape (inf in empty bins).
        counts: samples per bin, same shape.
        bin_ess: normalized ESS of the weights inside each bin, same shape (NaN if empty).
        temperature_k: T in K.
        joint_ess: ESS of all the joint samples, in (0, 1].
    """

    dims: tuple[int, ...]
    names: tuple[str, ...]
    edges: np.ndarray
    f_kt: np.ndarray
    f_kt_err: np.ndarray
    counts: np.ndarray
    bin_ess: np.ndarray
    temperature_k: float
    joint_ess: float

    @property
    def centers(self) -> np.ndarray:
        """Bin centers [n_bins] in rad."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def shifted(self) -> np.ndarray:
        """f_kt with its minimum over finite bins at 0."""
        finite = np.isfinite(self.f_kt)
        return self.f_kt - (self.f_kt[finite].min() if finite.any() else 0.0)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of `ccg free-energy --project` (the layout of `ccg.save_free_energy`):
        F_kT (minimum 0), F_kT_err, ess (per bin), grid [k, n_bins] (rad), counts,
        F_kT_absolute, dims, names, joint_ess, temperature_k."""
        k = len(self.dims)
        return {
            "F_kT": self.shifted, "F_kT_err": self.f_kt_err, "ess": self.bin_ess,
            "grid": np.stack([self.centers] * k), "counts": self.counts,
            "F_kT_absolute": self.f_kt, "dims": np.array(self.dims),
            "names": np.array(self.names), "joint_ess": np.array(self.joint_ess),
            "temperature_k": np.array(self.temperature_k),
        }


def resolve_dims(spec: Sequence[int | str] | str, cg_names: Sequence[str]) -> tuple[int, ...]:
    """CG coordinate indices from names or indices ("phi_0,psi_0", ["z1", 3], (0, 1)).

    Raises ValueError naming the valid names for an unknown name, an index out of range, a
    repeat, or more than two coordinates.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = list(cg_names)
    dims = []
    for item in items:
        key = item.strip() if isinstance(item, str) else item
        if isinstance(key, str) and key in names:
            dims.append(names.index(key))
        elif isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
            i = int(key)
            if not 0 <= i < len(names):
                raise ValueError(f"CG coordinate index {i} is out of range: this model has "
                                 f"{len(names)} ({', '.join(names)}), indices 0 to "
                                 f"{len(names) - 1}.")
            dims.append(i)
        else:
            raise ValueError(f"Unknown CG coordinate {key!r}. This model's are "
                             f"{', '.join(names)} (names or indices 0 to {len(names) - 1}).")
    if not 1 <= len(dims) <= 2 or len(set(dims)) != len(dims):
        raise ValueError(f"Expected one or two distinct CG coordinates to project onto; got "
                         f"{items}.")
    return tuple(dims)


def bin_index(z: np.ndarray, dims: tuple[int, ...], n_bins: int) -> np.ndarray:
    """Flat bin index [N] ('ij' order) of z's coordinates `dims` on the periodic grid."""
    flat = np.zeros(z.shape[0], dtype=np.int64)
    for i in dims:
        wrapped = np.remainder(z[:, i] + math.pi, 2 * math.pi)
        j = np.clip((wrapped / (2 * math.pi / n_bins)).astype(np.int64), 0, n_bins - 1)
        flat = flat * n_bins + j
    return flat


def weighted_mean_error(w: np.ndarray, member: np.ndarray, n_cells: int,
                        n_batches: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell mean of w 1{member == cell} over all N samples and its standard error.

    w [N] (>= 0), member [N] cell indices in [0, n_cells); independent samples
    (n_batches None) or batch means over `n_batches` contiguous batches.
    Returns (mean [n_cells], se [n_cells]).
    """
    n = w.shape[0]
    s1 = np.bincount(member, weights=w, minlength=n_cells)
    mean = s1 / n
    if n_batches is None:  # units are the samples: sum (x_k - mean)^2 over all N
        s2 = np.bincount(member, weights=w * w, minlength=n_cells)
        ss = s2 - 2 * mean * s1 + n * mean**2
        units = n
    else:
        if isinstance(n_batches, bool) or not isinstance(n_batches, int) or not \
                2 <= n_batches <= n:
            raise ValueError(f"Expected n_batches as an integer in [2, N = {n}] (or None for "
                             f"independent samples); got {n_batches!r}.")
        batch = np.arange(n) * n_batches // n
        u = np.bincount(batch * n_cells + member, weights=w,
                        minlength=n_batches * n_cells).reshape(n_batches, n_cells)
        sizes = np.bincount(batch, minlength=n_batches).astype(np.float64)
        ss = ((u - mean[None, :] * sizes[:, None]) ** 2).sum(0)
        units = n_batches
    se = np.sqrt(np.clip(ss, 0.0, None) * units / (units - 1)) / n
    return mean, se


def project_free_energy(samples: JointSamples, dims: Sequence[int | str] | str, *,
                        n_bins: int = 36, n_batches: int | None = None) -> Projection:
    """F projected onto one or two CG coordinates on an n_bins (x n_bins) periodic grid.

    Args:
        samples: joint samples and weights at one temperature (`sample_joint`).
        dims: the CG coordinates, by index or name (`resolve_dims`).
        n_bins: bins per axis over [-pi, pi) (rad).
        n_batches: None: the samples are independent; else the standard errors come from
            this many batch means (for correlated samples).

    Returns:
        A `Projection` (absolute F / k_B T per bin, standard errors, counts, per-bin ESS).
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"Expected n_bins as an integer >= 2; got {n_bins!r}.")
    dims = resolve_dims(dims, samples.cg_names)
    w, top = samples.weights()
    cells = n_bins ** len(dims)
    member = bin_index(samples.z, dims, n_bins)
    mean, se = weighted_mean_error(w, member, cells, n_batches)
    area = (2 * math.pi / n_bins) ** len(dims)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = -(np.log(mean) + top - math.log(area))
        f_err = np.where(mean > 0, se / mean, np.inf)
        s1 = np.bincount(member, weights=w, minlength=cells)
        s2 = np.bincount(member, weights=w * w, minlength=cells)
        counts = np.bincount(member, minlength=cells)
        bin_ess = np.where(counts > 0, s1**2 / s2 / np.maximum(counts, 1), np.nan)
    shape = (n_bins,) * len(dims)
    return Projection(
        dims=dims, names=tuple(samples.cg_names[i] for i in dims),
        edges=np.linspace(-math.pi, math.pi, n_bins + 1), f_kt=f.reshape(shape),
        f_kt_err=f_err.reshape(shape), counts=counts.reshape(shape),
        bin_ess=bin_ess.reshape(shape), temperature_k=samples.temperature_k,
        joint_ess=samples.ess)
