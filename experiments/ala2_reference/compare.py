"""Compare a `ccg free-energy` surface with the MD reference.

Usage:
    python experiments/ala2_reference/compare.py fes.npz data/remd_ref_300K.npz \
        [--plot cmp_remd_300K.png] [--ref-label "REMD reference"] [--model-label ccg]

Both on the same (phi, psi) grid. Reports the RMSE in kT over bins with reference F < 4 kT
after the best constant shift, KL(reference || ccg) of the normalized grid distributions
p ∝ exp(-F), and the phi > 0 population of both grid distributions. Any two files with F_kT,
grid and temperature_k work (e.g. a plain-MD ref_*.npz against a REMD remd_ref_*.npz).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ccg


def phi_positive_population(f: np.ndarray, grid: np.ndarray) -> float:
    """Probability of phi > 0 under p ∝ exp(-F) on a (phi, psi) grid (axis 0 is phi)."""
    return ccg.state_populations(f, {"phi > 0": phi_positive(f, grid)})["phi > 0"]


def phi_positive(f: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bool mask of the grid's phi > 0 bins, shaped like f."""
    return np.broadcast_to(grid[0][:, None] > 0, f.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fes")
    parser.add_argument("reference")
    parser.add_argument("--cutoff-kt", type=float, default=4.0)
    parser.add_argument("--plot")
    parser.add_argument("--ref-label", default="MD reference")
    parser.add_argument("--model-label", default="ccg")
    args = parser.parse_args()
    for path in (args.fes, args.reference):
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such file (expected an npz from `ccg free-energy` "
                             "or from experiments/ala2_reference/analyze.py)")
    model, ref = np.load(args.fes), np.load(args.reference)
    if model["F_kT"].shape != ref["F_kT"].shape:
        raise SystemExit(f"grid mismatch: {model['F_kT'].shape} vs {ref['F_kT'].shape}; use "
                         "the same --grid for both")
    if float(model["temperature_k"]) != float(ref["temperature_k"]):
        raise SystemExit("temperature mismatch between the two files")
    f_model, f_ref = model["F_kT"], ref["F_kT"]
    rmse = ccg.rmse_after_shift(f_model, f_ref, f_ref < args.cutoff_kt)
    kl = ccg.kl_divergence(f_ref, f_model)
    print(f"T = {float(ref['temperature_k']):.0f} K: RMSE {rmse:.3f} kT over "
          f"{int((f_ref < args.cutoff_kt).sum())} bins (F_ref < {args.cutoff_kt} kT), "
          f"KL(ref || {args.model_label}) {kl:.4f}, phi > 0 population ref "
          f"{100 * phi_positive_population(f_ref, ref['grid']):.2f} %, {args.model_label} "
          f"{100 * phi_positive_population(f_model, ref['grid']):.2f} %")
    diff = ccg.shifted_difference(f_model, f_ref, f_ref < args.cutoff_kt)
    positive = phi_positive(f_ref, ref["grid"])
    sides = {"phi < 0": diff[~positive], "phi > 0": diff[positive]}
    print("  mean F offset after the shift: " + ", ".join(
        f"{name} {np.nanmean(d):+.3f} kT ({int(np.isfinite(d).sum())} bins)"
        for name, d in sides.items()))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = np.degrees(ref["grid"])
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
        for ax, f, title in ((axes[0], f_ref, args.ref_label),
                             (axes[1], f_model, args.model_label)):
            shown = np.minimum(np.where(np.isfinite(f), f, 12.0), 12.0)
            mesh = ax.pcolormesh(grid[0], grid[1], shown.T, shading="nearest", vmin=0, vmax=12)
            ax.contour(grid[0], grid[1], shown.T, levels=np.arange(1, 12), colors="w",
                       linewidths=0.4)
            ax.set_title(f"{title}, {float(ref['temperature_k']):.0f} K")
            ax.set_xlabel("phi (deg)")
        axes[0].set_ylabel("psi (deg)")
        fig.colorbar(mesh, ax=axes, label="F / k_B T")
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
