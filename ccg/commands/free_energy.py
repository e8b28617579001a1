"""`ccg free-energy`: F(z, T) of a trained model on a torsion grid, at CG frames, or projected
onto one or two CG coordinates (--project, any number of CG dimensions).

Writes an npz (atomically) in the layout of `ccg.free_energy.surface` (F_kT, F_kT_err, ess,
grid or z, mean_energy_kjmol, mean_force, temperature_k; with --project the arrays of
`Projection.as_arrays`), and optionally a picture.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

import ccg
from ccg._checks import check_temperature
from ccg.commands._common import (
    add_overwrite,
    add_resources,
    apply_resources,
    check_number,
    check_output_file,
    check_plot_file,
)
from ccg.commands._joint import (
    add_joint_arguments,
    check_joint_arguments,
    draw_joint,
    load_flow_model,
)
from ccg.constants import KB_KJMOL_PER_K
from ccg.errors import ConfigError

MAX_GRID_DIMS = 2
"""A grid is for 1 or 2 CG dimensions; more go through --frames."""


def add_parser(sub) -> None:
    """Register `ccg free-energy`."""
    p = sub.add_parser(
        "free-energy",
        help="free energy F(z, T) of a trained model on a grid or at CG frames",
        description="Pointwise importance-sampling estimates of F(z, T), its standard error, "
        "ESS, <U>_z and the mean force, on the torsion grid of a (phi, psi) model or at the CG "
        "frames of a trajectory (--frames); or, for any number of CG torsions, F projected onto "
        "one or two of them by reweighting joint samples (--project).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="model.pt written by `ccg train` (importance sampling), or "
                   "cg_model.pt written by `ccg cycle` (F_theta evaluated directly)")
    p.add_argument("--temperature", type=float, required=True, help="T in K")
    p.add_argument("--grid", type=int, default=36, help="bins per torsion")
    p.add_argument("--samples", type=int, default=256, help="flow samples per point")
    p.add_argument("--frames", help="evaluate at the CG frames of this trajectory instead")
    p.add_argument("--top", help="topology for coordinate-only --frames formats")
    p.add_argument("--project", metavar="A[,B]",
                   help="project F onto one or two CG coordinates instead (names as the map "
                   "reports them, e.g. phi_0,psi_0, or indices, e.g. 0,1) by reweighting joint "
                   "samples; --grid bins per axis; works for any number of CG coordinates")
    add_joint_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="fes.npz", help="output npz")
    p.add_argument("--plot", help="also write a picture (.png, .pdf, .svg; surface for 2-D, "
                   "profile for 1-D)")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_resources(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_temperature(args.temperature, "--temperature")
    check_number(args.grid, "--grid", minimum=2)
    check_number(args.samples, "--samples", minimum=2)
    out = check_output_file(args.out, "--out", overwrite=args.overwrite, suffixes=(".npz",))
    if args.plot:
        check_plot_file(args.plot, "--plot", overwrite=args.overwrite)
    device = apply_resources(args)
    if args.project:
        return _run_projection(args, out, device)
    if ccg.file_kind(args.model) == "cg":
        model = ccg.load_cg_model(args.model)
        z = _frames_or_grid(args, model)
        t_min, t_max = model.t_range
        if not t_min <= args.temperature <= t_max:
            warnings.warn(f"T = {args.temperature} K is outside the CG model's fitted range "
                          f"[{t_min}, {t_max}] K; F_theta there is an extrapolation.",
                          stacklevel=2)
        arrays = ccg.cg_model_arrays(model, args.temperature, z=z, n_grid=args.grid)
        ccg.save_free_energy(out, arrays)
        print(f"wrote {out}: F_theta at {arrays['F_kT'].size} points, {args.temperature} K, "
              f"F range {arrays['F_kT'].max():.1f} kT, ensemble spread (median) "
              f"{np.median(arrays['F_kT_err']):.3f} kT")
    else:
        model = ccg.load_model(args.model, device=device)
        z = _frames_or_grid(args, model)
        arrays = ccg.free_energy_arrays(model, args.temperature, z=z, n_grid=args.grid,
                                        n_samples=args.samples,
                                        generator=torch.Generator(device).manual_seed(args.seed),
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


def _run_projection(args: argparse.Namespace, out, device: torch.device) -> int:
    """--project: F on a --grid (x --grid) grid of one or two CG coordinates."""
    if args.frames:
        raise ConfigError("--project reweights joint samples over the whole CG space; it does "
                          "not take --frames. Drop one of them.")
    check_number(args.joint_samples, "--joint-samples", minimum=2)
    check_number(args.pilot_samples, "--pilot-samples", minimum=2)
    check_joint_arguments(args)
    model = load_flow_model(args.model, device, "--project")
    try:
        dims = ccg.resolve_dims(args.project, model.cg_map.cg_names)
    except ValueError as err:
        raise ConfigError(f"--project {args.project}: {err}") from None
    samples = draw_joint(model, args, device)
    proj = ccg.project_free_energy(samples, dims, n_bins=args.grid)
    arrays = proj.as_arrays()
    ccg.save_free_energy(out, arrays)
    finite = np.isfinite(proj.f_kt)
    low = finite & (proj.shifted < 4)
    print(f"wrote {out}: F projected onto {', '.join(proj.names)} on {proj.f_kt.size} bins at "
          f"{args.temperature} K; {int(finite.sum())} bins visited, median SE "
          f"{np.median(proj.f_kt_err[low]):.3f} kT where F < 4 kT, F range "
          f"{proj.shifted[finite].max():.1f} kT")
    if args.plot:
        ccg.plot_free_energy(arrays, args.plot, names=list(proj.names))
        print(f"plot: {args.plot}")
    return 0


def _frames_or_grid(args: argparse.Namespace, model) -> torch.Tensor | None:
    """The CG frames of --frames, or None for the grid (checked: a torsion map of at most
    MAX_GRID_DIMS dimensions; --plot needs the grid)."""
    if args.frames:
        if args.plot:
            raise ConfigError("--plot draws a grid surface; with --frames there is none. Drop "
                              "--plot, or drop --frames to evaluate on the grid.")
        return ccg.read_cg_frames(args.frames, model.cg_map, model.system, top=args.top)
    if not bool(model.cg_map.z_circular.all()):
        raise ConfigError("A grid needs a torsion CG map (all CG coordinates periodic); this "
                          "model's map has Cartesian/linear CG coordinates. Evaluate it at CG "
                          "frames instead: --frames FILE.")
    d = model.cg_dim
    if d > MAX_GRID_DIMS:
        raise ConfigError(
            f"This model has {d} CG coordinates ({', '.join(model.cg_map.cg_names)}): a grid of "
            f"--grid {args.grid} bins each is {args.grid}^{d} = {args.grid ** d:,} points. Grids "
            f"are for 1 or 2 CG dimensions; project onto one or two of them instead (--project "
            f"{','.join(model.cg_map.cg_names[:2])}), or evaluate at CG frames (--frames FILE, "
            "e.g. a trajectory or `ccg simulate` output).")
    return None
