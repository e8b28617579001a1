"""How converged is a peptide REMD reference? Per residue (phi_i, psi_i) free energies on a
36 x 36 grid and Ramachandran-state populations at chosen temperatures, compared between two
independent seeds and between the halves of each run.

    python experiments/peptide_reference/analyze.py data/ala3_remd_seed1.npz \
        data/ala3_remd_seed2.npz --temperatures 300 450 600 --discard-ns 1 \
        --write-reference data/ala3_ref

RMSEs are over bins with F < 4 kT in the merged data, after the best shift; the disagreement
of two independent halves is ~sqrt(2) x the error of each, ~2 x the error of their merge.
"Shuffled halves" splits the same samples at random instead of in time: the counting-noise
floor of that many independent samples; (halves / shuffled)^2 estimates how many samples
one independent one is worth (the statistical inefficiency).
`--write-reference PREFIX` writes PREFIX_{T}K.npz (merged seeds): F_kT [n_res, 36, 36],
residues, grid (bin centres, rad), populations [n_res, 4] and their block SEs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import free_energy_2d, residue_pairs, rmse_shifted

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="npz files of run_remd.py (independent seeds)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    parser.add_argument("--discard-ns", type=float, default=1.0, help="equilibration to drop")
    parser.add_argument("--grid", type=int, default=36)
    parser.add_argument("--write-reference", help="prefix of merged reference npz files")
    args = parser.parse_args()
    data = [np.load(path) for path in args.runs]
    names = [str(n) for n in data[0]["torsion_names"]]
    pairs = residue_pairs(names)
    for path, d in zip(args.runs, data, strict=True):
        print(f"{path}: {d['system']}, {float(d['ns']):.2f} ns per replica"
              f"{'' if bool(d['complete']) else ' (incomplete)'}, acceptance "
              + " ".join(f"{a / max(t, 1):.2f}" for a, t in zip(d["accepted"], d["attempted"],
                                                                strict=True)))
    rng = np.random.default_rng(0)
    # ccg's per-residue Ramachandran regions (`ccg.ramachandran_groups`), named phi_k / psi_k
    cg_names = [f"{n[:3]}_{n[3:]}" for n in names]
    groups = {g.name: g for g in ccg.ramachandran_groups(cg_names)}
    labels = next(iter(groups.values())).all_labels
    print("| T (K) | residue | RMSE seed 1 vs 2 (kT) | RMSE halves (kT, per seed) | "
          "shuffled halves (kT) | "
          + " | ".join(f"{s} % (SE)" for s in labels) + " |")
    print("|---|---|---|---|---|" + "---|" * len(labels))
    for temp in args.temperatures:
        series = []
        for d in data:
            i = int(np.argmin(np.abs(d["temperatures_k"] - temp)))
            if abs(d["temperatures_k"][i] - temp) > 0.5:
                raise SystemExit(f"error: {temp} K is not on the ladder {d['temperatures_k']}")
            sample_ps = float(d["sample_ps"]) if "sample_ps" in d else float(d["dt_ps"])
            skip = round(args.discard_ns * 1000 / sample_ps)
            series.append(np.asarray(d["torsions"][i, skip:], np.float64))
        merged = np.concatenate(series)
        f_merged_all, pops_all, errs_all = [], [], []
        for res, c_phi, c_psi in pairs:
            f_merged = free_energy_2d(merged[:, c_phi], merged[:, c_psi], args.grid)
            mask = f_merged < 4.0
            seeds = [free_energy_2d(s[:, c_phi], s[:, c_psi], args.grid) for s in series]
            seed_rmse = rmse_shifted(seeds[0], seeds[1], mask) if len(seeds) > 1 else np.nan
            halves, shuffled = [], []
            for s in series:
                p = rng.permutation(len(s))
                h = len(s) // 2
                shuffled.append(rmse_shifted(
                    free_energy_2d(s[p[:h], c_phi], s[p[:h], c_psi], args.grid),
                    free_energy_2d(s[p[h:], c_phi], s[p[h:], c_psi], args.grid), mask))
                h = len(s) // 2
                halves.append(rmse_shifted(free_energy_2d(s[:h, c_phi], s[:h, c_psi], args.grid),
                                           free_energy_2d(s[h:, c_phi], s[h:, c_psi], args.grid),
                                           mask))
            group = groups[f"phi_{res}/psi_{res}"]
            per_seed = []
            for s in series:  # equal weights, standard errors from 20 batch means
                table = ccg.group_populations(
                    ccg.JointSamples(s, np.zeros(len(s)), temp, cg_names), [group],
                    n_batches=20)
                rows = {label: (p, e) for _, label, p, e in table.rows("group")}
                per_seed.append(np.array([rows[label] for label in labels]))
            pops = np.mean([p[:, 0] for p in per_seed], 0)
            errs = np.sqrt(np.sum([p[:, 1] ** 2 for p in per_seed], 0)) / len(per_seed)
            f_merged_all.append(f_merged)
            pops_all.append(pops)
            errs_all.append(errs)
            cells = " | ".join(f"{100 * p:.1f} ({100 * e:.1f})" for p, e in zip(pops, errs,
                                                                                 strict=True))
            print(f"| {temp:.0f} | {res} | {seed_rmse:.3f} | "
                  f"{' / '.join(f'{h:.3f}' for h in halves)} | "
                  f"{' / '.join(f'{h:.3f}' for h in shuffled)} | {cells} |")
        if args.write_reference:
            edges = np.linspace(-np.pi, np.pi, args.grid + 1)
            path = Path(f"{args.write_reference}_{temp:.0f}K.npz")
            np.savez_compressed(path, F_kT=np.stack(f_merged_all),
                                grid=0.5 * (edges[1:] + edges[:-1]),
                                residues=np.array([r for r, _, _ in pairs]),
                                populations=np.stack(pops_all), population_se=np.stack(errs_all),
                                states=np.array(labels), temperature_k=np.array(temp))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
