"""Score a cycle's CG model F_theta(z, T) of the torus-wells system against the exact answers.

    python cycle_compare.py runs/d4_cycle/cg_model.pt --plot cycle_d4.png

At each temperature (including ones the cycle never estimated at):

- F_theta against the exact F on z drawn from the exact p(z | T): the RMSE of beta F after the
  best constant shift, the RMS error of the mean force (kJ/mol/rad) beside the RMS of the exact
  mean force, and the RMS error of <U>_z in k_B T after the best shift (the fit pins F_theta
  with one free constant per temperature, whose temperature derivative shifts <U>_z);
- CG dynamics on F_theta (`ccg.simulate`, MALA, walkers started from exact samples): each
  coordinate's population of its z > 0 well ("+") and the most populated joint states, with
  standard errors from the spread between walkers, against the exact populations;
- with --plot, each coordinate's 1-D free energy from the walkers' histogram against the exact
  projection, at the lowest and highest temperature.
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import torch

import ccg


def field_errors(cg_model, system, temperature_k: float, n: int,
                 generator: torch.Generator) -> dict:
    """F_theta's errors against the exact F, mean force and <U>_z at exact samples z ~ p(z | T)."""
    z = system.sample(n, temperature_k, generator)[:, :system.cg_dim]
    kt = ccg.KB_KJMOL_PER_K * temperature_k
    obs = cg_model.observables(z, temperature_k)
    beta_f = system.free_energy(z, temperature_k) / kt
    diff = (obs["beta_f"] - beta_f).numpy()
    force = system.mean_force(z, temperature_k)
    u_diff = ((obs["mean_energy_kjmol"] - system.mean_energy(z, temperature_k)) / kt).numpy()
    return {
        "rmse_kt": float(np.sqrt(((diff - diff.mean()) ** 2).mean())),
        "force_rms_err": float((obs["mean_force"] - force).pow(2).mean().sqrt()),
        "force_rms": float(force.pow(2).mean().sqrt()),
        "u_rms_err_kt": float(np.sqrt(((u_diff - u_diff.mean()) ** 2).mean())),
        "u_offset_kt": float(u_diff.mean()),
    }


def langevin_states(cg_model, system, temperature_k: float, walkers: int, steps: int,
                    generator: torch.Generator) -> tuple[np.ndarray, dict]:
    """Frames [walkers, n_saved, d] of MALA on F_theta from exact starts, and the populations
    {state: (population, standard error, exact)} of each coordinate's + well and of the joint
    states (every coordinate's sign)."""
    d = system.cg_dim
    start = system.sample(walkers, temperature_k, generator)[:, :d]
    run = ccg.simulate(cg_model, start, temperature_k, steps, save_every=10, generator=generator)
    frames = run.frames.transpose(0, 1).numpy()  # [walkers, n_saved, d]
    frames = frames[:, frames.shape[1] // 5:]  # drop the first fifth of each walker's frames
    plus = frames > 0.0
    rows = {}
    for i in range(d):
        per_walker = plus[:, :, i].mean(1)
        exact = system.box_population({i: (0.0, math.pi)}, temperature_k)
        rows[f"z{i} +"] = (per_walker.mean(), per_walker.std(ddof=1) / math.sqrt(walkers), exact)
    for signs in itertools.product("+-", repeat=d):
        hit = np.all(plus == np.array([s == "+" for s in signs]), axis=-1).mean(1)
        box = {i: (0.0, math.pi) if s == "+" else (-math.pi, 0.0) for i, s in enumerate(signs)}
        rows["".join(signs)] = (hit.mean(), hit.std(ddof=1) / math.sqrt(walkers),
                                system.box_population(box, temperature_k))
    return frames, rows


def plot_marginals(runs: dict[float, np.ndarray], system, path: str, n_bins: int = 36) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = system.cg_dim
    fig, axes = plt.subplots(1, d, figsize=(3.2 * d, 3.0), sharey=True)
    centres = -math.pi + (np.arange(n_bins) + 0.5) * 2 * math.pi / n_bins
    for (t, frames), colour in zip(sorted(runs.items()), ("tab:blue", "tab:red"), strict=False):
        for i, ax in enumerate(np.atleast_1d(axes)):
            exact = system.projection([i], t, n_bins)
            counts, _ = np.histogram(frames[..., i], bins=n_bins, range=(-math.pi, math.pi))
            with np.errstate(divide="ignore"):
                f = -np.log(counts / counts.sum())
            ax.plot(centres, exact - exact.min(), color=colour, lw=1.5, label=f"exact {t:g} K")
            ax.plot(centres, f - np.min(f), "o", color=colour, ms=3,
                    label=f"CG dynamics {t:g} K")
            ax.set_xlabel(f"z{i} (rad)")
    np.atleast_1d(axes)[0].set_ylabel("F / k_B T (1-D projection)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cg_model", help="cg_model.pt written by `ccg cycle`")
    p.add_argument("--temperatures", type=float, nargs="+",
                   default=[300.0, 400.0, 450.0, 500.0, 600.0])
    p.add_argument("--samples", type=int, default=8192, help="exact z per temperature")
    p.add_argument("--walkers", type=int, default=256)
    p.add_argument("--steps", type=int, default=4000, help="MALA steps per walker")
    p.add_argument("--top", type=int, default=5, help="joint states to print")
    p.add_argument("--plot", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    cg_model = ccg.load_cg_model(args.cg_model)
    system = cg_model.system
    if not isinstance(system, ccg.TorusDoubleWells):
        raise SystemExit(f"expected a torus-wells CG model; got {type(system).__name__}")
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{args.cg_model}: F_theta fitted over {cg_model.t_range} K, d = {system.cg_dim}")
    print("| T (K) | RMSE beta F (kT) | mean force RMS error / RMS (kJ/mol/rad) | <U>_z RMS "
          "error (kT), offset | populations (+ per coordinate): CG / exact | largest |z| |")
    print("|---|---|---|---|---|---|")
    runs = {}
    for t in args.temperatures:
        err = field_errors(cg_model, system, t, args.samples, generator)
        frames, rows = langevin_states(cg_model, system, t, args.walkers, args.steps, generator)
        if t in (min(args.temperatures), max(args.temperatures)):
            runs[t] = frames
        marg = ", ".join(f"{v[0]:.3f}±{v[1]:.3f} / {v[2]:.3f}"
                         for k, v in rows.items() if k.endswith(" +"))
        worst = max(abs(v[0] - v[2]) / v[1] for v in rows.values() if v[1] > 0)
        print(f"| {t:g} | {err['rmse_kt']:.3f} | {err['force_rms_err']:.2f} / "
              f"{err['force_rms']:.2f} | {err['u_rms_err_kt']:.3f}, {err['u_offset_kt']:+.2f} | "
              f"{marg} | {worst:.1f} |")
        joint = sorted(((k, v) for k, v in rows.items() if not k.endswith(" +")),
                       key=lambda kv: -kv[1][2])[:args.top]
        print("    top joint states (CG / exact): " + ", ".join(
            f"{k} {v[0]:.3f}±{v[1]:.3f} / {v[2]:.3f}" for k, v in joint))
    if args.plot:
        plot_marginals(runs, system, args.plot)


if __name__ == "__main__":
    main()
