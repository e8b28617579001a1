"""A ccg model of a capped peptide against the replica-exchange reference: per residue, the
(phi, psi) free energy on a 36 x 36 grid and the Ramachandran-state populations, at chosen
temperatures, with the same state definitions on both sides (`ccg.ramachandran_groups`).

    python experiments/peptide_reference/compare_ccg.py runs/ala3/model.pt \
        runs/ala3_seed1.npz runs/ala3_seed2.npz --temperatures 300 450 600

ccg: joint samples z ~ a product proposal fitted at each T (`ccg.pilot_proposal`), r ~ the
flow, reweighted to exp(-beta U) (`ccg.sample_joint`), projected onto each residue's
(phi, psi) (`ccg.project_free_energy`). REMD: the merged seeds after `--discard-ns`, equal
weights, standard errors from 20 batch means. RMSE over bins with F_ref < 4 kT after the best
shift; populations in percent with standard errors.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import rmse_shifted

import ccg


def reference_samples(paths: list[str], temperature: float, discard_ns: float,
                      order: list[int], names: list[str]) -> list[ccg.JointSamples]:
    """The REMD torsions at `temperature`, one set per seed, columns in the model's CG order."""
    parts = []
    for path in paths:
        d = np.load(path)
        i = int(np.argmin(np.abs(d["temperatures_k"] - temperature)))
        if abs(d["temperatures_k"][i] - temperature) > 0.5:
            raise SystemExit(f"error: {temperature} K is not on the ladder of {path}")
        sample_ps = float(d["sample_ps"]) if "sample_ps" in d else float(d["dt_ps"])
        skip = round(discard_ns * 1000 / sample_ps)
        z = np.asarray(d["torsions"][i, skip:], np.float64)[:, order]
        parts.append(ccg.JointSamples(z, np.zeros(len(z)), temperature, names))
    return parts


def merged(parts: list[ccg.JointSamples]) -> ccg.JointSamples:
    """The seeds pooled with equal total weight each (log-weight −log n per sample)."""
    z = np.concatenate([p.z for p in parts])
    log_w = np.concatenate([np.full(len(p), -np.log(len(p))) for p in parts])
    return ccg.JointSamples(z, log_w, parts[0].temperature_k, parts[0].cg_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model.pt with a backbone torsion map (phi-psi)")
    parser.add_argument("remd", nargs="+", help="run_remd.py npz files (seeds)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    parser.add_argument("--joint-samples", type=int, default=2**20)
    parser.add_argument("--grid", type=int, default=36)
    parser.add_argument("--discard-ns", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ccg.load_model(args.model)
    names = list(model.cg_map.cg_names)
    ref_names = [str(n) for n in np.load(args.remd[0])["torsion_names"]]
    # the k-th phi (psi) of the model is the k-th phi (psi) of the reference (by residue)
    order = []
    for name in names:
        kind = name[:3]
        k = [n for n in names if n[:3] == kind].index(name)
        order.append(ref_names.index([n for n in ref_names if n[:3] == kind][k]))
    groups = ccg.ramachandran_groups(names)
    pairs = [(g.name, *ccg.resolve_dims(g.name.split("/"), names)) for g in groups]
    generator = torch.Generator().manual_seed(args.seed)
    print(f"model {args.model}: CG {', '.join(names)}; reference {', '.join(args.remd)}")
    print("| T (K) | residue (model names) | RMSE (kT) | bins | joint ESS (effective) | "
          + " | ".join(f"{s}: ccg / REMD (pp)" for s in groups[0].all_labels) + " |")
    print("|---|---|---|---|---|" + "---|" * len(groups[0].all_labels))
    for temp in args.temperatures:
        proposal = ccg.pilot_proposal(model, temp, generator=generator)
        joint = ccg.sample_joint(model, temp, args.joint_samples, proposal=proposal,
                                 generator=generator)
        seeds = reference_samples(args.remd, temp, args.discard_ns, order, names)
        ref = merged(seeds)
        ours = ccg.group_populations(joint, groups)
        theirs = [ccg.group_populations(s, groups, n_batches=20) for s in seeds]
        for name, i, j in pairs:
            f = ccg.project_free_energy(joint, (i, j), n_bins=args.grid).shifted
            f_ref = ccg.project_free_energy(ref, (i, j), n_bins=args.grid).shifted
            mask = f_ref < 4.0
            cells = []
            for label in groups[0].all_labels:
                a = [(p, e) for g, s, p, e in ours.rows("group") if g == name and s == label]
                b = np.array([next((p, e) for g, s, p, e in t.rows("group")
                               if g == name and s == label) for t in theirs])
                (p, e), q = a[0], b[:, 0].mean()  # seeds averaged, their errors combined
                u = np.sqrt((b[:, 1] ** 2).sum()) / len(b)
                cells.append(f"{100 * p:.1f}±{100 * e:.1f} / {100 * q:.1f}±{100 * u:.1f}")
            print(f"| {temp:.0f} | {name} | {rmse_shifted(f, f_ref, mask):.3f} | "
                  f"{int(mask.sum())} | {joint.ess:.2g} ({joint.ess * len(joint):.0f}) | "
                  f"{' | '.join(cells)} |")


if __name__ == "__main__":
    main()
