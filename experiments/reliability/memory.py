"""Resident memory of a long CPU training run: does it stay flat?

Trains the default system (alanine dipeptide, CG = (phi, psi), the default flow) with a small
batch for many steps through `ccg.Trainer` exactly as `ccg train` does, and records the
process's resident set size (RSS, from /proc/self/statm: Linux) every `--every` steps.
Prints the growth after the first `--skip` steps and writes a JSON and a PNG.

    python experiments/reliability/memory.py --steps 10000 --out experiments/reliability/memory
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import ccg


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="training steps")
    parser.add_argument("--n-z", type=int, default=8, help="(z, T) pairs per step")
    parser.add_argument("--samples-per-z", type=int, default=4, help="samples per (z, T)")
    parser.add_argument("--every", type=int, default=100, help="steps between RSS samples")
    parser.add_argument("--skip", type=int, default=500, help="warm-up steps not judged")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default="experiments/reliability/memory",
                        help="output prefix (.json, .png)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ccg.RunConfig()
    config.train.steps = args.steps
    config.train.n_z, config.train.samples_per_z = args.n_z, args.samples_per_z
    config.train.device = "cpu"
    config.validate()
    torch.manual_seed(0)
    model = ccg.build_model(config)
    loss = ccg.ReverseKL(model, energy_cut=config.train.energy_cut,
                         group_size=config.train.samples_per_z)
    rows: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        trainer = ccg.Trainer(model, loss, ccg.build_proposal(config, model), config.train,
                              folder, progress=True)
        step_once = trainer.train_step

        def step_and_measure():
            out = step_once()
            if (trainer.step + 1) % args.every == 0:
                rows.append((trainer.step + 1, rss_mb(), time.perf_counter() - start))
            return out

        trainer.train_step = step_and_measure
        trainer.run()
    steps, rss, seconds = (np.array(c) for c in zip(*rows, strict=True))
    judged = steps >= args.skip
    base = rss[judged][0]
    growth = (rss[judged].max() - base) / base
    summary = {
        "steps": int(steps[-1]), "batch": args.n_z * args.samples_per_z,
        "threads": args.threads, "wall_s": float(seconds[-1]),
        "rss_mb_at_skip": float(base), "rss_mb_max_after_skip": float(rss[judged].max()),
        "rss_mb_final": float(rss[-1]), "growth_after_skip": float(growth),
        "rows": [[int(a), float(b), float(c)] for a, b, c in rows],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, rss, marker=".", lw=1)
    ax.axvline(args.skip, color="k", lw=0.6, ls="--")
    ax.set(xlabel="training step", ylabel="resident memory (MB)",
           title=f"ccg train, B = {summary['batch']}: growth after step {args.skip} "
                 f"{100 * growth:.1f} %")
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"{summary['steps']} steps in {summary['wall_s']:.0f} s; RSS {base:.0f} MB at step "
          f"{args.skip}, at most {rss[judged].max():.0f} MB after it, {rss[-1]:.0f} MB at the "
          f"end: growth {100 * growth:.2f} %")


if __name__ == "__main__":
    main()
