"""Per-z ESS of a trained (phi, psi) model on a 12x12 grid, restricted to populated points.

Usage: python experiments/ala2_train/evaluate.py MODEL [--temperatures 300 600] [--samples 256]

For each temperature: the IS free energy on the grid (256 samples per point), the points with
F < 4 kT (the model's own estimate), and the median and 10th percentile of their ESS.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ccg.free_energy.surface import torsion_surface
from ccg.io.model_file import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    parser.add_argument("--grid", type=int, default=12)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--cutoff-kt", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the table rows here")
    args = parser.parse_args()
    model = load_model(args.model)
    rows = []
    print("| T (K) | populated points | median ESS | 10th pct ESS | eval time (s) |")
    print("|---|---|---|---|---|")
    for temperature in args.temperatures:
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(args.seed)
        surface = torsion_surface(model, temperature, n_grid=args.grid, n_samples=args.samples,
                                  generator=gen)
        ess = surface.estimates.ess.reshape(surface.shape)
        populated = surface.f_kt < args.cutoff_kt
        sel = ess[populated]
        row = {
            "temperature_k": temperature,
            "populated": int(populated.sum()),
            "median_ess": float(sel.median()),
            "p10_ess": float(torch.quantile(sel, 0.1)),
            "eval_s": time.perf_counter() - start,
        }
        rows.append(row)
        print(f"| {temperature:.0f} | {row['populated']} | {row['median_ess']:.3f} | "
              f"{row['p10_ess']:.3f} | {row['eval_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "metrics": model.metrics, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
