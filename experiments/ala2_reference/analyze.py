"""F(phi, psi) from the reference MD, with a convergence check by independent halves.

Usage:
    python experiments/ala2_reference/analyze.py data/md_300K.npz [--grid 36] [--out ref_300K.npz]

Bins (phi, psi) on the same grid as `ccg free-energy` (bin centers -pi + (i + 1/2) 2 pi / N,
'ij' indexing), F / k_BT = -log p, shifted to minimum 0 (empty bins: inf). The two halves of
the run are analyzed separately; their RMSE over bins with F < 4 kT (after the best constant
shift) is the convergence figure. Writes an npz with F_kT, F_kT_half1, F_kT_half2, grid,
counts, temperature_k, and prints a summary line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from compare import rmse_after_shift


def grid_centers(n: int) -> np.ndarray:
    return -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n


def free_energy_kt(phi_psi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(F / kT [n, n] shifted to min 0 with inf for empty bins, counts [n, n])."""
    edges = np.linspace(-np.pi, np.pi, n + 1)
    counts, _, _ = np.histogram2d(phi_psi[:, 0], phi_psi[:, 1], bins=[edges, edges])
    with np.errstate(divide="ignore"):
        f = -np.log(counts / counts.sum())
    return f - f[np.isfinite(f)].min(), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("md")
    parser.add_argument("--grid", type=int, default=36)
    parser.add_argument("--out")
    args = parser.parse_args()
    data = np.load(args.md)
    phi_psi = data["phi_psi"].astype(np.float64)
    temperature = float(data["temperature_k"])
    half = len(phi_psi) // 2
    f_all, counts = free_energy_kt(phi_psi, args.grid)
    f1, _ = free_energy_kt(phi_psi[:half], args.grid)
    f2, _ = free_energy_kt(phi_psi[half:], args.grid)
    rmse = rmse_after_shift(f1, f2, mask=f_all < 4.0)
    out = Path(args.out or Path(args.md).with_name(f"ref_{temperature:.0f}K.npz"))
    np.savez(out, F_kT=f_all, F_kT_half1=f1, F_kT_half2=f2, counts=counts,
             grid=np.stack([grid_centers(args.grid)] * 2), temperature_k=temperature)
    print(f"{out}: {temperature:.0f} K, {len(phi_psi)} samples ({float(data['ns']):.0f} ns), "
          f"halves RMSE {rmse:.3f} kT over {int((f_all < 4.0).sum())} bins with F < 4 kT, "
          f"phi > 0 population {100 * (phi_psi[:, 0] > 0).mean():.2f} %")


if __name__ == "__main__":
    main()
