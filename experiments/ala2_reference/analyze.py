"""F(phi, psi) from the reference MD or REMD, with a convergence check by independent halves.

Usage:
    python experiments/ala2_reference/analyze.py data/md_300K.npz [--grid 36] [--out ref_300K.npz]
    python experiments/ala2_reference/analyze.py data/remd.npz [--temperatures 300 450 600]
        # REMD output of run_remd.py -> data/remd_ref_{T}K.npz for each T (must be on the ladder)

Bins (phi, psi) on the same grid as `ccg free-energy` (bin centers -pi + (i + 1/2) 2 pi / N,
'ij' indexing), F / k_B T = -log p, shifted to minimum 0 (empty bins: inf). The two halves of
the run (in time) are analyzed separately; their RMSE over bins with F < 4 kT (after the best
constant shift) is the convergence figure. Writes an npz with F_kT, F_kT_half1,
F_kT_half2, grid, counts, temperature_k, n_samples, ns, halves_rmse_kt, phi_pos_population
(and phi_pos_population_halves), and prints a summary line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ccg


def reference(phi_psi: np.ndarray, n_grid: int, temperature: float, ns: float,
              cutoff_kt: float = 4.0) -> dict[str, np.ndarray]:
    """The reference arrays of one temperature's (phi, psi) samples [n, 2] (rad), in time order."""
    phi_psi = np.asarray(phi_psi, dtype=np.float64)
    half = len(phi_psi) // 2
    f_all, counts = ccg.histogram_free_energy(phi_psi, n_grid)
    f1, _ = ccg.histogram_free_energy(phi_psi[:half], n_grid)
    f2, _ = ccg.histogram_free_energy(phi_psi[half:], n_grid)
    positive = phi_psi[:, 0] > 0
    return {
        "F_kT": f_all, "F_kT_half1": f1, "F_kT_half2": f2, "counts": counts,
        "grid": np.stack([ccg.grid_centers(n_grid).numpy()] * 2),
        "temperature_k": np.array(temperature),
        "n_samples": np.array(len(phi_psi)), "ns": np.array(ns),
        "halves_rmse_kt": np.array(ccg.rmse_after_shift(f1, f2, f_all < cutoff_kt)),
        "halves_bins": np.array(int((f_all < cutoff_kt).sum())),
        "phi_pos_population": np.array(positive.mean()),
        "phi_pos_population_halves": np.array([positive[:half].mean(), positive[half:].mean()]),
    }


def write_reference(out: str | Path, arrays: dict[str, np.ndarray], label: str) -> None:
    np.savez(out, **arrays)
    halves = arrays["phi_pos_population_halves"]
    print(f"{out}: {float(arrays['temperature_k']):.0f} K, {int(arrays['n_samples'])} samples "
          f"({label}), halves RMSE {float(arrays['halves_rmse_kt']):.3f} kT over "
          f"{int(arrays['halves_bins'])} bins with F < 4 kT, phi > 0 population "
          f"{100 * float(arrays['phi_pos_population']):.2f} % (halves {100 * halves[0]:.2f} / "
          f"{100 * halves[1]:.2f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("md", nargs="+", help="run_md.py output (one T), or run_remd.py "
                        "output(s) of the same ladder (several seeds are concatenated in the "
                        "order given; with two equal runs the 'halves' are the two seeds)")
    parser.add_argument("--grid", type=int, default=36)
    parser.add_argument("--out", help="plain MD: output npz (default ref_{T}K.npz next to it)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0],
                        help="REMD: the ladder temperatures to analyze")
    args = parser.parse_args()
    runs = [np.load(path) for path in args.md]
    data = runs[0]
    if "temperatures_k" not in data:
        if len(runs) > 1:
            raise SystemExit("plain MD: give one run_md.py output at a time")
        temperature = float(data["temperature_k"])
        arrays = reference(data["phi_psi"], args.grid, temperature, float(data["ns"]))
        out = Path(args.out or Path(args.md[0]).with_name(f"ref_{temperature:.0f}K.npz"))
        write_reference(out, arrays, f"{float(data['ns']):.0f} ns plain MD")
        return
    ladder = data["temperatures_k"]
    if any(not np.allclose(r["temperatures_k"], ladder) for r in runs):
        raise SystemExit("the REMD runs have different ladders; combine only runs of one ladder")
    n_replicas, ns = len(ladder), sum(float(r["ns"]) for r in runs)
    for temperature in args.temperatures:
        index = np.flatnonzero(np.isclose(ladder, temperature, atol=1e-6))
        if len(index) != 1:
            raise SystemExit(f"{temperature} K is not on the REMD ladder {ladder.tolist()}")
        phi_psi = np.concatenate([r["phi_psi"][index[0]] for r in runs])
        arrays = reference(phi_psi, args.grid, temperature, ns)
        arrays["acceptance"] = np.mean([r["acceptance"] for r in runs], axis=0)
        arrays["temperatures_k"] = ladder
        arrays["n_runs"] = np.array(len(runs))
        out = Path(args.md[0]).with_name(f"remd_ref_{temperature:.0f}K.npz")
        write_reference(out, arrays, f"REMD, {len(runs)} run(s), {n_replicas} replicas x "
                        f"{ns:g} ns")


if __name__ == "__main__":
    main()
