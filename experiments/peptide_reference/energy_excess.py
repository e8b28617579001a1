"""Where does a peptide model's flow put its energy? Flow samples against the relaxed minimum
at the same z, term by term.

Usage: python experiments/peptide_reference/energy_excess.py MODEL [--states A B P]
       [--temperature 300] [--samples 2048] [--seed 0] [--threads 1]

For each state (one Ramachandran letter per residue, or one for all, as in
`f_convergence.py`) it puts z at the region centres, draws flow samples r ~ q(r | z, T),
relaxes r at fixed z by L-BFGS from the eight lowest-energy samples, and prints the flow
samples' median energy above that minimum (in k_B T), per OpenMM force group, with the
importance ESS of the samples. For a flow that has learned p(r | z) near a harmonic minimum the
excess is about n_r / 2 k_B T in total (k_B T / 2 per coordinate); a state where it is much
larger than at another is one the flow fits worse, and the terms say where (angles, clashes).

A second table says whether the flow is misplaced or misshaped there: the offset of the
samples' mean from the minimum on each linear coordinate, in units of the flow's reference
width (`flow.scale`), as an RMS and a maximum (with the coordinate's kind and r index), and the
median and 99th-percentile excess after every sample is shifted by minus that offset (the same
spread, centred on the minimum). If re-centring removes most of the gap to n_r / 2 and the tail
stays low, a z-dependent location is what the flow lacks; if the tail clashes, the offset is a
margin the flow keeps.
"""

from __future__ import annotations

import argparse

import torch
from common import state_centres

import ccg


def relaxed(model, z: torch.Tensor, r_start: torch.Tensor) -> torch.Tensor:
    """r after L-BFGS on sum U(X(z, r)) from each row of r_start [n, n_r] (z fixed)."""
    v = r_start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([v], max_iter=500, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-8, tolerance_change=1e-12, history_size=50)

    def closure():
        optimizer.zero_grad()
        x, _ = model.cg_map.merge(z.expand(len(v), -1), v)
        energy = model.system.energy(x).sum()
        energy.backward()
        return energy

    optimizer.step(closure)
    return v.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model.pt with a backbone torsion map")
    parser.add_argument("--states", nargs="+", default=["A", "B", "P"],
                        help="one letter per residue, or one for all (default: A B P)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default: 300)")
    parser.add_argument("--samples", type=int, default=2048, help="flow samples per state")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ccg.load_model(args.model).double()
    beta = ccg.beta_from_temperature(args.temperature)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"model {args.model}, T = {args.temperature} K, {args.samples} flow samples per "
          f"state, n_r = {model.cg_map.n_r} (harmonic excess ~{model.cg_map.n_r / 2:.0f} kT)")
    print("| state | finite | U_min(z) (kJ/mol) | excess: total | "
          + " | ".join(model.system.term_names) + " | ESS |")
    print("|---" * (5 + len(model.system.term_names)) + "|")
    placement = []
    for label, z in state_centres(model, args.states):
        with torch.no_grad():
            s = model.sample(z.expand(args.samples, -1), args.temperature, generator=generator)
            ok = s.finite
            terms = model.system.energy_terms(s.x[ok])
        energy = s.energy_kjmol[ok]
        r_min = relaxed(model, z, s.r[ok][torch.argsort(energy)[:8]])
        with torch.no_grad():
            x_min, _ = model.cg_map.merge(z.expand(len(r_min), -1), r_min)
            u_min = model.system.energy(x_min)
            best = int(torch.argmin(u_min))
            terms_min = {k: float(v[best]) for k, v in model.system.energy_terms(x_min).items()}
        log_w = s.log_weights[ok]
        ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))
        excess = [beta * (float(terms[k].median()) - terms_min[k]) for k in terms_min]
        total = beta * (float(energy.median()) - float(u_min[best]))
        print(f"| {label} | {int(ok.sum())} | {float(u_min[best]):.1f} | {total:.1f} | "
              + " | ".join(f"{e:.1f}" for e in excess) + f" | {ess / len(log_w):.4f} |")
        placement.append((label, *recentred(model, z, s.r[ok], r_min[best], beta,
                                            float(u_min[best]))))
    print("\n| state | mean offset (widths): RMS | max | at | re-centred excess: median | "
          "99th percentile |")
    print("|---|---|---|---|---|---|")
    for label, rms, worst, at, excess, tail in placement:
        print(f"| {label} | {rms:.2f} | {worst:.2f} | {at} | {excess:.1f} | {tail:.1f} |")


def recentred(model, z: torch.Tensor, r: torch.Tensor, r_min: torch.Tensor, beta: float,
              u_min: float) -> tuple[float, float, str, float, float]:
    """(RMS and max |offset| of the mean of r [n, n_r] from r_min [n_r] over linear dims, in
    flow widths; the worst dim as "kind index"; median and 99th percentile of beta (U - u_min)
    of r shifted by the offset on linear dims)."""
    linear = ~model.flow.circular
    offset = torch.where(linear, r.mean(0) - r_min, torch.zeros_like(r_min))
    widths = (offset / model.flow.scale)[linear]
    worst = int(torch.argmax(widths.abs()))
    dim = int(torch.nonzero(linear).flatten()[worst])
    with torch.no_grad():
        x, _ = model.cg_map.merge(z.expand(len(r), -1), r - offset)
        energy = model.system.energy(x)
    excess = beta * (energy - u_min)
    return (float(widths.pow(2).mean().sqrt()), float(widths.abs().max()),
            f"{model.cg_map.r_kinds[dim]} {dim}", float(excess.median()),
            float(torch.quantile(excess, 0.99)))


if __name__ == "__main__":
    main()
