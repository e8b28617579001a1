"""Temperature transfer: fit F_theta on observables at selected temperatures only, predict others.

Takes the observables a `ccg cycle` run estimated (its `cycle_state.pt`), keeps only those at
`--train-temperatures` (default 300 and 600 K), fits a fresh F_theta (same architecture and
loss as the cycle), saves it as a cg_model.pt, and reports F_theta at `--eval-temperatures`
against the MD reference (via evaluate.py's measures). The flow's importance-sampling
estimates at 300 and 600 K are unbiased whatever temperatures the flow was trained at, so
everything F_theta knows about 450 K comes from the 300 and 600 K observables.

Usage:
    python experiments/ala2_cycle/transfer.py runs/ala2_cycle --out runs/ala2_transfer.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cycle_dir", help="output folder of a `ccg cycle` run")
    parser.add_argument("--train-temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--fit-steps", type=int, default=8000,
                        help="F_theta fit steps from scratch (3000 left the values at chi2 2.8)")
    parser.add_argument("--out", required=True, help="cg_model.pt to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cycle_dir = Path(args.cycle_dir)
    state = torch.load(cycle_dir / "cycle_state.pt", map_location="cpu", weights_only=False)
    data = ccg.ObservableSet(**state["data"])
    keep = torch.zeros(len(data), dtype=torch.bool)
    for t in args.train_temperatures:
        keep |= data.temperature_k == t
    subset = data.select(keep)
    print(f"{len(subset)} of {len(data)} points at {args.train_temperatures} K "
          f"(all temperatures in the run: {sorted(set(data.temperature_k.tolist()))})")
    template = ccg.load_cg_model(cycle_dir / "cg_model.pt")
    cfg = template.config()
    torch.manual_seed(0)
    model = ccg.FreeEnergyModel(template.cg_map, t_ref=cfg["t_ref"],
                            t_range=(min(args.train_temperatures), max(args.train_temperatures)),
                            hidden=cfg["hidden"], n_layers=cfg["n_layers"],
                            n_members=cfg["n_members"]).double()
    start = time.perf_counter()
    history = ccg.fit_free_energy_model(model, subset, ccg.FitConfig(steps=args.fit_steps),
                                    progress=True)
    print(f"fit: {args.fit_steps} steps in {time.perf_counter() - start:.0f} s, final chi^2 "
          f"values {history['values'][-1]:.2f}, forces {history['forces'][-1]:.2f}, "
          f"energies {history['energies'][-1]:.2f}")
    ccg.save_cg_model(args.out, model, template.system,
                  metrics={"train_temperatures": args.train_temperatures,
                           "n_points": len(subset), "source": str(cycle_dir)})
    print(f"wrote {args.out}; evaluate with: python experiments/ala2_cycle/evaluate.py "
          f"{args.out} --temperatures 300 450 600")


if __name__ == "__main__":
    main()
