"""`ccg free-energy`: F(z, T) of a trained model on a torsion grid or at CG frames.

Writes an npz (atomically) with
    F_kT [(N,)*d]       F / k_B T, axes in the map's CG order ('ij'), minimum shifted to 0
    F_kT_err            its standard error (delta method)
    ess                 normalized effective sample size per point
    grid [d, N]         bin centers -pi + (i + 1/2) 2 pi / N (rad)
    mean_energy_kjmol   <U>_z
    mean_force          grad_z F [(N,)*d, d] in kJ/mol/rad
    temperature_k       T
With --frames, the arrays are per frame ([n_frames], [n_frames, cg_dim]) and `z` replaces grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.io.atomic import atomic_path, check_output_path


def add_parser(sub) -> None:
    """Register `ccg free-energy` on an argparse subparsers object."""
    p = sub.add_parser(
        "free-energy",
        help="free energy F(z, T) of a trained model on a grid or at CG frames",
        description="Pointwise importance-sampling estimates of F(z, T), its standard error, "
        "ESS, <U>_z and the mean force, on the torsion grid of a (phi, psi) model or at the CG "
        "frames of a trajectory (--frames).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="model.pt written by `ccg train` (importance sampling), or "
                   "cg_model.pt written by `ccg cycle` (F_theta evaluated directly)")
    p.add_argument("--temperature", type=float, required=True, help="T in K")
    p.add_argument("--grid", type=int, default=36, help="bins per torsion")
    p.add_argument("--samples", type=int, default=256, help="flow samples per point")
    p.add_argument("--frames", help="evaluate at the CG frames of this trajectory instead")
    p.add_argument("--top", help="topology for coordinate-only --frames formats")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fes.npz", help="output npz")
    p.add_argument("--plot", help="also write a PNG (surface for 2-D, profile for 1-D)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ccg._checks import check_temperature
    from ccg.free_energy.estimators import estimate_free_energy
    from ccg.free_energy.surface import torsion_surface
    from ccg.io.cg_model_file import file_kind
    from ccg.io.model_file import load_model

    check_temperature(args.temperature, "--temperature")
    out = check_output_path(args.out)
    if args.plot:
        check_output_path(args.plot)
    if file_kind(args.model) == "cg":
        return _run_cg_model(args, out)
    model = load_model(args.model)
    gen = torch.Generator().manual_seed(args.seed)
    kt = KB_KJMOL_PER_K * args.temperature
    if args.frames:
        from ccg.io.trajectories import read_cg_frames

        z = read_cg_frames(args.frames, model.cg_map, model.system, top=args.top)
        est = estimate_free_energy(model, z.float(), args.temperature, n_samples=args.samples,
                                   mean_force=True, generator=gen,
                                   progress=not args.no_progress)
        arrays = {"F_kT": est.beta_f - est.beta_f.min(), "z": z}
        shape = lambda values: values  # noqa: E731  (per frame: nothing to reshape)
    else:
        surface = torsion_surface(model, args.temperature, n_grid=args.grid,
                                  n_samples=args.samples, mean_force=True, generator=gen,
                                  progress=not args.no_progress)
        est = surface.estimates
        arrays = {"F_kT": surface.f_kt, "grid": surface.grid}
        shape = surface.reshape
    arrays.update({
        "F_kT_err": shape(est.beta_f_err), "ess": shape(est.ess),
        "mean_energy_kjmol": shape(est.mean_energy_kjmol), "mean_force": shape(est.mean_force),
    })
    payload = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    payload["temperature_k"] = np.array(args.temperature)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
    ess = payload["ess"]
    print(f"wrote {out}: {ess.size} points at {args.temperature} K (k_B T = {kt:.3f} kJ/mol), "
          f"median ESS {np.median(ess):.2f}, F range {payload['F_kT'].max():.1f} kT")
    if args.plot:
        plot_free_energy(payload, args.plot, names=getattr(model.cg_map, "torsion_names", None))
        print(f"plot: {args.plot}")
    return 0


def _run_cg_model(args: argparse.Namespace, out: Path) -> int:
    """`ccg free-energy cg_model.pt`: F_theta on the grid (or at --frames), same npz layout;
    F_kT_err is the ensemble spread and ess is NaN (no sampling involved)."""
    import warnings

    from ccg.free_energy.surface import cg_model_surface
    from ccg.io.cg_model_file import load_cg_model

    cg_model = load_cg_model(args.model)
    t_min, t_max = cg_model.t_range
    if not t_min <= args.temperature <= t_max:
        warnings.warn(f"T = {args.temperature} K is outside the CG model's fitted range "
                      f"[{t_min}, {t_max}] K; F_theta there is an extrapolation.", stacklevel=2)
    if args.frames:
        from ccg.io.trajectories import read_cg_frames

        z = read_cg_frames(args.frames, cg_model.cg_map, cg_model.system, top=args.top).double()
        obs = cg_model.observables(z, args.temperature)
        payload = {
            "F_kT": (obs["beta_f"] - obs["beta_f"].min()).detach().numpy(), "z": z.numpy(),
            "F_kT_err": obs["beta_f_std"].detach().numpy(), "ess": np.full(len(z), np.nan),
            "mean_energy_kjmol": obs["mean_energy_kjmol"].detach().numpy(),
            "mean_force": obs["mean_force"].detach().numpy(),
            "temperature_k": np.array(args.temperature),
        }
    else:
        payload = cg_model_surface(cg_model, args.temperature, args.grid)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
    print(f"wrote {out}: F_theta at {payload['F_kT'].size} points, {args.temperature} K, "
          f"F range {payload['F_kT'].max():.1f} kT, ensemble spread (median) "
          f"{np.median(payload['F_kT_err']):.3f} kT")
    if args.plot:
        plot_free_energy(payload, args.plot, names=getattr(cg_model.cg_map, "torsion_names", None))
        print(f"plot: {args.plot}")
    return 0


def plot_free_energy(payload: dict, path: str | Path, *, names=None, vmax_kt: float = 12.0
                     ) -> Path:
    """Ramachandran-style surface (2-D) or profile (1-D) of F in kT, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = payload["F_kT"]
    if "grid" not in payload or f.ndim not in (1, 2):
        raise ValueError("Plots need a 1-D or 2-D torsion grid (not --frames).")
    grid = np.degrees(payload["grid"])
    names = list(names or ["z1", "z2"])
    fig, ax = plt.subplots(figsize=(5.4, 4.4))
    title = f"F(z) at {float(payload['temperature_k']):.0f} K"
    if f.ndim == 1:
        ax.errorbar(grid[0], f, yerr=payload["F_kT_err"], marker="o", ms=3)
        ax.set_xlabel(f"{names[0]} (deg)")
        ax.set_ylabel("F / k_B T")
    else:
        clipped = np.minimum(f, vmax_kt)
        mesh = ax.pcolormesh(grid[0], grid[1], clipped.T, shading="nearest", cmap="viridis",
                             vmin=0, vmax=vmax_kt)
        ax.contour(grid[0], grid[1], clipped.T, levels=np.arange(1, vmax_kt, 1), colors="w",
                   linewidths=0.4)
        fig.colorbar(mesh, ax=ax, label="F / k_B T")
        ax.set_xlabel(f"{names[0]} (deg)")
        ax.set_ylabel(f"{names[1]} (deg)")
        ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(path)
