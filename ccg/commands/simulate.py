"""`ccg simulate`: CG Langevin dynamics on a fitted F_theta(z, T), written for `ccg backmap`."""

from __future__ import annotations

import argparse

import torch

import ccg
from ccg._checks import check_temperature
from ccg.commands._common import (
    add_overwrite,
    add_resources,
    apply_resources,
    check_number,
    check_output_file,
)
from ccg.errors import ConfigError

TABLES = (".npy", ".csv")
"""Output extensions for CG frames as a table (any CG map)."""


def add_parser(sub) -> None:
    """Register `ccg simulate`."""
    p = sub.add_parser(
        "simulate", help="CG Langevin dynamics on a CG model (cg_model.pt from `ccg cycle`)",
        description="Overdamped Langevin dynamics of many independent walkers on F_theta(z, T) "
        "(Metropolis-adjusted unless --no-metropolis, so the frames sample exp(-F/kT) exactly). "
        "Torsions wrap onto [-pi, pi). Output by extension: .npy or .csv (one row per frame, "
        "radians for torsions; `ccg backmap --cg` reads both), or for bead maps any mdtraj "
        "trajectory format of the CG atoms. Frames are written walker by walker.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="cg_model.pt written by `ccg cycle`")
    p.add_argument("--temperature", type=float, required=True, help="T in K")
    p.add_argument("--steps", type=int, required=True, help="Langevin steps per walker")
    p.add_argument("--walkers", type=int, default=16, help="independent walkers")
    p.add_argument("--save-every", type=int, default=100, help="steps between saved frames")
    p.add_argument("--dt", type=float, default=0.01, help="time step (ps)")
    p.add_argument("--diffusion", type=float, default=0.25,
                   help="diffusion coefficient D (CG unit^2/ps); D sets the clock")
    p.add_argument("--no-metropolis", action="store_true", help="plain Euler-Maruyama steps")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, help="cg.npy, cg.csv, or (bead maps) cg.dcd/.h5/...")
    p.add_argument("--top", help="bead maps with coordinate-only formats: also write the CG "
                   "topology (PDB) here")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_resources(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_temperature(args.temperature, "--temperature")
    for flag, value in (("--steps", args.steps), ("--walkers", args.walkers),
                        ("--save-every", args.save_every)):
        check_number(value, flag, minimum=1)
    check_number(args.dt, "--dt", above=0)
    check_number(args.diffusion, "--diffusion", above=0)
    out = check_output_file(args.out, "--out", overwrite=args.overwrite)
    if args.top:
        check_output_file(args.top, "--top", overwrite=args.overwrite, suffixes=(".pdb",))
    device = apply_resources(args)
    cg_model = ccg.load_cg_model(args.model).to(device)
    cg_model.cg_map.to(device)
    if out.suffix.lower() not in TABLES and not isinstance(cg_model.cg_map, ccg.AtomSubsetMap):
        raise ConfigError(f"--out {out.name}: a torsion/coordinate CG model writes a table "
                          f"({', '.join(TABLES)}); trajectory formats need a bead map.")
    gen = torch.Generator(device).manual_seed(args.seed)
    result = ccg.simulate(cg_model, ccg.default_start(cg_model, args.walkers, gen),
                          args.temperature, args.steps, dt_ps=args.dt, diffusion=args.diffusion,
                          save_every=args.save_every, metropolis=not args.no_metropolis,
                          generator=gen, progress=not args.no_progress)
    table = result.flat().cpu()
    ccg.write_cg_frames(out, table, cg_model.cg_map, cg_model.system, top=args.top)
    print(f"wrote {out}: {table.shape[0]} frames ({args.walkers} walkers x "
          f"{result.frames.shape[0]}) at {args.temperature} K, acceptance "
          f"{result.acceptance:.2f}")
    return 0
