"""Potential energies of backmapped held-out MD frames against the MD frames themselves.

Usage:
    python experiments/backmap/energies.py MODEL experiments/ala2_reference/data/md_300K.npz \
        --temperature 300 --samples-per-frame 1 16

Projects the MD frames to the model's CG coordinates, backmaps them (weighted selection of K
samples per frame) and prints mean and standard deviation of U for both, with the difference
and its standard error.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("md", help="npz from experiments/ala2_reference/run_md.py")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--samples-per-frame", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = ccg.load_model(args.model)
    x = torch.as_tensor(np.load(args.md)["frames"], dtype=torch.float64)
    u_md = model.system.energy(x).numpy()
    z = model.cg_map.coarse_grain(x).float()
    print("| K (weighted) | MD mean U (sd) | backmapped mean U (sd) | difference | s.e. |")
    print("|---|---|---|---|---|")
    for k in args.samples_per_frame:
        chunks = ccg.backmap(model, z, args.temperature, samples_per_frame=k, seed=args.seed)
        xs = np.concatenate([c["xyz"] for c in chunks])
        u = model.system.energy(torch.as_tensor(xs, dtype=torch.float64)).numpy()
        se = np.sqrt(u.var() / len(u) + u_md.var() / len(u_md))
        print(f"| {k} | {u_md.mean():.2f} ({u_md.std():.2f}) | {u.mean():.2f} ({u.std():.2f}) "
              f"| {u.mean() - u_md.mean():+.2f} | {se:.2f} |")


if __name__ == "__main__":
    main()
