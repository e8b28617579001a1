"""Does βF(z, T) of a trained (phi, psi) model drift with the number of flow samples?

Usage: python experiments/ala2_train/f_convergence.py MODEL [--temperatures 300 600]
       [--samples 256 8192] [--seed 0]

At three points on each side of phi = 0 (C5, C7eq, alpha_R; alpha_L, C7ax and a phi > 0
point at psi = 150 deg), prints βF and the ESS for each sample count. A flow that
misses part of p's mass shows as βF falling (and the ESS dropping) as samples grow; with the
log of a mean of weights the bias is ~(1/ESS - 1) / (2N), negligible at ESS ~0.5 and N = 256.
"""

from __future__ import annotations

import argparse
import math

import torch

import ccg

POINTS_DEG = [(-150.0, 150.0), (-80.0, 70.0), (-75.0, -40.0), (60.0, 30.0), (60.0, -60.0),
              (70.0, 150.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--samples", type=int, nargs="+", default=[256, 8192])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = ccg.load_model(args.model)
    z = torch.tensor([[math.radians(a), math.radians(b)] for a, b in POINTS_DEG])
    head = " | ".join(f"βF ({n}) | ESS ({n})" for n in args.samples)
    print(f"| T (K) | (φ, ψ) (deg) | {head} |")
    print("|---" * (2 + 2 * len(args.samples)) + "|")
    for temperature in args.temperatures:
        estimates = [ccg.estimate_free_energy(model, z, temperature, n_samples=n)
                     for n in args.samples]
        for i, point in enumerate(POINTS_DEG):
            cells = " | ".join(f"{e.beta_f[i]:.3f} | {e.ess[i]:.3f}" for e in estimates)
            print(f"| {temperature:.0f} | ({point[0]:.0f}, {point[1]:.0f}) | {cells} |")


if __name__ == "__main__":
    main()
