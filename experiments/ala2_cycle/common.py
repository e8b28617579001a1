"""Shared by the scripts of this folder: where the references are, and alanine dipeptide's
basins on a (phi, psi) grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ccg

HERE = Path(__file__).resolve().parent
REF_DIR = HERE.parent / "ala2_reference" / "data"


def basins(grid: np.ndarray) -> dict[str, np.ndarray]:
    """The main basins of alanine dipeptide as masks on a (phi, psi) grid [2, N] (rad)."""
    phi, psi = np.meshgrid(np.degrees(grid[0]), np.degrees(grid[1]), indexing="ij")
    left = phi < 0
    beta = left & ((psi > 50) | (psi < -150))
    return {"C7eq/beta": beta, "alpha_R": left & ~beta, "phi>0": ~left}


def basin_populations(f_kt: np.ndarray, grid: np.ndarray) -> dict[str, float]:
    """Populations (fractions) of C7eq/beta, alpha_R and phi > 0 under p ∝ exp(-F)."""
    return ccg.state_populations(f_kt, basins(grid))


def reference_path(temperature: float, plain: bool = False) -> Path:
    """The REMD reference at T if there is one (and not `plain`), else the plain-MD one."""
    remd = REF_DIR / f"remd_ref_{temperature:.0f}K.npz"
    return remd if remd.is_file() and not plain else REF_DIR / f"ref_{temperature:.0f}K.npz"
