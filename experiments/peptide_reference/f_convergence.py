"""Is a peptide model's βF(z, T) converged in the flow samples at its main states?

Usage: python experiments/peptide_reference/f_convergence.py MODEL [--states AAAAA BBBBB]
       [--temperature 300] [--samples 64 1024 16384] [--seed 0] [--threads 1]
       [--parts-r 8 32 128] [--ais-steps 32 128 --ais-samples 512]

For a (φ, ψ) model of any peptide, puts every residue at the centre of a Ramachandran region
(A: α_R (−65°, −40°), B: β (−120°, 130°), P: PPII (−70°, 145°), L: α_L (60°, 40°); a state
names one letter per residue, or one letter for all of them) and prints βF and the ESS of the
importance weights for each number of flow samples. βF = −log mean w, so a flow that misses
part of p(r | z)'s mass shows as βF falling (and the ESS dropping) as samples grow; where it
falls by several k_BT the model's free energies and populations at such z are biased high by
at least that much, whatever the z proposal.

`--parts-r R ...` adds `ccg.joint_ess_parts` (1,024 z from a pilot proposal at sharpness 0.5,
R flow samples at each) for each R: a mean per-z ESS that keeps falling as R grows says the
ESS read off few samples per z (as training reports it) is biased high.

`--ais-steps K ...` estimates βF at the same z from `--ais-samples` samples each carried through
K annealed MALA stages toward p(r | z) (`ccg.ais_sample`): the weights stay unbiased for any K,
so βF falling with K (at a fixed number of samples) measures how much mass the flow misses
there, and how far it is from converged.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import state_centres

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model.pt with a backbone torsion map")
    parser.add_argument("--states", nargs="+", default=["A", "B", "P"],
                        help="one letter per residue, or one for all (default: A B P)")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 1024, 16384])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts-r", type=int, nargs="*", default=[],
                        help="also joint_ess_parts at these r per z (e.g. 8 32 128)")
    parser.add_argument("--ais-steps", type=int, nargs="*", default=[],
                        help="also βF from AIS samples with these numbers of stages")
    parser.add_argument("--ais-samples", type=int, default=512,
                        help="samples per state for --ais-steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ccg.load_model(args.model)
    rows = state_centres(model, args.states)
    z = torch.stack([row[1] for row in rows])
    generator = torch.Generator().manual_seed(args.seed)
    estimates = [ccg.estimate_free_energy(model, z, args.temperature, n_samples=n,
                                          generator=generator) for n in args.samples]
    head = " | ".join(f"βF ({n}) | ESS ({n})" for n in args.samples)
    print(f"| T (K) | state | {head} |")
    print("|---" * (2 + 2 * len(args.samples)) + "|")
    for k, (letters, _) in enumerate(rows):
        cells = " | ".join(f"{e.beta_f[k]:.2f} | {e.ess[k]:.3f}" for e in estimates)
        print(f"| {args.temperature:.0f} | {letters} | {cells} |")
    if args.ais_steps:
        print()
        head = " | ".join(f"βF (K = {k}) | ESS (K = {k})" for k in args.ais_steps)
        print(f"| T (K) | state | {head} |   ({args.ais_samples} AIS samples per cell)")
        print("|---" * (2 + 2 * len(args.ais_steps)) + "|")
        cells = {letters: [] for letters, _ in rows}
        for k in args.ais_steps:
            for letters, zk in rows:
                out = ccg.ais_sample(model, zk[None].expand(args.ais_samples, -1),
                                     args.temperature, n_steps=k, generator=generator)
                log_w = out.log_w.double()
                beta_f = -(torch.logsumexp(log_w, 0) - math.log(log_w.numel()))
                w = torch.exp(log_w - log_w.max())
                ess = float(w.sum() ** 2 / (w * w).sum() / w.numel())
                cells[letters].append(f"{beta_f:.2f} | {ess:.3f}")
        for letters, values in cells.items():
            print(f"| {args.temperature:.0f} | {letters} | {' | '.join(values)} |")
    if args.parts_r:
        proposal = ccg.pilot_proposal(model, args.temperature, sharpness=0.5,
                                      generator=generator)
        for r in args.parts_r:
            p = ccg.joint_ess_parts(model, args.temperature, proposal=proposal, n_z=1024,
                                    r_per_z=r, generator=generator)
            print(f"1,024 z x {r} r: joint {p['joint']:.2g}, proposal {p['proposal']:.2g}, "
                  f"mean per-z ESS {p['flow']:.2g}, worst 1 % {p['flow_worst_1pct']:.2g}")


if __name__ == "__main__":
    main()
