"""`ccg free-energy`: F(z, T) of a trained model on a torsion grid or at CG frames.

Writes an npz (atomically) in the layout of `ccg.free_energy.surface` (F_kT, F_kT_err, ess,
grid or z, mean_energy_kjmol, mean_force, temperature_k), and optionally a PNG.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

import ccg
from ccg._checks import check_temperature
from ccg.constants import KB_KJMOL_PER_K
from ccg.io.atomic import check_output_path


def add_parser(sub) -> None:
    """Register `ccg free-energy`."""
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
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="fes.npz", help="output npz")
    p.add_argument("--plot", help="also write a PNG (surface for 2-D, profile for 1-D)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_temperature(args.temperature, "--temperature")
    out = check_output_path(args.out)
    if args.plot:
        check_output_path(args.plot)
    if ccg.file_kind(args.model) == "cg":
        model = ccg.load_cg_model(args.model)
        t_min, t_max = model.t_range
        if not t_min <= args.temperature <= t_max:
            warnings.warn(f"T = {args.temperature} K is outside the CG model's fitted range "
                          f"[{t_min}, {t_max}] K; F_theta there is an extrapolation.",
                          stacklevel=2)
        z = _frames(args, model)
        arrays = ccg.cg_model_arrays(model, args.temperature, z=z, n_grid=args.grid)
        ccg.save_free_energy(out, arrays)
        print(f"wrote {out}: F_theta at {arrays['F_kT'].size} points, {args.temperature} K, "
              f"F range {arrays['F_kT'].max():.1f} kT, ensemble spread (median) "
              f"{np.median(arrays['F_kT_err']):.3f} kT")
    else:
        model = ccg.load_model(args.model)
        z = _frames(args, model)
        arrays = ccg.free_energy_arrays(model, args.temperature, z=z, n_grid=args.grid,
                                        n_samples=args.samples,
                                        generator=torch.Generator().manual_seed(args.seed),
                                        progress=not args.no_progress)
        ccg.save_free_energy(out, arrays)
        ess = arrays["ess"]
        kt = KB_KJMOL_PER_K * args.temperature
        print(f"wrote {out}: {ess.size} points at {args.temperature} K (k_B T = {kt:.3f} "
              f"kJ/mol), median ESS {np.median(ess):.2f}, F range {arrays['F_kT'].max():.1f} kT")
    if args.plot:
        ccg.plot_free_energy(arrays, args.plot, names=model.cg_map.cg_names)
        print(f"plot: {args.plot}")
    return 0


def _frames(args: argparse.Namespace, model) -> torch.Tensor | None:
    """The CG frames of --frames (None: the grid)."""
    if not args.frames:
        return None
    return ccg.read_cg_frames(args.frames, model.cg_map, model.system, top=args.top)
