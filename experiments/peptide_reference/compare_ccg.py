"""A ccg model of a capped peptide against the replica-exchange reference: per residue, the
(phi, psi) free energy on a 36 x 36 grid and the Ramachandran-state populations, at chosen
temperatures, with the same state definitions on both sides (`ccg.ramachandran_groups`).

    python experiments/peptide_reference/compare_ccg.py runs/ala3/model.pt \
        data/ala3-obc2_seed1.npz data/ala3-obc2_seed2.npz --temperatures 300 450 600

ccg: joint samples z ~ a product proposal fitted at each T (`ccg.pilot_proposal`; with
`--pilot-states R`, a mixture over joint states fitted on top, `ccg.state_mixture_proposal`),
r ~ the flow (with `--ais-steps K`: moved by K annealed MALA stages toward p(r | z)), reweighted to
exp(-beta U) (`ccg.sample_joint`), projected onto each residue's
(phi, psi) (`ccg.project_free_energy`). REMD: raw runs or their summaries (`summary.py`),
the seeds merged with equal weights, standard errors from 20 batch means. RMSE over bins with
F_ref < 4 kT after the best shift, beside the RMSE that the two sides' statistical errors
alone would give (root mean square over the same bins of each side's per-bin standard error,
ccg's from its importance weights, REMD's from its batch means); populations in percent with
standard errors. Then the REMD's five most populated joint states (the labels of every
residue) at each T, against ccg.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import rmse_shifted
from summary import (
    joint_name,
    load,
    merged_free_energy,
    merged_free_energy_error,
    merged_populations,
)

import ccg


def _residue_row(joint, table, refs, t: int, k: int, pair, labels, grid: int,
                 tag: str) -> str:
    """One table row: residue k's (phi, psi) projection and state populations at the t-th
    temperature against the merged reference."""
    name, i, j = pair
    projection = ccg.project_free_energy(joint, (i, j), n_bins=grid)
    f_ref = merged_free_energy([r["hist"][t, k] for r in refs])
    mask = f_ref < 4.0
    f_ref_err = merged_free_energy_error([r["hist"][t, k] for r in refs])
    noise = [np.sqrt(np.mean(e[mask] ** 2)) for e in (projection.f_kt_err, f_ref_err)]
    q, u = merged_populations([r["state_counts"][t, k] for r in refs])
    rows = {s: (p, e) for g, s, p, e in table.rows("group") if g == name}
    cells = [f"{100 * rows[s][0]:.1f}±{100 * rows[s][1]:.1f} / "
             f"{100 * q[c]:.1f}±{100 * u[c]:.1f}" for c, s in enumerate(labels)]
    return (f"| {joint.temperature_k:.0f} | {name}{tag} | "
            f"{rmse_shifted(projection.shifted, f_ref, mask):.3f} | "
            f"{noise[0]:.2f} / {noise[1]:.2f} | "
            f"{int(mask.sum())} | {joint.ess:.2g} ({joint.ess * len(joint):.0f}) | "
            f"{joint.pareto_k:.2f} | {joint.reverse_kl:.2f} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model.pt with a backbone torsion map (phi-psi)")
    parser.add_argument("remd", nargs="+",
                        help="run_remd.py npz files or their summaries (data/*.npz), one per seed")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    parser.add_argument("--joint-samples", type=int, default=2**20)
    parser.add_argument("--discard-ns", type=float, default=1.0,
                        help="equilibration to drop (raw runs; a summary keeps its own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pilot-sharpness", type=float, default=1.0,
                        help="the pilot proposal's sharpness, in (0, 1] (ccg.pilot_proposal)")
    parser.add_argument("--pilot-samples", type=int, default=8192,
                        help="joint samples per round of the pilot's fit (6 rounds)")
    parser.add_argument("--pilot-r-per-z", type=int, default=1,
                        help="flow samples per z in the pilot's fit, their weights averaged "
                             "(ccg.pilot_proposal(r_per_z=...))")
    parser.add_argument("--pilot-blocks", choices=("torsion", "residue"), default="torsion",
                        help="1-D histograms per torsion or 2-D per residue (ccg.pilot_proposal)")
    parser.add_argument("--pilot-cooperative", type=float, default=0.0,
                        help="share of the pilot's z drawn with one cell shared by every "
                             "residue (ccg.pilot_proposal(cooperative=...))")
    parser.add_argument("--pilot-states", type=int, default=0,
                        help="R > 0: then fit a mixture over the joint Ramachandran states in R "
                             "rounds of 16,384 joint samples (ccg.state_mixture_proposal), the "
                             "product pilot as its base; 0: the product pilot alone")
    parser.add_argument("--psis", action="store_true",
                        help="also print each residue's row from the same samples with "
                             "Pareto-smoothed weights (JointSamples.smoothed())")
    parser.add_argument("--ais-steps", type=int, default=0,
                        help="K > 0: each joint sample's r through K annealed MALA stages "
                             "(ccg.sample_joint(ais_steps=K)); the pilot stays plain")
    parser.add_argument("--ess-parts", action=argparse.BooleanOptionalAction, default=True,
                        help="print where the joint ESS is lost (ccg.joint_ess_parts, 4,096 z "
                             "x 32 r per T, with the pilot of the estimate, through every AIS "
                             "stage: slow with --ais-steps)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    refs = [load(path, args.temperatures, discard_ns=args.discard_ns) for path in args.remd]
    model = ccg.load_model(args.model)
    names = list(model.cg_map.cg_names)
    groups = ccg.ramachandran_groups(names)
    residues = [int(r) for r in refs[0]["residues"]]
    if len(groups) != len(residues):
        raise SystemExit(f"error: the model has {len(groups)} residues with both phi and psi "
                         f"({', '.join(g.name for g in groups)}); the reference has "
                         f"{len(residues)} ({', '.join(map(str, residues))}): not the same peptide")
    labels = groups[0].all_labels
    if labels != [str(s) for s in refs[0]["states"]]:
        raise SystemExit("error: the reference was summarized with other Ramachandran states "
                         f"({', '.join(map(str, refs[0]['states']))}); re-run analyze.py")
    grid = refs[0]["hist"].shape[-1]
    # the k-th (phi, psi) group of the model is the k-th residue of the reference
    pairs = [(g.name, *ccg.resolve_dims(g.name.split("/"), names)) for g in groups]
    generator = torch.Generator().manual_seed(args.seed)
    print(f"model {args.model}: CG {', '.join(names)}; reference {', '.join(args.remd)}")
    print("| T (K) | residue (model names) | RMSE (kT) | noise: ccg / REMD (kT) | bins | "
          "joint ESS (effective) | Pareto k | KL gap | "
          + " | ".join(f"{s}: ccg / REMD (%)" for s in labels) + " |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(labels))
    joint_rows, proposals = [], []
    for t, temp in enumerate(args.temperatures):
        proposal = ccg.pilot_proposal(model, temp, n_samples=args.pilot_samples,
                                      r_per_z=args.pilot_r_per_z,
                                      sharpness=args.pilot_sharpness, blocks=args.pilot_blocks,
                                      generator=generator, cooperative=args.pilot_cooperative)
        if args.pilot_states:
            proposal = ccg.state_mixture_proposal(model, temp, base=proposal, groups=groups,
                                                  rounds=args.pilot_states, generator=generator)
        proposals.append(proposal)
        joint = ccg.sample_joint(model, temp, args.joint_samples, proposal=proposal,
                                 generator=generator, ais_steps=args.ais_steps)
        ours = ccg.group_populations(joint, groups, top=len(labels) ** len(groups))
        for samples, tag in [(joint, "")] + ([(joint.smoothed(), " (PSIS)")] if args.psis
                                             else []):
            table = ours if samples is joint else ccg.group_populations(samples, groups)
            for k, (name, i, j) in enumerate(pairs):
                print(_residue_row(samples, table, refs, t, k, (name, i, j), labels, grid, tag))
        q, u = merged_populations([r["joint_counts"][t] for r in refs])
        mine = {s: (p, e) for _, s, p, e in ours.rows("joint")}
        for code in np.argsort(-q, kind="stable")[:5]:
            state = joint_name(int(code), labels, len(residues))
            p, e = mine.get(state, (0.0, 0.0))
            joint_rows.append(f"| {temp:.0f} | {state} | {100 * p:.1f}±{100 * e:.1f} | "
                              f"{100 * q[code]:.1f}±{100 * u[code]:.1f} |")
    print()
    print("| T (K) | joint state (REMD's top 5) | ccg (%) | REMD (%) |")
    print("|---|---|---|---|")
    print("\n".join(joint_rows), flush=True)
    if not args.ess_parts:
        return
    print()
    print("Where the joint ESS is lost (`ccg.joint_ess_parts`, 4,096 z x 32 r per T):")
    for temp, proposal in zip(args.temperatures, proposals, strict=True):
        parts = ccg.joint_ess_parts(model, temp, proposal=proposal, n_z=4096, r_per_z=32,
                                    generator=generator, ais_steps=args.ais_steps)
        print(f"  {temp:.0f} K: joint {parts['joint']:.2g}, proposal (rho against "
              f"exp(-beta F)) {parts['proposal']:.2g}, flow (mean per-z ESS) "
              f"{parts['flow']:.2g}, worst 1 % of z {parts['flow_worst_1pct']:.2g}",
              flush=True)


if __name__ == "__main__":
    main()
