"""Energy evaluations vs MD steps for the same accuracy of F(phi, psi).

For each temperature, MD sub-runs of increasing length are scored against a reference by the
RMSE (kT) over bins with F_ref < 4 kT after the best constant shift (`ccg.rmse_after_shift`),
and the MD cost needed to reach the RMSE that ccg's surface achieves against the same
reference is read off (log-log interpolation between the bracketing sub-runs; first crossing).

Two MD curves, each against a reference it shares no samples with:

- plain MD: the first 1, 2, 5, ..., 100 % of the 100 ns Langevin run (data/md_{T}K.npz),
  cost = integration steps, scored against the full REMD reference (all its samples at T);
- REMD: the first 1, 2, 5, ..., 100 % of the FIRST half of the REMD run, cost = integration
  steps of ALL replicas, scored against the SECOND half of the REMD run at T (a sub-run of the
  full REMD run would share its samples with the full reference, and its RMSE would fall to 0
  at 100 % by construction). ccg's target RMSE for this curve is its RMSE against that same
  second-half reference.

Bins the sub-run never visited (inside the F_ref < 4 kT mask) get the free energy of half a
count, so a sub-run that misses a basin is penalized instead of silently skipping those bins;
their number is printed. Costs count production steps only (equilibration: 0.1 M steps for
plain MD, 8 x 0.1 M for REMD, not included). ccg's cost: training steps x batch (energy + force
evaluations, shared by all temperatures: one temperature-conditioned model) plus the
surface's grid points x samples per temperature.

The RMSE of any estimate against a finite reference includes the reference's own error (about
half its halves RMSE for the full reference, about halves RMSE / sqrt(2) for one half); that
floor is drawn in the plot.

Usage:
    python experiments/ala2_reference/md_cost.py [--temperatures 300 600] [--remd data/remd.npz]
        [--fes runs/fes_{T}.npz] [--plot experiments/ala2_reference/md_cost.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ccg

HERE = Path(__file__).resolve().parent
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CCG_TRAIN_STEPS, CCG_BATCH = 3387, 1024
CCG_GRID, CCG_SAMPLES = 36, 256


def ccg_cost() -> tuple[int, int]:
    """(training energy evaluations, one surface's energy evaluations)."""
    return CCG_TRAIN_STEPS * CCG_BATCH, CCG_GRID * CCG_GRID * CCG_SAMPLES


def score(phi_psi: np.ndarray, f_ref: np.ndarray, cutoff_kt: float) -> dict[str, float]:
    """RMSE (unvisited bins at half a count; and over visited bins only), KL(ref || sub-run),
    unvisited masked bins and phi > 0 population of a sub-run."""
    f_sub, counts = ccg.histogram_free_energy(phi_psi, f_ref.shape[0], pseudo_count=0.5)
    mask = f_ref < cutoff_kt
    return {
        "rmse": ccg.rmse_after_shift(f_sub, f_ref, mask),
        "rmse_visited": ccg.rmse_after_shift(f_sub, f_ref, mask & (counts > 0)),
        "kl": ccg.kl_divergence(f_ref, f_sub),
        "missing": int((mask & (counts == 0)).sum()),
        "phi_pos": float((phi_psi[:, 0] > 0).mean()),
    }


def steps_to_reach(costs: np.ndarray, rmses: np.ndarray, target: float) -> float | None:
    """Cost at which the curve first drops to `target` (log-log interpolation), None if never."""
    below = np.flatnonzero(rmses <= target)
    if len(below) == 0:
        return None
    k = below[0]
    if k == 0:
        return float(costs[0])   # already reached at the shortest sub-run: an upper bound
    x0, x1 = np.log(costs[k - 1]), np.log(costs[k])
    y0, y1 = np.log(rmses[k - 1]), np.log(rmses[k])
    return float(np.exp(x0 + (np.log(target) - y0) * (x1 - x0) / (y1 - y0)))


def extrapolated_steps(steps_full: float, rmse_full: float, target: float) -> float | None:
    """REMD half vs half: steps where the RMSE would reach `target`, if both halves carry equal
    noise (each rmse_full^2 / 2) and the sub-run's own variance falls like 1 / steps."""
    own, ref = rmse_full**2 / 2, rmse_full**2 / 2
    if target**2 <= ref:
        return None
    return steps_full * own / (target**2 - ref)


def curve(phi_psi: np.ndarray, steps_per_sample: int, f_ref: np.ndarray,
          cutoff_kt: float) -> list[dict[str, float]]:
    rows = []
    for fraction in FRACTIONS:
        n = max(2, round(fraction * len(phi_psi)))
        rows.append({"fraction": fraction, "samples": n, "steps": n * steps_per_sample,
                     **score(phi_psi[:n], f_ref, cutoff_kt)})
    return rows


def fmt_steps(steps: float | None, limit: float) -> str:
    if steps is None:
        return f"> {limit / 1e6:,.0f} M (not reached)"
    return f"{steps / 1e6:,.1f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--remd", nargs="+", default=[str(HERE / "data" / "remd.npz")],
                        help="REMD run(s) of one ladder; with two or more, the REMD curve is "
                        "sub-runs of the first scored against the others (independent seeds), "
                        "with one, the first half against the second half")
    parser.add_argument("--ccg-evaluations", type=float,
                        help="ccg's total energy evaluations (default: the 20-minute flow's "
                        "training plus one 36 x 36 x 256 surface)")
    parser.add_argument("--md", default=str(HERE / "data" / "md_{T}K.npz"))
    parser.add_argument("--fes", default=str(HERE.parent.parent / "runs" / "fes_{T}.npz"),
                        help="ccg surfaces ({T} is replaced by the temperature)")
    parser.add_argument("--cutoff-kt", type=float, default=4.0)
    parser.add_argument("--plot", default=str(HERE / "md_cost.png"))
    args = parser.parse_args()

    runs = [np.load(path) for path in args.remd]
    remd = runs[0]
    ladder = remd["temperatures_k"]
    remd_steps = int(remd["replica_steps_per_sample"])
    split = "1st half vs 2nd half" if len(runs) == 1 else "seed 1 vs the other seed(s)"
    other = "2nd half" if len(runs) == 1 else "other seed(s)"
    train_cost, surface_cost = ccg_cost()
    ccg_total = train_cost + surface_cost
    if args.ccg_evaluations:
        ccg_total = int(args.ccg_evaluations)
        print(f"ccg cost: {ccg_total:,} energy evaluations (given)")
    else:
        print(f"ccg cost: {train_cost:,} (training, {CCG_TRAIN_STEPS} steps x {CCG_BATCH}) + "
              f"{surface_cost:,} (surface, {CCG_GRID}^2 x {CCG_SAMPLES}) = {ccg_total:,} energy "
              "evaluations")
    results = {}
    for temperature in args.temperatures:
        tag = f"{temperature:.0f}"
        index = int(np.flatnonzero(np.isclose(ladder, temperature))[0])
        parts = [r["phi_psi"][index].astype(np.float64) for r in runs]
        remd_pp = np.concatenate(parts)
        if len(parts) == 1:
            half = len(remd_pp) // 2
            first, second = remd_pp[:half], remd_pp[half:]
        else:
            first, second = parts[0], np.concatenate(parts[1:])
        f_full, _ = ccg.histogram_free_energy(remd_pp, CCG_GRID)
        f_half1, _ = ccg.histogram_free_energy(first, CCG_GRID)
        f_half2, _ = ccg.histogram_free_energy(second, CCG_GRID)
        halves_rmse = ccg.rmse_after_shift(f_half1, f_half2, f_full < args.cutoff_kt)
        md = np.load(args.md.replace("{T}", tag))
        md_steps = round(float(md["dt_ps"]) * 1000)   # 1 fs steps per (phi, psi) sample
        f_ccg = np.load(args.fes.replace("{T}", tag))["F_kT"]
        target_full = ccg.rmse_after_shift(f_ccg, f_full, f_full < args.cutoff_kt)
        target_half2 = ccg.rmse_after_shift(f_ccg, f_half2, f_half2 < args.cutoff_kt)
        kl_full, kl_half2 = ccg.kl_divergence(f_full, f_ccg), ccg.kl_divergence(f_half2, f_ccg)
        plain = curve(md["phi_psi"].astype(np.float64), md_steps, f_full, args.cutoff_kt)
        rex = curve(first, remd_steps, f_half2, args.cutoff_kt)
        results[temperature] = (plain, rex, (target_full, target_half2), (kl_full, kl_half2),
                                halves_rmse)

        print(f"\n=== {tag} K (mask: F_ref < {args.cutoff_kt} kT; full REMD reference "
              f"{int((f_full < args.cutoff_kt).sum())} bins, REMD {other} "
              f"{int((f_half2 < args.cutoff_kt).sum())} bins; REMD halves RMSE "
              f"{halves_rmse:.3f} kT) ===")
        print(f"ccg vs full REMD ref: RMSE {target_full:.3f} kT, KL {kl_full:.4f}; "
              f"vs REMD {other}: RMSE {target_half2:.3f} kT, KL {kl_half2:.4f}")
        print("| run | fraction | ns (per replica) | MD steps | RMSE (kT) | RMSE, visited bins "
              "only | KL(ref ‖ run) | unvisited bins | phi > 0 |")
        print("|" + "---|" * 9)
        for name, rows, per_ns in (("plain MD vs full REMD", plain, 1e6),
                                   (f"REMD {split}", rex, 1e6 * len(ladder))):
            for row in rows:
                print(f"| {name} | {100 * row['fraction']:g} % | {row['steps'] / per_ns:.2f} | "
                      f"{row['steps'] / 1e6:,.1f} M | {row['rmse']:.3f} | "
                      f"{row['rmse_visited']:.3f} | {row['kl']:.4f} | {row['missing']} | "
                      f"{100 * row['phi_pos']:.2f} % |")
        for name, rows, target, kl_target in (("plain MD", plain, target_full, kl_full),
                                              ("REMD", rex, target_half2, kl_half2)):
            costs = np.array([r["steps"] for r in rows], float)
            for metric, value, unit in (("rmse", target, " kT"), ("kl", kl_target, "")):
                need = steps_to_reach(costs, np.array([r[metric] for r in rows]), value)
                ratio = ("" if need is None else
                         f" = {need / ccg_total:.1f} x ccg's {ccg_total / 1e6:.2f} M")
                if need is not None and need == costs[0]:
                    ratio += " (reached at the shortest sub-run: an upper bound)"
                if need is None and name == "REMD" and metric == "rmse":
                    more = extrapolated_steps(costs[-1], rows[-1]["rmse"], value)
                    ratio += (", extrapolated: never (below the reference noise)" if more is None
                              else f", extrapolated (1/steps): {more / 1e6:,.0f} M = "
                              f"{more / ccg_total:.0f} x ccg")
                print(f"{name}: steps to reach ccg's {metric.upper()} {value:.4g}{unit}: "
                      f"{fmt_steps(need, costs[-1])}{ratio}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        temps = list(results)
        fig, axes = plt.subplots(2, len(temps), figsize=(5.2 * len(temps), 8.0), squeeze=False)
        for column, temperature in enumerate(temps):
            plain, rex, rmse_targets, kl_targets, halves_rmse = results[temperature]
            for row_index, (metric, targets) in enumerate((("rmse", rmse_targets),
                                                           ("kl", kl_targets))):
                ax = axes[row_index][column]
                for rows, label, color in ((plain, "plain MD vs full REMD ref", "C0"),
                                           (rex, f"REMD (all replicas' steps), {split}",
                                            "C1")):
                    ax.plot([r["steps"] for r in rows], [r[metric] for r in rows], "o-",
                            color=color, label=label)
                ax.plot([ccg_total], [targets[0]], "*", ms=14, color="C0", mec="k",
                        label="ccg vs full REMD ref")
                ax.plot([ccg_total], [targets[1]], "*", ms=14, color="C1", mec="k",
                        label=f"ccg vs REMD {other}")
                if metric == "rmse":
                    ax.axhline(halves_rmse / 2, color="0.5", ls=":", lw=1,
                               label="full-ref noise ≈ halves RMSE / 2")
                    ax.axhline(halves_rmse / np.sqrt(2), color="0.5", ls="--", lw=1,
                               label="half-ref noise ≈ halves RMSE / √2")
                    ax.set_ylabel(f"RMSE vs reference (kT, F_ref < {args.cutoff_kt:g} kT)")
                else:
                    ax.set_ylabel("KL(reference ‖ estimate) on the grid")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel("MD steps (integration steps x replicas) / energy evaluations")
                ax.set_title(f"{temperature:.0f} K")
                ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
