"""Does F_theta fit the estimates of a `ccg cycle` run? Refit fresh models on a random 80 % of
the run's points and score them on those points and on the other 20 %.

    python experiments/peptide_reference/fit_check.py runs/cycle6d/cycle --fits 1500/64/3 6000/128/3

Per fit (steps / hidden width / layers, four members, the cycle's loss) and temperature: the
RMS error of beta F_theta after the best shift (kT) and the reduced chi-square of values and
mean forces, on the fitted points and on the held-out ones (`ccg.held_out_scores`). A fit whose
error on its own points stays far above their standard errors (chi-square >> 1) is not short of
data: the estimates disagree with each other (values, forces, <U>) by more than their error
bars say, or the network cannot represent F.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import ccg


def _scores(model, data) -> str:
    return "; ".join(f"{s.temperature_k:g} K {s.rms_kt:.2f} kT (chi2 {s.chi2_values:.0f} / "
                     f"{s.chi2_forces:.0f})" for s in ccg.held_out_scores(model, data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="folder of a `ccg cycle` run (cycle_state.pt, cg_model.pt)")
    parser.add_argument("--fits", nargs="+", default=["1500/64/3"],
                        help="steps/hidden/layers of each refit")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of points held out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    state = torch.load(run / "cycle_state.pt", weights_only=True)
    data = ccg.ObservableSet(**state["data"])
    old = ccg.load_cg_model(run / "cg_model.pt")
    gen = torch.Generator().manual_seed(args.seed)
    held = torch.rand(len(data), generator=gen) < args.held_out
    fitted, test = data.select(~held), data.select(held)
    print(f"{run}: {len(data)} points ({int(held.sum())} held out), median ESS "
          f"{float(data.ess.median()):.2f}", flush=True)
    for spec in args.fits:
        steps, hidden, layers = (int(v) for v in spec.split("/"))
        torch.manual_seed(args.seed)
        model = ccg.FreeEnergyModel(old.cg_map, t_ref=old.t_ref, t_range=old.t_range,
                                    hidden=hidden, n_layers=layers, n_members=4).double()
        start = time.perf_counter()
        ccg.fit_free_energy_model(model, fitted, ccg.FitConfig(steps=steps))
        print(f"{steps} steps, hidden {hidden}, {layers} layers "
              f"({time.perf_counter() - start:.0f} s)")
        print(f"  fitted points: {_scores(model, fitted)}")
        print(f"  held out:      {_scores(model, test)}", flush=True)


if __name__ == "__main__":
    main()
