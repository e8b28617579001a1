"""Which populated grid points have a low ESS, and did training visit them less?

Usage: python experiments/ala2_train/points.py MODEL [--temperature 600] [--seed 0]
       [--reference-dir experiments/ala2_reference/data]

For the 12 x 12 grid of evaluate.py at one temperature: each populated point's βF above the
lowest (kT), its ESS (256 samples), and the share of that temperature's training pairs the
run's adaptive z proposal put in the point's cell at the end of training (from checkpoint.pt
beside MODEL: 70 % from exp(-0.5 βF) of the temperature's band, 30 % uniform). With
--reference-dir, populated points and F come from the replica-exchange reference (as in
evaluate.py), so that one extreme weight cannot distort them. Prints the
points sorted by ESS and the rank correlations of ESS with F and with the training share.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import reference_populated

import ccg


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def training_share(checkpoint: Path, model, temperature: float, grid: int) -> np.ndarray:
    """[grid, grid] share of the run's training z at `temperature` in each grid cell."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["proposal"]
    t_min, t_max = model.t_range
    proposal = ccg.AdaptiveTorusProposal(model.cg_dim, t_min, t_max)
    proposal.load_state_dict(state)
    n_bins = proposal.n_bins
    band = int((temperature < proposal.inner_edges).sum())   # band 0: the highest T
    probs = proposal.band_probabilities()[band].reshape(n_bins, n_bins).numpy()
    probs = (1 - proposal.explore) * probs + proposal.explore / n_bins ** 2
    fold = n_bins // grid
    return probs.reshape(grid, fold, grid, fold).sum(axis=(1, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cutoff-kt", type=float, default=4.0)
    parser.add_argument("--reference-dir", type=Path)
    args = parser.parse_args()
    grid = 12
    model = ccg.load_model(args.model)
    surface = ccg.free_energy_surface(model, args.temperature, n_grid=grid, n_samples=256,
                                      generator=torch.Generator().manual_seed(args.seed))
    ess = surface.estimates.ess.reshape(surface.shape).numpy()
    f_kt = surface.f_kt.numpy()
    share = training_share(Path(args.model).with_name("checkpoint.pt"), model,
                           args.temperature, grid)
    populated = f_kt < args.cutoff_kt
    if args.reference_dir is not None:
        populated = reference_populated(args.reference_dir, args.temperature, grid,
                                         args.cutoff_kt).numpy()
        ref = np.load(args.reference_dir / f"remd_ref_{args.temperature:.0f}K.npz")["F_kT"]
        f_kt = ref[1::3, 1::3] - ref[1::3, 1::3].min()
    centres = -180 + (np.arange(grid) + 0.5) * 360 / grid
    rows = [(ess[i, j], f_kt[i, j], share[i, j], centres[i], centres[j])
            for i, j in zip(*np.nonzero(populated), strict=True)]
    rows.sort()
    print(f"{args.temperature:.0f} K, {len(rows)} populated points (F < {args.cutoff_kt} kT)")
    print("| phi | psi | F (kT) | ESS | training share (%) |")
    print("|---|---|---|---|---|")
    for e, f, s, phi, psi in rows:
        print(f"| {phi:.0f} | {psi:.0f} | {f:.2f} | {e:.3f} | {100 * s:.2f} |")
    e, f, s = (np.array(c) for c in list(zip(*rows, strict=True))[:3])
    print(f"rank correlation of ESS with F: {_rank_correlation(e, f):+.2f}, with the training "
          f"share: {_rank_correlation(e, s):+.2f}; median ESS {np.median(e):.3f}")


if __name__ == "__main__":
    main()
