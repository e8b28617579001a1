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

from ccg.io.atomic import atomic_path


def rmse_after_shift(f_a: np.ndarray, f_b: np.ndarray, mask: np.ndarray) -> float:
    """RMSE of f_a - f_b over `mask` (and finite entries) after the best constant shift."""
    sel = mask & np.isfinite(f_a) & np.isfinite(f_b)
    diff = f_a[sel] - f_b[sel]
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))


def kl_divergence(f_ref: np.ndarray, f_model: np.ndarray) -> float:
    """KL(p_ref || p_model) of p ∝ exp(-F) on the grid (bins empty in the reference skipped)."""
    p = np.exp(-np.where(np.isfinite(f_ref), f_ref, np.inf))
    q = np.exp(-(f_model - np.nanmin(f_model)))
    p, q = p / p.sum(), q / q.sum()
    sel = p > 0
    return float(np.sum(p[sel] * np.log(p[sel] / q[sel])))


def phi_positive_population(f: np.ndarray, grid: np.ndarray) -> float:
    """Probability of phi > 0 under p ∝ exp(-F) on the grid (axis 0 is phi; empty bins: 0)."""
    p = np.exp(-np.where(np.isfinite(f), f - np.nanmin(np.where(np.isfinite(f), f, np.nan)),
                         np.inf))
    return float(p[grid[0] > 0].sum() / p.sum())


def offsets_by_phi_sign(f_a: np.ndarray, f_b: np.ndarray, mask: np.ndarray,
                        grid: np.ndarray) -> dict[str, tuple[float, int]]:
    """Mean of f_a - f_b (after the best constant shift over `mask`) on the phi < 0 and
    phi > 0 bins of `mask`, with their counts: where one side's free energy is off."""
    sel = mask & np.isfinite(f_a) & np.isfinite(f_b)
    diff = f_a - f_b - (f_a[sel] - f_b[sel]).mean()
    positive = np.broadcast_to(grid[0][:, None] > 0, f_a.shape)
    return {name: (float(diff[sel & side].mean()), int((sel & side).sum()))
            for name, side in (("phi < 0", ~positive), ("phi > 0", positive))}


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
    rmse = rmse_after_shift(f_model, f_ref, f_ref < args.cutoff_kt)
    kl = kl_divergence(f_ref, f_model)
    print(f"T = {float(ref['temperature_k']):.0f} K: RMSE {rmse:.3f} kT over "
          f"{int((f_ref < args.cutoff_kt).sum())} bins (F_ref < {args.cutoff_kt} kT), "
          f"KL(ref || {args.model_label}) {kl:.4f}, phi > 0 population ref "
          f"{100 * phi_positive_population(f_ref, ref['grid']):.2f} %, {args.model_label} "
          f"{100 * phi_positive_population(f_model, ref['grid']):.2f} %")
    sides = offsets_by_phi_sign(f_model, f_ref, f_ref < args.cutoff_kt, ref["grid"])
    print("  mean F offset after the shift: " + ", ".join(
        f"{name} {offset:+.3f} kT ({count} bins)" for name, (offset, count) in sides.items()))
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
        with atomic_path(args.plot) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
