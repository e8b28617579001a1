"""The CG model F_theta(z, T) of a `ccg cycle` run on a capped peptide against the replica-exchange
reference: CG dynamics on F_theta, projected onto each residue's (phi, psi) and its
Ramachandran states, at chosen temperatures.

    python experiments/peptide_reference/compare_cycle.py runs/cycle6d/cycle/cg_model.pt \
        data/ala3-obc2_seed3.npz data/ala3-obc2_seed4.npz --temperatures 300 450 600

CG samples: `--walkers` MALA walkers on F_theta (`ccg.simulate`, exact for exp(-beta F_theta)
at any step), started uniformly on the torus; the first half of each walker's frames is
dropped. Per residue: F on the reference's 36 x 36 bins, RMSE over bins with F_ref < 4 kT after
the best shift, beside the RMSE that both sides' statistical errors alone would give (the
walkers in 20 groups as batches; REMD's batch means); the populations of the states of
`ccg.ramachandran_groups` (A α_R, B β, P PPII, L α_L, O other) with standard errors from the
same 20 groups. Then the REMD's five most populated joint states against the CG dynamics.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from summary import (
    joint_name,
    load,
    merged_free_energy,
    merged_free_energy_error,
    merged_populations,
    populations,
)

import ccg

N_GROUPS = 20
"""Walker groups used as batches for the standard errors."""


def walk(cg_model, temperature_k: float, walkers: int, steps: int, dt_ps: float,
         generator: torch.Generator) -> tuple[np.ndarray, float]:
    """Frames [walkers, n_kept, d] of MALA on F_theta from uniform starts (second half kept)
    and the acceptance."""
    d = cg_model.cg_dim
    start = (torch.rand(walkers, d, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    run = ccg.simulate(cg_model, start, temperature_k, steps, dt_ps=dt_ps, save_every=10,
                       generator=generator)
    frames = run.frames.transpose(0, 1).numpy()
    return frames[:, frames.shape[1] // 2:], run.acceptance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cg_model", help="cg_model.pt of a `ccg cycle` run on a phi-psi map")
    parser.add_argument("remd", nargs="+", help="REMD summaries (data/*.npz) or raw runs")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    parser.add_argument("--walkers", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20000, help="MALA steps per walker")
    parser.add_argument("--dt", type=float, default=0.01,
                        help="MALA time step (ps; D = 0.25 rad^2/ps, as `ccg simulate`)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    refs = [load(path, args.temperatures) for path in args.remd]
    cg_model = ccg.load_cg_model(args.cg_model)
    names = list(cg_model.cg_map.cg_names)
    groups = ccg.ramachandran_groups(names)
    if len(groups) != len(refs[0]["residues"]):
        raise SystemExit(f"error: the CG model has {len(groups)} (phi, psi) pairs, the "
                         f"reference {len(refs[0]['residues'])} residues: not the same peptide")
    labels = groups[0].all_labels
    grid = refs[0]["hist"].shape[-1]
    pairs = [ccg.resolve_dims(g.name.split("/"), names) for g in groups]
    generator = torch.Generator().manual_seed(args.seed)
    print(f"CG model {args.cg_model}: {', '.join(names)}, fitted over {cg_model.t_range} K; "
          f"reference {', '.join(args.remd)}; {args.walkers} walkers x {args.steps} MALA steps "
          f"of {args.dt} ps")
    print("| T (K) | residue | RMSE (kT) | noise: CG / REMD (kT) | bins | "
          + " | ".join(f"{s}: CG / REMD (%)" for s in labels) + " |")
    print("|---|---|---|---|---|" + "---|" * len(labels))
    joint_rows = []
    for t, temp in enumerate(args.temperatures):
        frames, acceptance = walk(cg_model, temp, args.walkers, args.steps, args.dt,
                                      generator)
        batch = np.arange(args.walkers) * N_GROUPS // args.walkers  # walker -> group
        flat = frames.reshape(-1, frames.shape[-1])
        group_of = np.repeat(batch, frames.shape[1])
        cell = np.clip(((np.remainder(flat + np.pi, 2 * np.pi)) / (2 * np.pi / grid))
                       .astype(np.int64), 0, grid - 1)
        codes = [g.assign(flat) for g in groups]
        for k, ((i, j), group) in enumerate(zip(pairs, groups, strict=True)):
            hist = np.bincount((group_of * grid + cell[:, i]) * grid + cell[:, j],
                               minlength=N_GROUPS * grid * grid).reshape(N_GROUPS, grid, grid)
            f_cg = merged_free_energy([hist])
            f_ref = merged_free_energy([r["hist"][t, k] for r in refs])
            mask = f_ref < 4.0
            shared = mask & np.isfinite(f_cg)
            diff = f_cg[shared] - f_ref[shared]
            rmse = float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
            noise = [float(np.sqrt(np.mean(e[shared] ** 2)))
                     for e in (merged_free_energy_error([hist]),
                               merged_free_energy_error([r["hist"][t, k] for r in refs]))]
            counts = np.bincount(group_of * len(labels) + codes[k],
                                 minlength=N_GROUPS * len(labels)).reshape(N_GROUPS, -1)
            p, e = populations(counts)
            q, u = merged_populations([r["state_counts"][t, k] for r in refs])
            cells = [f"{100 * p[c]:.1f}±{100 * e[c]:.1f} / {100 * q[c]:.1f}±{100 * u[c]:.1f}"
                     for c in range(len(labels))]
            print(f"| {temp:.0f} | {group.name} | {rmse:.3f} | {noise[0]:.2f} / {noise[1]:.2f} "
                  f"| {int(shared.sum())} of {int(mask.sum())} | {' | '.join(cells)} |")
        joint = np.zeros(len(flat), np.int64)
        for c in codes:
            joint = joint * len(labels) + c
        size = len(labels) ** len(codes)
        p, e = populations(np.bincount(group_of * size + joint, minlength=N_GROUPS * size)
                           .reshape(N_GROUPS, size))
        q, u = merged_populations([r["joint_counts"][t] for r in refs])
        for code in np.argsort(-q, kind="stable")[:5]:
            joint_rows.append(f"| {temp:.0f} | {joint_name(int(code), labels, len(codes))} | "
                              f"{100 * p[code]:.1f}±{100 * e[code]:.1f} | "
                              f"{100 * q[code]:.1f}±{100 * u[code]:.1f} |")
        print(f"  ({temp:.0f} K: MALA acceptance {acceptance:.2f})", flush=True)
    print()
    print("| T (K) | joint state (REMD's top 5) | CG dynamics (%) | REMD (%) |")
    print("|---|---|---|---|")
    print("\n".join(joint_rows))


if __name__ == "__main__":
    main()
