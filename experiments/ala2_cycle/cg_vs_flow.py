"""Is the CG model F_theta as good as the flow it was fitted to? (the must-show of the issue
"The CG model as good as the flow").

For a finished `ccg cycle` folder: at each temperature, the flow's own importance-sampling
surface (flow.pt, `ccg free-energy` on the 36 x 36 grid) and F_theta (cg_model.pt) against the
replica-exchange reference: RMSE over bins with F_ref < 4 kT after the best shift, and the basin
populations (C7eq/beta, alpha_R, phi > 0) under p ∝ exp(-F). The target: F_theta's RMSE within
0.02 kT of the flow's, populations within 1 percentage point of the reference.

    python experiments/ala2_cycle/cg_vs_flow.py runs/cycle40 --temperatures 300 450 600
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import REF_DIR, basin_populations

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cycle", help="the --out folder of `ccg cycle`")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0],
                        help="temperatures (K) with a reference in experiments/ala2_reference")
    parser.add_argument("--grid", type=int, default=36, help="bins per torsion")
    parser.add_argument("--samples", type=int, default=256, help="flow samples per bin")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.cycle)
    flow = ccg.load_model(folder / "flow.pt")
    cg_model = ccg.load_cg_model(folder / "cg_model.pt")
    rows = []
    print("| T (K) | RMSE flow IS vs REMD | RMSE F_theta vs REMD | difference | "
          "populations REMD / IS / F_theta (C7eq-beta, alpha_R, phi>0 in %) |")
    print("|---|---|---|---|---|")
    for t in args.temperatures:
        ref = np.load(REF_DIR / f"remd_ref_{t:.0f}K.npz")
        f_ref, grid = ref["F_kT"], ref["grid"]
        mask = f_ref < 4.0
        flow_f = ccg.free_energy_arrays(flow, t, n_grid=args.grid, n_samples=args.samples,
                                        generator=torch.Generator().manual_seed(0))["F_kT"]
        cg_f = ccg.cg_model_arrays(cg_model, t, n_grid=args.grid)["F_kT"]
        rmse_flow = ccg.rmse_after_shift(flow_f, f_ref, mask)
        rmse_cg = ccg.rmse_after_shift(cg_f, f_ref, mask)
        pops = {name: basin_populations(f, grid) for name, f in
                (("remd", f_ref), ("flow", flow_f), ("cg", cg_f))}
        rows.append({"temperature_k": t, "rmse_flow_kt": rmse_flow, "rmse_cg_kt": rmse_cg,
                     "populations": pops})
        cells = " / ".join(
            ", ".join(f"{100 * pops[k][b]:.1f}" for b in pops["remd"]) for k in pops)
        print(f"| {t:.0f} | {rmse_flow:.3f} kT | {rmse_cg:.3f} kT | "
              f"{rmse_cg - rmse_flow:+.3f} kT | {cells} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
