"""Do the model's own higher temperatures make a better joint proposal at a low one?

Usage: python experiments/peptide_reference/tempered_proposal.py MODEL [--target 300]
       [--components 300 360 420] [--samples 32768] [--sharpness 0.5] [--seed 1] [--threads 1]

A temperature-conditioned model offers, at every T' of its range, a joint density
rho(z | T') q(r | z, T') that is broader than the one at the target T. Drawn from T' and
weighted to exp(-U / k_B T) at the target, or drawn from the equal mixture over several T'
and weighted by the mixture's density (defensive importance sampling: each weight is at most
K times the one its own component gives), the heavy tail of the plain estimate should shrink
if the flow at T is too narrow where p has mass. For each component: a pilot proposal at its
own T' (`ccg.pilot_proposal`), `--samples` joint samples, then the ESS (effective samples)
and Pareto k of the weights at the target, alone and as the mixture.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import ccg


def ess(log_w: np.ndarray) -> float:
    """Normalized ESS (sum w)^2 / (N sum w^2) of log-weights (-inf: weight 0)."""
    a = log_w[np.isfinite(log_w)]
    if a.size == 0:
        return 0.0
    return float(np.exp(2 * np.logaddexp.reduce(a) - np.logaddexp.reduce(2 * a)) / log_w.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model.pt with a torsion CG map")
    parser.add_argument("--target", type=float, default=300.0, help="K (default: 300)")
    parser.add_argument("--components", type=float, nargs="+", default=[300.0, 360.0, 420.0],
                        help="the proposal temperatures T' in K (default: 300 360 420)")
    parser.add_argument("--samples", type=int, default=32768,
                        help="joint samples per component (default: 32768)")
    parser.add_argument("--sharpness", type=float, default=0.5,
                        help="the pilots' sharpness (ccg.pilot_proposal; default: 0.5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ccg.load_model(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    pilots = [ccg.pilot_proposal(model, t, sharpness=args.sharpness, generator=generator)
              for t in args.components]
    beta = 1.0 / (ccg.KB_KJMOL_PER_K * args.target)
    bases, densities = [], []
    for t, pilot in zip(args.components, pilots, strict=True):
        temps = torch.full((args.samples,), t, dtype=torch.float64)
        z = pilot.sample(args.samples, generator, torch.float64, "cpu", temperature_k=temps)
        with torch.no_grad():
            s = model.sample(z, t, generator=generator)
            rows = []  # log rho_k(z | T_k) + log q(r | z, T_k) under every component k
            for tk, pk in zip(args.components, pilots, strict=True):
                zk, tt = model.prepare(z, tk)
                log_q = model.flow.log_prob(s.r, model.context(zk, tt)).double()
                rows.append(log_q + pk.log_prob(z, torch.full_like(temps, tk)).double())
        base = -beta * s.energy_kjmol.double() + s.log_jac.double()
        bases.append(torch.where(s.finite, base, torch.full_like(base, -math.inf)))
        densities.append(torch.stack(rows, 1))
    print(f"model {args.model}, target {args.target:g} K, {args.samples} joint samples per "
          f"component")
    print("| proposal | samples | ESS | effective samples | Pareto k |")
    print("|---|---|---|---|---|")
    for k, t in enumerate(args.components):
        log_w = (bases[k] - densities[k][:, k]).numpy()
        print(f"| T' = {t:g} K alone | {log_w.size} | {ess(log_w):.3g} | "
              f"{ess(log_w) * log_w.size:.0f} | {ccg.pareto_k(log_w):.2f} |")
    mixture = torch.logsumexp(torch.cat(densities), 1) - math.log(len(args.components))
    log_w = (torch.cat(bases) - mixture).numpy()
    print(f"| equal mixture of {', '.join(f'{t:g}' for t in args.components)} K | {log_w.size} "
          f"| {ess(log_w):.3g} | {ess(log_w) * log_w.size:.0f} | {ccg.pareto_k(log_w):.2f} |")


if __name__ == "__main__":
    main()
