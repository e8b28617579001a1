"""How converged is a peptide REMD reference? Per residue (phi_i, psi_i) free energies on a
36 x 36 grid and Ramachandran-state populations at chosen temperatures, compared between two
independent seeds and between the halves of each run.

    python experiments/peptide_reference/analyze.py runs/ala5_seed1.npz runs/ala5_seed2.npz \
        --temperatures 300 450 600 --discard-ns 1 --save-summaries data

Inputs are run_remd.py npz files or their summaries (`summary.py`: block counts, committed
under data/); `--save-summaries DIR` writes DIR/<system>_seed<seed>.npz for each raw input.
RMSEs are over bins with F < 4 kT in the merged data, after the best shift; the disagreement
of two independent halves is ~sqrt(2) x the error of each, ~2 x the error of their merge.
"Shuffled halves" splits the same samples at random instead of in time (each sample to either
half with probability 1/2, drawn from the histogram): the counting-noise floor of that many
independent samples; (halves / shuffled)^2 estimates how many samples one independent one is
worth. Populations: seeds averaged with equal weights, standard errors from 20 batch means
per seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import rmse_shifted
from summary import (
    free_energy,
    joint_name,
    load,
    merged_free_energy,
    merged_populations,
    populations,
    save,
)


def prefix_errors(run: dict, other: dict, everything: list[dict]):
    """(k, n_blocks, MD steps, [mean RMSE over residues per T]) for the first k blocks of
    `run` against all of `other` (bins below 4 kT in the merge of `everything`)."""
    n_blocks = run["hist"].shape[2]
    per_block = run["hist"][0, 0].sum(axis=(1, 2))             # samples in each block
    for k in sorted({k for k in (1, 2, 4, 10, n_blocks) if k <= n_blocks}):
        used = int(run["discarded_samples"]) + int(per_block[:k].sum())
        errs = []
        for t in range(run["hist"].shape[0]):
            errs.append(np.mean([rmse_shifted(
                free_energy(run["hist"][t, r, :k]), free_energy(other["hist"][t, r]),
                merged_free_energy([x["hist"][t, r] for x in everything]) < 4.0)
                for r in range(run["hist"].shape[1])]))
        yield k, n_blocks, used * float(run["ladder_steps_per_sample"]), errs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+",
                        help="run_remd.py npz files or their summaries (independent seeds)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    parser.add_argument("--discard-ns", type=float, default=1.0,
                        help="equilibration to drop (raw runs; a summary keeps its own)")
    parser.add_argument("--save-summaries", metavar="DIR",
                        help="write DIR/<system>_seed<seed>.npz for each raw run")
    args = parser.parse_args()
    data = [load(path, args.temperatures, discard_ns=args.discard_ns)
            for path in args.runs]
    if args.save_summaries:
        for path, d in zip(args.runs, data, strict=True):
            out = Path(args.save_summaries) / f"{d['system']}_seed{int(d['seed'])}.npz"
            if Path(path).resolve() != out.resolve():
                out.parent.mkdir(parents=True, exist_ok=True)
                save(d, out)
                print(f"wrote {out}")
    for path, d in zip(args.runs, data, strict=True):
        n = int(d["hist"][0, 0].sum())
        print(f"{path}: {d['system']} seed {int(d['seed'])}, {float(d['ns']):.2f} ns per "
              f"replica{'' if bool(d['complete']) else ' (incomplete)'}, "
              f"{float(d['discard_ns']):g} ns dropped, {n} samples per temperature; "
              "acceptance " + " ".join(f"{a:.2f}" for a in d["acceptance"]))
    rng = np.random.default_rng(0)
    labels = [str(s) for s in data[0]["states"]]
    residues = [int(r) for r in data[0]["residues"]]
    print("| T (K) | residue | RMSE seed 1 vs 2 (kT) | RMSE halves (kT, per seed) | "
          "shuffled halves (kT) | "
          + " | ".join(f"{s} % (SE)" for s in labels) + " |")
    print("|---|---|---|---|---|" + "---|" * len(labels))
    for t, temp in enumerate(args.temperatures):
        for k, res in enumerate(residues):
            hists = [d["hist"][t, k] for d in data]      # [n_blocks, grid, grid] per seed
            mask = merged_free_energy(hists) < 4.0
            seeds = [free_energy(h) for h in hists]
            seed_rmse = rmse_shifted(seeds[0], seeds[1], mask) if len(seeds) > 1 else np.nan
            halves, shuffled = [], []
            for h in hists:
                half = len(h) // 2
                halves.append(rmse_shifted(free_energy(h[:half]),
                                           free_energy(h[half:]), mask))
                total = h.sum(0).astype(np.int64)
                first = rng.binomial(total, 0.5)
                shuffled.append(rmse_shifted(free_energy(first),
                                             free_energy(total - first), mask))
            pops, errs = merged_populations([d["state_counts"][t, k] for d in data])
            cells = " | ".join(f"{100 * p:.1f} ({100 * e:.1f})"
                               for p, e in zip(pops, errs, strict=True))
            print(f"| {temp:.0f} | {res} | {seed_rmse:.3f} | "
                  f"{' / '.join(f'{h:.3f}' for h in halves)} | "
                  f"{' / '.join(f'{h:.3f}' for h in shuffled)} | {cells} |")
    print()
    print("What REMD costs: the per-residue F of the first blocks of each seed against the "
          "other seed (all of it), RMSE in kT averaged over residues, at the MD steps of the "
          "whole ladder up to there (the dropped equilibration included):")
    for i, d in enumerate(data[:2] if len(data) > 1 else []):
        print(f"  seed {int(d['seed'])}: " + "; ".join(
            f"{k}/{n_blocks} ({steps:.2g} steps) " + ", ".join(
                f"{temp:.0f} K {err:.2f}" for temp, err in zip(args.temperatures, errs,
                                                               strict=True))
            for k, n_blocks, steps, errs in prefix_errors(d, data[1 - i], data)))
    print()
    print("Most populated joint states (residues "
          f"{', '.join(map(str, residues))}), % (SE), per seed and merged:")
    for t, temp in enumerate(args.temperatures):
        counts = [d["joint_counts"][t] for d in data]
        p, se = merged_populations(counts)
        each = [populations(c)[0] for c in counts]
        top = np.argsort(-p, kind="stable")[:8]
        print(f"  {temp:.0f} K: " + "; ".join(
            f"{joint_name(int(j), labels, len(residues))} {100 * p[j]:.1f} "
            f"({100 * se[j]:.1f}) [{' / '.join(f'{100 * e[j]:.1f}' for e in each)}]"
            for j in top))


if __name__ == "__main__":
    main()
