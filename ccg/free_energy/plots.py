"""Pictures of free energies: Ramachandran-style surfaces and profiles, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccg.io.atomic import atomic_path


def plot_free_energy(payload: dict, path: str | Path, *, names=None, vmax_kt: float = 12.0
                     ) -> Path:
    """Ramachandran-style surface (2-D) or profile (1-D) of F in kT, written atomically."""
    f = payload["F_kT"]
    if "grid" not in payload or f.ndim not in (1, 2):
        raise ValueError("Plots need a 1-D or 2-D torsion grid (not --frames).")
    grid = np.degrees(payload["grid"])
    names = list(names or ["z1", "z2"])
    from matplotlib.figure import Figure  # (here, not at the top: "import ccg" skips matplotlib)
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


def _arc_pieces(lo: float, hi: float) -> list[tuple[float, float]]:
    """An arc (rad, lo > hi wraps through pi) as intervals within [-180, 180] degrees."""
    a, b = (float(np.degrees(np.remainder(v + np.pi, 2 * np.pi) - np.pi)) for v in (lo, hi))
    if a == b:
        return [(-180.0, 180.0)]
    return [(a, b)] if a < b else [(a, 180.0), (-180.0, b)]


def plot_projections(projections: list, path: str | Path, *, vmax_kt: float = 8.0,
                     groups: list | None = None, ncols: int = 3) -> Path:
    """Panels of projected free energies (`ccg.free_energy.projections.Projection`), in kT
    with minimum 0: Ramachandran-style maps for pairs, profiles with error bars for single
    coordinates. With `groups` (StateGroups), the regions of a group whose two coordinates are
    a panel's are outlined and labelled. Written atomically; returns the path."""
    if not projections:
        raise ValueError("Expected at least one projection to plot.")
    n = len(projections)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    from matplotlib.figure import Figure  # (here, not at the top: "import ccg" skips matplotlib)
    from matplotlib.patches import Rectangle
    fig = Figure(figsize=(4.0 * ncols + 1.0, 3.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    mesh = None
    for ax, proj in zip(axes, projections, strict=False):
        f = np.minimum(proj.shifted, vmax_kt)
        centers = np.degrees(proj.centers)
        if f.ndim == 1:
            ax.errorbar(centers, proj.shifted, yerr=proj.f_kt_err, marker="o", ms=2)
            ax.set_ylabel("F / k_B T")
        else:
            mesh = ax.pcolormesh(centers, centers, f.T, shading="nearest", cmap="viridis",
                                 vmin=0, vmax=vmax_kt)
            ax.set_ylabel(f"{proj.names[1]} (deg)")
            ax.set_aspect("equal")
            for group in groups or []:
                for label, regions in group.labels.items():
                    for region in regions:
                        arcs = {i: (lo, hi) for i, lo, hi in region.arcs}
                        if set(arcs) != set(proj.dims):
                            continue
                        for x0, x1 in _arc_pieces(*arcs[proj.dims[0]]):
                            for y0, y1 in _arc_pieces(*arcs[proj.dims[1]]):
                                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                                       ec="w", lw=0.7, ls="--"))
                                ax.text(x0 + 4, y1 - 4, label, color="w", fontsize=7,
                                        va="top")
        ax.set_xlabel(f"{proj.names[0]} (deg)")
        ax.set_title(f"{' / '.join(proj.names)}, {proj.temperature_k:.0f} K", fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes[:n]), label="F / k_B T", shrink=0.8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return Path(path)
