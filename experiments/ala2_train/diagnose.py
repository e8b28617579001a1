"""Which r coordinates limit the ESS of a trained (phi, psi) model.

Usage: python experiments/ala2_train/diagnose.py MODEL [--temperatures 300 600] [--samples 4096]

At each temperature: the populated 12x12 grid points (F < 4 kT, 256 samples each, as
evaluate.py), then at the worst and the median of them 4096 flow samples and the correlation
of log w with each r coordinate's features (cos / sin of circular dims; value and squared
deviation of linear dims). The largest correlations name the coordinates the flow gets wrong.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import dim_names

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    model = ccg.load_model(args.model)
    names = dim_names(model)
    circular = model.flow.circular
    centers = ccg.grid_centers(12).float()
    for temperature in args.temperatures:
        surface = ccg.free_energy_surface(model, temperature, n_grid=12, n_samples=256,
                                          generator=torch.Generator().manual_seed(0))
        ess = surface.estimates.ess.reshape(surface.shape)
        populated = torch.nonzero(surface.f_kt < 4)
        order = torch.argsort(ess[surface.f_kt < 4])
        for label, k in [("worst", order[0]), ("median", order[len(order) // 2])]:
            i, j = populated[k].tolist()
            z = torch.tensor([[centers[i], centers[j]]]).repeat(args.samples, 1)
            with torch.no_grad():
                s = model.sample(z, temperature, generator=torch.Generator().manual_seed(1))
            log_w = s.log_weights.double()
            r = s.r.double()
            feats = torch.where(circular, torch.cos(r), r)
            feats2 = torch.where(circular, torch.sin(r), (r - r.mean(0)) ** 2)
            f = torch.cat([feats, feats2], 1)
            f = (f - f.mean(0)) / (f.std(0) + 1e-12)
            corr = (f * ((log_w - log_w.mean()) / log_w.std())[:, None]).mean(0)
            top = torch.argsort(corr.abs(), descending=True)[: args.top]
            print(f"{temperature:.0f} K, {label} populated point (phi, psi) = "
                  f"({math.degrees(centers[i]):.0f}, {math.degrees(centers[j]):.0f}) deg, "
                  f"ESS(256) = {float(ess[i, j]):.3f}, sd(log w) = {float(log_w.std()):.2f}")
            for t in top.tolist():
                d, second = t % len(names), t >= len(names)
                feature = ("sin" if second else "cos") if circular[d] else (
                    "(r - mean)^2" if second else "r")
                print(f"    corr(log w, {feature} of {names[d]}) = {float(corr[t]):+.2f}")


if __name__ == "__main__":
    main()
