"""`ccg backmap`: atomistic frames for every CG frame of a trajectory or table."""

from __future__ import annotations

import argparse

import torch

import ccg
from ccg.backmapping import SELECT_MODES
from ccg.io.atomic import check_output_path


def add_parser(sub) -> None:
    """Register `ccg backmap`."""
    p = sub.add_parser(
        "backmap", help="backmap a CG trajectory to atoms",
        description="Draw atomistic frames consistent with each CG frame at temperature T from "
        "the trained flow, and write them as a trajectory (format by extension: "
        f"{', '.join(ccg.TrajectoryWriter.FORMATS)}) plus a CSV sidecar with per-frame potential "
        "energy and log importance weight.",
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_path(args.out)
    if out.suffix.lower() not in ccg.TrajectoryWriter.FORMATS:
        raise ValueError(f"Unsupported output format {out.suffix!r}; use one of "
                         f"{list(ccg.TrajectoryWriter.FORMATS)}.")
    model = ccg.load_model(args.model)
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
