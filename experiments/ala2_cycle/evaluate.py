"""Evaluate a CG free-energy model F_theta (cg_model.pt from `ccg cycle`) against the MD reference.

For each temperature: F_theta on the 36 x 36 grid of the reference, RMSE in kT over bins with
reference F < 4 kT after the best shift, KL(reference || F_theta), and the populations of the
main basins under p ∝ exp(-F) on the grid:

    C7eq/beta   phi < 0 and (psi > 50 deg or psi < -150 deg)
    alpha_R     phi < 0 and -150 deg <= psi <= 50 deg
    phi > 0     everything with phi > 0 (C7ax, alpha_L)

With --langevin, CG Langevin samples of F_theta (`ccg.simulate`, the code behind
`ccg simulate`) are histogrammed on the same grid and compared with F_theta itself.

Usage:
    python experiments/ala2_cycle/evaluate.py runs/ala2_cycle/cg_model.pt \
        --temperatures 300 450 600 --langevin 300 --plot-prefix experiments/ala2_cycle/cmp
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import basin_populations, reference_path

import ccg


def f_theta(cg_model, temperature: float, n_grid: int) -> dict[str, np.ndarray]:
    """F_theta on the n_grid x n_grid torsion grid (the arrays of `ccg free-energy`)."""
    return ccg.cg_model_arrays(cg_model, temperature, n_grid=n_grid)


def plot_pair(ref: np.ndarray, model: np.ndarray, grid: np.ndarray, titles, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deg = np.degrees(grid)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for ax, f, title in ((axes[0], ref, titles[0]), (axes[1], model, titles[1])):
        shown = np.minimum(np.where(np.isfinite(f), f, 12.0), 12.0)
        mesh = ax.pcolormesh(deg[0], deg[1], shown.T, shading="nearest", vmin=0, vmax=12)
        ax.contour(deg[0], deg[1], shown.T, levels=np.arange(1, 12), colors="w", linewidths=0.4)
        ax.set(title=title, xlabel="phi (deg)", ylabel="psi (deg)", aspect="equal")
    fig.colorbar(mesh, ax=axes[:2], label="F / k_B T", shrink=0.9)
    diff = ccg.shifted_difference(model, ref, ref < 4)
    mesh = axes[2].pcolormesh(deg[0], deg[1], diff.T, shading="nearest", cmap="RdBu_r",
                              vmin=-1, vmax=1)
    axes[2].set(title="difference (bins F_ref < 4 kT)", xlabel="phi (deg)",
                aspect="equal")
    fig.colorbar(mesh, ax=axes[2], label="kT", shrink=0.9)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cg_model")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[300.0, 450.0, 600.0])
    parser.add_argument("--langevin", type=float, nargs="*", default=[],
                        help="temperatures at which to compare a CG Langevin histogram")
    parser.add_argument("--langevin-steps", type=int, default=20000)
    parser.add_argument("--walkers", type=int, default=64)
    parser.add_argument("--diffusion", type=float, default=2.5, help="rad^2/ps (dt 0.01 ps)")
    parser.add_argument("--start", choices=["uniform", "equilibrium"], default="uniform",
                        help="Langevin walkers start uniform on the torus, or drawn from "
                        "exp(-F_theta) on a fine grid (tests stationarity without crossings)")
    parser.add_argument("--label", default="F_theta")
    parser.add_argument("--plain", action="store_true",
                        help="compare with the plain-MD references (ref_*.npz) instead of REMD")
    parser.add_argument("--plot-prefix", help="write PREFIX_{T}K.png comparisons")
    parser.add_argument("--against", help="another cg_model.pt: also print the RMSE between "
                        "the two F_theta surfaces (bins where this one is < 4 kT)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cg_model = ccg.load_cg_model(args.cg_model)
    print(f"{args.cg_model}: fitted over {cg_model.t_range} K; metrics {cg_model.metrics}")
    rows = []
    for t in args.temperatures:
        ref = np.load(reference_path(t, args.plain))
        grid, f_ref = ref["grid"], ref["F_kT"]
        surface = f_theta(cg_model, t, f_ref.shape[0])
        f_model = surface["F_kT"]
        rmse = ccg.rmse_after_shift(f_model, f_ref, f_ref < 4.0)
        kl = ccg.kl_divergence(f_ref, f_model)
        pop_ref, pop_model = basin_populations(f_ref, grid), basin_populations(f_model, grid)
        rows.append((t, rmse, kl, pop_ref, pop_model))
        pops = ", ".join(f"{k} {100 * pop_model[k]:.1f} % (ref {100 * pop_ref[k]:.1f}, "
                         f"{100 * (pop_model[k] - pop_ref[k]):+.1f} pp)" for k in pop_ref)
        print(f"T = {t:.0f} K ({reference_path(t, args.plain).name}): RMSE {rmse:.3f} kT over "
              f"{int((f_ref < 4).sum())} bins, KL(ref || {args.label}) {kl:.4f}; {pops}")
        if args.against:
            other = f_theta(ccg.load_cg_model(args.against), t, f_ref.shape[0])["F_kT"]
            diff = ccg.rmse_after_shift(f_model, other, f_model < 4.0)
            print(f"   vs {args.against} at {t:.0f} K: RMSE {diff:.3f} kT over "
                  f"{int((f_model < 4.0).sum())} bins")
        if args.plot_prefix:
            plot_pair(f_ref, f_model, grid, (f"reference {t:.0f} K", f"{args.label} {t:.0f} K"),
                      f"{args.plot_prefix}_{t:.0f}K.png")
    for t in args.langevin:
        gen = torch.Generator().manual_seed(0)
        z0 = (torch.rand(args.walkers, 2, generator=gen, dtype=torch.float64) * 2 - 1) * np.pi
        if args.start == "equilibrium":
            fine = f_theta(cg_model, t, 180)
            p = torch.softmax(-torch.as_tensor(fine["F_kT"]).reshape(-1), 0)
            cell = torch.multinomial(p, args.walkers, replacement=True, generator=gen)
            ij = torch.stack([cell // 180, cell % 180], 1).double()
            z0 = -np.pi + (ij + torch.rand(ij.shape, generator=gen, dtype=torch.float64)) * (
                2 * np.pi / 180)
        start = time.perf_counter()
        run = ccg.simulate(cg_model, z0, t, args.langevin_steps, save_every=10, generator=gen,
                       diffusion=args.diffusion)
        wall = time.perf_counter() - start
        frames = run.frames[run.frames.shape[0] // 10:].reshape(-1, 2).numpy()  # 10 % burn-in
        surface = f_theta(cg_model, t, 36)
        f_hist, _ = ccg.histogram_free_energy(frames, 36)
        rmse = ccg.rmse_after_shift(f_hist, surface["F_kT"], surface["F_kT"] < 4.0)
        kl = ccg.kl_divergence(surface["F_kT"], np.where(np.isfinite(f_hist), f_hist, 50.0))
        pop_h = basin_populations(f_hist, surface["grid"])
        pop_f = basin_populations(surface["F_kT"], surface["grid"])
        pops = ", ".join(f"{k} {100 * pop_h[k]:.1f} % (F_theta {100 * pop_f[k]:.1f})"
                         for k in pop_h)
        print(f"CG Langevin at {t:.0f} K, {args.start} start: {frames.shape[0]} frames "
              f"({args.walkers} walkers x {args.langevin_steps} steps, {wall:.0f} s, acceptance "
              f"{run.acceptance:.2f}): histogram vs F_theta RMSE {rmse:.3f} kT over bins with "
              f"F_theta < 4 kT, KL(F_theta || histogram) {kl:.4f}; {pops}")
        if args.plot_prefix:
            plot_pair(surface["F_kT"], f_hist, surface["grid"],
                      (f"F_theta {t:.0f} K", f"CG Langevin histogram {t:.0f} K"),
                      f"{args.plot_prefix}_langevin_{args.start}_{t:.0f}K.png")


if __name__ == "__main__":
    main()
