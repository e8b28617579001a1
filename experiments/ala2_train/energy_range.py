"""How far above the reference structure's energy a trained model's physical samples lie.

Usage: python experiments/ala2_train/energy_range.py MODEL [--temperatures 300 600]

At (phi, psi) = (-75, 150) deg, 4096 flow samples per temperature: percentiles of
beta (U - U_ref), and the 99.9th percentile of the same reweighted to p (importance weights),
to check that `[train] energy_cut` (k_BT above U_ref) leaves physical energies untouched.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    model = ccg.load_model(args.model)
    x_ref = torch.as_tensor(model.system.reference_positions, dtype=torch.float64)[None]
    with torch.no_grad():
        u_ref = float(model.system.energy(x_ref)[0])   # what [train] energy_cut is measured from
    z = torch.tensor([[math.radians(-75.0), math.radians(150.0)]]).repeat(args.samples, 1)
    for temperature in args.temperatures:
        with torch.no_grad():
            s = model.sample(z, temperature, generator=torch.Generator().manual_seed(1))
        excess = ((s.energy_kjmol - u_ref) / (ccg.KB_KJMOL_PER_K * temperature)).double().numpy()
        log_w = s.log_weights.double().numpy()
        w = np.exp(log_w - log_w.max())
        order = np.argsort(excess)
        cum = np.cumsum(w[order]) / w.sum()
        p999 = excess[order][np.searchsorted(cum, 0.999)]
        q = np.percentile(excess, [1, 50, 99, 99.9])
        print(f"{temperature:.0f} K: beta (U - U_ref) percentiles 1/50/99/99.9 of q: "
              f"{q.round(1).tolist()}, max {excess.max():.1f}; 99.9th under p: {p999:.1f}")


if __name__ == "__main__":
    main()
