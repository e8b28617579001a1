"""How much of the grid ESS the cis peptide states cost: per populated point, ESS with and
without the samples that have a stiff torsion (peptide ω, chiral CB/HA) turned > 90 degrees.

Usage: python experiments/ala2_train/cis_in_grid.py MODEL [--temperatures 300 600]

The same 12 x 12 grid, 256 samples per point and populated set (F < 4 kT) as evaluate.py;
the samples are drawn afresh per point (seed 100 + 12 i + j).
"""

from __future__ import annotations

import argparse
import math

import torch

import ccg


def _ess(log_w: torch.Tensor) -> float:
    w = torch.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w**2).sum() / len(log_w))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    model = ccg.load_model(args.model)
    stiff = model.flow.circular_concentration > 0
    grid = ccg.grid_centers(12).float()
    for temperature in args.temperatures:
        surface = ccg.free_energy_surface(model, temperature, n_grid=12, n_samples=args.samples,
                                          generator=torch.Generator().manual_seed(0))
        points = torch.nonzero(surface.f_kt < 4.0).tolist()
        full, trans, n_cis = [], [], []
        for i, j in points:
            z = torch.stack([grid[i], grid[j]]).repeat(args.samples, 1)
            gen = torch.Generator().manual_seed(100 + 12 * i + j)
            with torch.no_grad():
                s = model.sample(z, temperature, generator=gen)
            turned = torch.remainder(s.r.double() - model.flow.loc.double() + math.pi,
                                     2 * math.pi) - math.pi
            cis = ((turned.abs() > math.pi / 2) & stiff).any(1)
            log_w = s.log_weights.double()
            full.append(_ess(log_w))
            trans.append(_ess(log_w[~cis]))
            n_cis.append(int(cis.sum()))
        print(f"{temperature:.0f} K, {len(points)} populated points: median ESS "
              f"{float(torch.tensor(full).median()):.3f} with every sample, "
              f"{float(torch.tensor(trans).median()):.3f} without the turned ones; "
              f"{sum(n_cis)} of {args.samples * len(points)} samples turned, at "
              f"{sum(n > 0 for n in n_cis)} points")


if __name__ == "__main__":
    main()
