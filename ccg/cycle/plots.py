"""Pictures of a cycle run: per-iteration metrics and, for 2-D torsion maps, F_theta surfaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccg.free_energy.surface import cg_model_surface
from ccg.free_energy.validation import HeldOutScore, worst_chi2
from ccg.io.atomic import atomic_path


def plot_cycle(cycle, path: str | Path) -> Path:
    """Metrics per iteration (ESS, F_theta's held-out chi-square and RMS error, evaluations)
    and, for 2-D torsion maps, F_theta at each estimation temperature; one PNG, written
    atomically."""
    rows = cycle.metrics
    temps = list(cycle.config.temperatures)
    surfaces = cycle.cg_model.cg_dim == 2 and bool(cycle.cg_model.cg_map.z_circular.all())
    n_cols = max(4, len(temps) if surfaces else 0)
    from matplotlib.figure import Figure  # (here, not at the top: "import ccg" skips matplotlib)
    fig = Figure(figsize=(3.6 * n_cols, 6.6 if surfaces else 3.2), layout="constrained")
    axes = fig.subplots(2 if surfaces else 1, n_cols, squeeze=False)
    it = [r["iteration"] for r in rows]
    ax = axes[0, 0]
    for t in temps:
        ax.plot(it, [r["median_ess_by_T"][str(t)] for r in rows], marker="o", label=f"{t:g} K")
    ax.axhline(cycle.config.ess_target, color="k", lw=0.6, ls="--")
    ax.set(xlabel="iteration", ylabel="median ESS (proposed points)", ylim=(0, 1))
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    held = [[r.get("held_out", {}).get(str(t)) for r in rows] for t in temps]
    for t, scores in zip(temps, held, strict=True):
        worst = [worst_chi2(HeldOutScore(**s)) if s else np.nan for s in scores]
        if np.isfinite(worst).any():
            ax.semilogy(it, worst, marker="o", label=f"{t:g} K")
    ax.axhline(cycle.config.chi2_max, color="k", lw=0.6, ls="--")
    ax.axhline(1.0, color="k", lw=0.4, ls=":")
    ax.set(xlabel="iteration", ylabel="held-out chi2 (largest of F, forces, <U>)")
    ax = axes[0, 3]
    for t, scores in zip(temps, held, strict=True):
        ax.plot(it, [s["rms_kt"] if s else np.nan for s in scores], marker="o", label=f"{t:g} K")
    ax.set(xlabel="iteration", ylabel="held-out RMS error of F_theta (k_B T)", ylim=(0, None))
    ax = axes[0, 2]
    ax.plot(it, [r["energy_evaluations"] / 1e6 for r in rows], marker="o")
    ax.set(xlabel="iteration", ylabel="energy evaluations (M)")
    for ax in axes[0, 4:]:
        ax.axis("off")
    if surfaces:
        names = cycle.cg_model.cg_map.cg_names
        for ax, t in zip(axes[1], temps, strict=False):
            s = cg_model_surface(cycle.cg_model, t, 48)
            grid = np.degrees(s["grid"])
            f = np.minimum(s["F_kT"], 12.0)
            mesh = ax.pcolormesh(grid[0], grid[1], f.T, shading="nearest", vmin=0, vmax=12)
            ax.contour(grid[0], grid[1], f.T, levels=np.arange(1, 12), colors="w",
                       linewidths=0.4)
            ax.set(title=f"F_theta at {t:g} K", xlabel=f"{names[0]} (deg)",
                   ylabel=f"{names[1]} (deg)", aspect="equal")
        fig.colorbar(mesh, ax=list(axes[1]), label="F / k_B T", shrink=0.8)
        for ax in axes[1, len(temps):]:
            ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(path)
