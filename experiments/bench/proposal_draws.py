"""Time of one draw of z from the adaptive z proposals, per batch of rows.

    python experiments/bench/proposal_draws.py [--rows 1024] [--repeats 50]

`AdaptiveTorusProposal` (2 torsions, 24 x 24 grid, 4 temperature bands) and
`ProductTorusProposal` with one 18 x 18 block and one 18-bin block, each first taught a
smooth free energy by a few observed batches; rows at temperatures uniform in 300-600 K,
one thread, best of three rounds.
"""

from __future__ import annotations

import argparse
import time

import torch

import ccg


def _taught(proposal, cg_dim: int, g: torch.Generator):
    for _ in range(3):
        t = 300 + 300 * torch.rand(4096, generator=g, dtype=torch.float64)
        z = proposal.sample(4096, g, torch.float64, "cpu", t)
        beta_f = 2 * torch.cos(z[:, :1]) + torch.sin(z[:, 1:2]) + 0.5 * z[:, cg_dim - 1:]
        proposal.observe(z, t, beta_f)
    return proposal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1024, help="default: 1024")
    parser.add_argument("--repeats", type=int, default=50, help="default: 50")
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    proposals = {
        "AdaptiveTorusProposal 24x24": _taught(
            ccg.AdaptiveTorusProposal(2, 300.0, 600.0, warmup=0), 2, g),
        "ProductTorusProposal blocks (0,1),(2)": _taught(
            ccg.ProductTorusProposal(3, 300.0, 600.0, n_bins=18, warmup=0,
                                     blocks=[(0, 1), (2,)]), 3, g),
    }
    t = 300 + 300 * torch.rand(args.rows, generator=g, dtype=torch.float64)
    for name, proposal in proposals.items():
        best = float("inf")
        for _ in range(3):
            tick = time.perf_counter()
            for _ in range(args.repeats):
                proposal.sample(args.rows, g, torch.float32, "cpu", t)
            best = min(best, (time.perf_counter() - tick) / args.repeats)
        print(f"{name:<40} {args.rows} rows: {best * 1e3:.2f} ms per draw")


if __name__ == "__main__":
    main()
