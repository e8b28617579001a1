"""What the largest importance weights of a trained (phi, psi) model are made of.

Usage: python experiments/ala2_train/weight_tails.py MODEL [--temperature 600]
       [--phi -75 --psi 135] [--samples 32768] [--top 5]

At one (z, T): the ESS of N flow samples, the largest log-weights over the median, and for
each of the top samples the r coordinates furthest from the flow's own mean (in its standard
deviations; torsions by circular distance) plus the stiff torsions turned by more than 60
degrees.
Then, for each torsion whose flow base is concentrated (the peptide omegas, the chiral CB and
HA torsions), the share of the samples more than 90 degrees from the torsion's circular mean
under q and under p (reweighted): a state q misses shows as a p share far above the q share.
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
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--phi", type=float, default=-75.0, help="degrees")
    parser.add_argument("--psi", type=float, default=135.0, help="degrees")
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    model = ccg.load_model(args.model)
    names = dim_names(model)
    circ = model.flow.circular
    z = torch.tensor([[math.radians(args.phi), math.radians(args.psi)]]).repeat(args.samples, 1)
    with torch.no_grad():
        s = model.sample(z, args.temperature, generator=torch.Generator().manual_seed(args.seed))
    log_w, r = s.log_weights.double(), s.r.double()
    w = torch.exp(log_w - log_w.max())
    ess = float(w.sum() ** 2 / (w**2).sum() / args.samples)
    median = log_w.median()
    top = torch.argsort(log_w, descending=True)[: args.top]
    print(f"{args.temperature:.0f} K, (phi, psi) = ({args.phi:.0f}, {args.psi:.0f}) deg, "
          f"{args.samples} samples: ESS {ess:.3f}")
    mean = torch.where(circ, torch.atan2(torch.sin(r).mean(0), torch.cos(r).mean(0)), r.mean(0))
    dev = torch.where(circ, torch.remainder(r - mean + math.pi, 2 * math.pi) - math.pi, r - mean)
    sd = dev.std(0)
    for k in top.tolist():
        scores = dev[k] / sd
        far = torch.argsort(scores.abs(), descending=True)[:3].tolist()
        stiff = model.flow.circular_concentration > 0  # free methyl rotors turn all the time
        rotated = torch.nonzero(stiff & (dev[k].abs() > math.radians(60))).flatten().tolist()
        turned = [f"{names[d]} {math.degrees(float(dev[k, d])):+.0f} deg" for d in rotated]
        print(f"  log w - median = {float(log_w[k] - median):5.1f}: "
              + ", ".join(f"{names[d]} {float(scores[d]):+.1f} sd" for d in far)
              + (f" | turned: {', '.join(turned)}" if turned else ""))
    print("  concentrated torsions, share > 90 deg from the mean, q / p:")
    for d in torch.nonzero(model.flow.circular_concentration > 0).flatten().tolist():
        away = dev[:, d].abs() > math.pi / 2
        print(f"    {names[d]}: {float(away.double().mean()):.4f} / "
              f"{float(w[away].sum() / w.sum()):.4f}")


if __name__ == "__main__":
    main()
