"""Pictures of free energies: Ramachandran-style surfaces and profiles, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ccg.io.atomic import atomic_path


def plot_free_energy(payload: dict, path: str | Path, *, names=None, vmax_kt: float = 12.0
                     ) -> Path:
    """Ramachandran-style surface (2-D) or profile (1-D) of F in kT, written atomically."""
    f = payload["F_kT"]
    if "grid" not in payload or f.ndim not in (1, 2):
        raise ValueError("Plots need a 1-D or 2-D torsion grid (not --frames).")
    grid = np.degrees(payload["grid"])
    names = list(names or ["z1", "z2"])
    fig = Figure(figsize=(5.4, 4.4))
    ax = fig.subplots()
    title = f"F(z) at {float(payload['temperature_k']):.0f} K"
    if f.ndim == 1:
        ax.errorbar(grid[0], f, yerr=payload["F_kT_err"], marker="o", ms=3)
        ax.set_xlabel(f"{names[0]} (deg)")
        ax.set_ylabel("F / k_B T")
    else:
        clipped = np.minimum(f, vmax_kt)
        mesh = ax.pcolormesh(grid[0], grid[1], clipped.T, shading="nearest", cmap="viridis",
                             vmin=0, vmax=vmax_kt)
        ax.contour(grid[0], grid[1], clipped.T, levels=np.arange(1, vmax_kt, 1), colors="w",
                   linewidths=0.4)
        fig.colorbar(mesh, ax=ax, label="F / k_B T")
        ax.set_xlabel(f"{names[0]} (deg)")
        ax.set_ylabel(f"{names[1]} (deg)")
        ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return Path(path)
