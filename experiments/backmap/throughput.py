"""Backmapping throughput: frames/s of `backmap_frames` for 10,000 random (phi, psi) frames.

Usage:
    python experiments/backmap/throughput.py MODEL [--frames 10000] [--threads 1] [-k 1 16]
"""

from __future__ import annotations

import argparse
import time

import torch

from ccg.backmap import backmap_frames
from ccg.io.model_file import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-k", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--temperature", type=float, default=300.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    gen = torch.Generator().manual_seed(0)
    z = (2 * torch.rand(args.frames, model.cg_dim, generator=gen) - 1) * torch.pi
    print("| samples per frame K | selection | frames/s | flow samples/s |")
    print("|---|---|---|---|")
    for k in args.k:
        start = time.perf_counter()
        n = sum(len(c["xyz"]) for c in backmap_frames(
            model, z, args.temperature, samples_per_frame=k, chunk_frames=max(64, 4096 // k)))
        rate = n / (time.perf_counter() - start)
        print(f"| {k} | weighted | {rate:,.0f} | {k * rate:,.0f} |")


if __name__ == "__main__":
    main()
