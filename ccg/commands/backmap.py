"""`ccg backmap`: atomistic frames for every CG frame of a trajectory or table."""

from __future__ import annotations

import argparse

import torch

import ccg
from ccg._checks import check_temperature
from ccg.backmapping import SELECT_MODES, sidecar_path
from ccg.commands._common import (
    add_overwrite,
    add_resources,
    apply_resources,
    check_number,
    check_output_file,
)


def add_parser(sub) -> None:
    """Register `ccg backmap`."""
    p = sub.add_parser(
        "backmap", help="backmap a CG trajectory to atoms",
        description="Draw atomistic frames consistent with each CG frame at temperature T from "
        "the trained flow, and write them as a trajectory (format by extension: "
        f"{', '.join(ccg.TrajectoryWriter.FORMATS)}) plus a CSV sidecar (OUT.csv, e.g. "
        "atoms.dcd.csv) with per-frame potential energy and log importance weight.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model.pt written by `ccg train`")
    p.add_argument("--cg", required=True, help="CG input: a trajectory mdtraj reads (atomistic, "
                   "or the CG atoms only for bead maps), or a CSV/NPY table of torsions")
    p.add_argument("--top", help="topology for coordinate-only formats (dcd, xtc, ...)")
    p.add_argument("--degrees", action="store_true", help="the CSV/NPY table is in degrees")
    p.add_argument("--temperature", type=float, required=True, help="T in K")
    p.add_argument("--samples-per-frame", type=int, default=1, help="K samples per CG frame")
    p.add_argument("--select", choices=SELECT_MODES, default="weighted",
                   help="per CG frame: one of the K drawn by weight, the best, or all K")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--minimize", action="store_true",
                   help="relax each frame with OpenMM, holding the CG coordinates fixed")
    p.add_argument("--chunk", type=int, default=1024, help="CG frames per chunk")
    p.add_argument("--out", required=True, help="output trajectory (.pdb, .dcd, .xtc, .h5)")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_resources(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_temperature(args.temperature, "--temperature")
    check_number(args.samples_per_frame, "--samples-per-frame", minimum=1)
    check_number(args.chunk, "--chunk", minimum=1)
    out = check_output_file(args.out, "--out", overwrite=args.overwrite,
                            suffixes=ccg.TrajectoryWriter.FORMATS)
    check_output_file(sidecar_path(out), "--out (its CSV sidecar)", overwrite=args.overwrite)
    device = apply_resources(args)
    model = ccg.load_model(args.model, device=device)
    z = ccg.read_cg_input(args.cg, model.cg_map, model.system, top=args.top,
                          degrees=args.degrees)
    result = ccg.backmap_to_file(model, z.to(torch.float32), args.temperature, out,
                                 samples_per_frame=args.samples_per_frame, select=args.select,
                                 seed=args.seed, chunk_frames=args.chunk, minimize=args.minimize,
                                 progress=not args.no_progress)
    print(f"wrote {result.trajectory} ({result.n_frames} frames from {result.n_cg_frames} CG "
          f"frames at {args.temperature} K, select={args.select}, K={args.samples_per_frame}) "
          f"and {result.sidecar}")
    return 0
