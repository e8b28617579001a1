"""Per-z ESS of a trained (phi, psi) model on a 12x12 grid, restricted to populated points.

Usage: python experiments/ala2_train/evaluate.py MODEL [--temperatures 300 600] [--samples 256]

For each temperature: the IS free energy on the grid (256 samples per point), the points with
F < 4 kT (the model's own estimate), and the median and 10th percentile of their ESS.

With --reference-dir DIR the populated points come instead from the replica-exchange
reference DIR/remd_ref_<T>K.npz (experiments/ala2_reference; its 36 x 36 bins of 10 degrees,
read at the 12 x 12 grid's points, which are bin centres): the set then does not depend on the
model, so one extreme weight cannot shrink it.

ESS cannot see a state q never samples. So each temperature also gets a check of the two
peptide bonds (ω = CH3-C-N-CA of ACE and CA-C-N-CH3 of NME, trans at 180°): the circular
mean of each over 64 flow samples at every populated point, and the share of samples within
30° of trans. A flow whose ω peak sits tens of degrees off trans has collapsed into a wrong
state, whatever its ESS says.

With --last-iterate the flow gets the weights of the run's last optimization step from
checkpoint.pt next to MODEL, instead of the model file's (which, for a run with
`[train] ema_decay`, are the moving average): the same run evaluated both ways.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import dihedral, populated_ess

import ccg

OMEGAS = {"omega ACE": ("ACE-CH3", "ACE-C", "ALA-N", "ALA-CA"),
          "omega NME": ("ALA-CA", "ALA-C", "NME-N", "NME-C")}


def peptide_omegas(model, temperature: float, populated: torch.Tensor, *,
                   samples: int = 64, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{name: (circular mean of ω (deg, trans = ±180), share within 30° of trans)} over
    `samples` flow samples at each populated point ([grid, grid] bool) at `temperature` (K)."""
    atoms = {f"{a.residue.name}-{a.name}": a.index for a in model.system.topology.atoms}
    grid = populated.shape[0]
    z = ccg.grid_points(grid, 2)[populated.reshape(-1)].repeat_interleave(samples, 0)
    with torch.no_grad():
        x = model.sample(z.float(), temperature,
                         generator=torch.Generator().manual_seed(seed)).x.double()
    out = {}
    for name, quad in OMEGAS.items():
        a, b, c, d = (x[:, atoms[n]] for n in quad)
        omega = dihedral(a, b, c, d)
        mean = torch.atan2(torch.sin(omega).mean(), torch.cos(omega).mean())
        trans = (torch.cos(omega) < -np.cos(np.radians(30.0))).double().mean()
        out[name] = (float(torch.rad2deg(mean)), float(trans))
    return out


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
    parser.add_argument("--reference-dir", type=Path,
                        help="take the populated points from DIR/remd_ref_<T>K.npz")
    parser.add_argument("--last-iterate", action="store_true",
                        help="use the last step's weights from checkpoint.pt beside MODEL")
    args = parser.parse_args()
    model = ccg.load_model(args.model)
    if args.last_iterate:
        checkpoint = Path(args.model).with_name("checkpoint.pt")
        if not checkpoint.is_file():
            raise SystemExit(f"--last-iterate needs {checkpoint} (the run's checkpoint).")
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.flow.load_state_dict(state["modules"]["flow"])
        model.flow.float()
    rows = []
    print("| T (K) | populated points | median ESS | 10th pct ESS | eval time (s) | "
          "ω ACE, ω NME: mean (deg), share within 30° of trans |")
    print("|---|---|---|---|---|---|")
    for temperature in args.temperatures:
        start = time.perf_counter()
        row = {"temperature_k": temperature,
               **populated_ess(model, temperature, grid=args.grid, samples=args.samples,
                               seed=args.seed, cutoff_kt=args.cutoff_kt,
                               reference_dir=args.reference_dir),
               "eval_s": time.perf_counter() - start}
        row["omegas"] = peptide_omegas(model, temperature, row.pop("mask"), seed=args.seed)
        rows.append(row)
        omegas = ", ".join(f"{m:+.0f} / {100 * t:.0f} %" for m, t in row["omegas"].values())
        print(f"| {temperature:.0f} | {row['populated']} | {row['median_ess']:.3f} | "
              f"{row['p10_ess']:.3f} | {row['eval_s']:.1f} | {omegas} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "metrics": model.metrics, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
