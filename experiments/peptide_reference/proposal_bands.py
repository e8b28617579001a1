"""What did a product / residue-pairs z proposal learn? Per temperature band: the top cell's log
mass and its gap to the next cell in each block (a gap of thousands of nats is a collapsed
band), and, for a block that is one residue's (phi, psi), the mass of each Ramachandran
region in the learned marginal p and in the sampling density q = p^sharpness.

Usage: python experiments/peptide_reference/proposal_bands.py RUN_DIR [--sharpness 0.5]

RUN_DIR is a `ccg train --out` folder with a checkpoint.pt of a run with z_proposal "product"
or "residue-pairs" (the checkpoint is read with torch.load(weights_only=True): data only).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a ccg train --out folder")
    parser.add_argument("--sharpness", type=float, default=0.5, help="of the run (default 0.5)")
    args = parser.parse_args()
    model = ccg.load_model(args.run / "model.pt")
    state = torch.load(args.run / "checkpoint.pt", weights_only=True)["proposal"]
    if "log_mass" not in state:
        raise SystemExit(f"error: {args.run} was not trained with a product or residue-pairs "
                         "z proposal (its checkpoint holds no histograms)")
    blocks = [tuple(b) for b in state["blocks"]]
    proposal = ccg.ProductTorusProposal(model.cg_dim, *model.t_range, sharpness=args.sharpness,
                                        n_bands=state["log_mass"].shape[0], blocks=blocks)
    proposal.load_state_dict(state)
    print(f"{args.run}: {state['n_observed']} observations, "
          f"{state.get('n_capped', 'no count of')} capped; blocks {blocks}")
    log_mass = torch.where(state["seen"] > 0, state["log_mass"], -math.inf)
    top = log_mass.topk(2, dim=2).values  # [n_bands, n_blocks, 2]
    log_p = proposal.marginal_log_probs()
    p = log_p.exp().numpy()
    q = torch.softmax(args.sharpness * log_p, dim=2).numpy()
    n = proposal.n_bins
    centres = -math.pi + (np.arange(n) + 0.5) * 2 * math.pi / n
    cells = np.arange(n * n)
    groups = {tuple(ccg.resolve_dims(g.name.split("/"), list(model.cg_map.cg_names))): g
              for g in ccg.ramachandran_groups(list(model.cg_map.cg_names))}
    for band in range(top.shape[0]):
        print(f"band {band}: top log mass " + " ".join(f"{v:.1f}" for v in top[band, :, 0])
              + "; gap to the next cell " + " ".join(f"{v:.1f}" for v in
                                                    (top[band, :, 0] - top[band, :, 1])))
        for b, block in enumerate(blocks):
            if block not in groups:  # not one residue's (phi, psi)
                continue
            z_cell = np.zeros((n * n, model.cg_dim))  # cell = bin0 + n_bins * bin1
            z_cell[:, block[0]], z_cell[:, block[1]] = centres[cells % n], centres[cells // n]
            mass = []
            for code, regions in groups[block].labels.items():
                inside = np.any([r.contains(z_cell) for r in regions], axis=0)
                mass.append(f"{code} {100 * p[band, b, inside].sum():.1f}/"
                            f"{100 * q[band, b, inside].sum():.1f}")
            print(f"   {groups[block].name}: % in p / q: {' '.join(mass)}")


if __name__ == "__main__":
    main()
