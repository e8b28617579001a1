"""Compare `ccg states` / `ccg free-energy --project` outputs of a torus-wells model with the
exact answers (1-D quadrature), and report the joint ESS at several temperatures.

    python compare.py runs/d4/model.pt --states runs/d4/states_300.npz \
        --projection runs/d4/proj_300.npz
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import ccg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model")
    p.add_argument("--states", nargs="*", default=[])
    p.add_argument("--projection", nargs="*", default=[])
    p.add_argument("--ess-temperatures", type=float, nargs="*", default=[300.0, 450.0, 600.0])
    args = p.parse_args()
    torch.set_num_threads(1)
    model = ccg.load_model(args.model)
    system = model.system
    for path in args.states:
        data = np.load(path)
        t = float(data["temperature_k"])
        z, rows = [], []
        for kind, group, state, pop, se in zip(data["kind"], data["group"], data["state"],
                                               data["population"], data["se"], strict=True):
            if kind == "group":
                i = int(group[1:])
                box = {i: (0.0, math.pi) if state == "+" else (-math.pi, 0.0)}
            else:
                box = {i: (0.0, math.pi) if c == "+" else (-math.pi, 0.0)
                       for i, c in enumerate(state)}
            exact = system.box_population(box, t)
            z.append((pop - exact) / se)
            rows.append(f"  {kind:5s} {group:3s} {state:6s} {pop:.4f} ± {se:.4f}   exact "
                        f"{exact:.4f}   z = {z[-1]:+.2f}")
        print(f"{path}: T = {t:.0f} K, joint ESS {float(data['joint_ess']):.3f}")
        print("\n".join(rows))
        z = np.array(z)
        print(f"  {len(z)} populations: max |z| {np.abs(z).max():.2f}, RMS z "
              f"{math.sqrt((z**2).mean()):.2f}")
    for path in args.projection:
        data = np.load(path)
        t, dims = float(data["temperature_k"]), [int(i) for i in data["dims"]]
        n_bins = data["F_kT"].shape[0]
        exact = system.projection(dims, t, n_bins)
        err = data["F_kT_absolute"] - exact
        seen = np.isfinite(err)  # bins no sample visited are left out (and counted)
        pop = np.exp(-exact) / np.exp(-exact).sum()
        low = seen & (exact - exact.min() < 3)
        zs = err[seen] / data["F_kT_err"][seen]
        print(f"{path}: T = {t:.0f} K, dims {dims}, {n_bins}^{len(dims)} bins "
              f"({(~seen).sum()} empty, exact population {pop[~seen].sum():.1e}): "
              f"population-weighted RMSE {math.sqrt((pop * err**2)[seen].sum()):.3f} kT, "
              f"max |error| where F < 3 kT {np.abs(err)[low].max():.3f} kT, z-scores mean "
              f"{zs.mean():+.2f} std {zs.std():.2f}, max |z| {np.abs(zs).max():.1f}")
    if args.ess_temperatures:
        start = time.perf_counter()
        ess = ccg.joint_ess(model, args.ess_temperatures, n_samples=65536,
                            generator=torch.Generator().manual_seed(0))
        print("joint ESS (pilot product proposal, 65536 samples): " + ", ".join(
            f"{t:.0f} K {e:.3f}" for t, e in zip(args.ess_temperatures, ess, strict=True))
            + f" ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
