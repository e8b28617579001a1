"""`ccg simulate`: CG Langevin dynamics on a fitted F_theta(z, T), written for `ccg backmap`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ccg.io.atomic import atomic_path, check_output_path

TABLES = (".npy", ".csv")


def add_parser(sub) -> None:
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="cg.npy, cg.csv, or (bead maps) cg.dcd/.h5/...")
    p.add_argument("--top", help="bead maps with coordinate-only formats: also write the CG "
                   "topology (PDB) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _start(cg_model, n: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform on the torus for torsion maps; the reference structure's CG for bead maps."""
    d = cg_model.cg_dim
    if bool(cg_model.cg_map.z_circular.all()):
        return (torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * np.pi
    ref = getattr(cg_model.system, "reference_positions", None)
    if ref is not None:
        x = torch.as_tensor(np.asarray(ref), dtype=torch.float64).reshape(1, -1, 3)
        return cg_model.cg_map.coarse_grain(x).reshape(1, d).repeat(n, 1)
    low, high = (torch.as_tensor(b, dtype=torch.float64) for b in cg_model.system.cg_bounds)
    return low + (high - low) * torch.rand(n, d, generator=gen, dtype=torch.float64)


def run(args: argparse.Namespace) -> int:
    from ccg._checks import check_temperature
    from ccg.free_energy.langevin import simulate
    from ccg.io.cg_model_file import load_cg_model

    check_temperature(args.temperature, "--temperature")
    out = check_output_path(args.out)
    suffix = out.suffix.lower()
    cg_model = load_cg_model(args.model)
    beads = getattr(cg_model.cg_map, "cg_atom_indices", None)
    if suffix not in TABLES and beads is None:
        raise ValueError(f"Output {out.name}: a torsion/coordinate CG model writes a table "
                         f"({', '.join(TABLES)}); trajectory formats need a bead map.")
    gen = torch.Generator().manual_seed(args.seed)
    result = simulate(cg_model, _start(cg_model, args.walkers, gen), args.temperature,
                      args.steps, dt_ps=args.dt, diffusion=args.diffusion,
                      save_every=args.save_every, metropolis=not args.no_metropolis,
                      generator=gen, progress=not args.no_progress)
    table = result.flat().detach().cpu().numpy()
    if suffix == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, table)
    elif suffix == ".csv":
        names = list(getattr(cg_model.cg_map, "torsion_names", [])) or [
            f"z{i}" for i in range(table.shape[1])]
        with atomic_path(out) as tmp:
            np.savetxt(tmp, table, delimiter=",", header=",".join(names), comments="# ")
    else:
        _write_beads(cg_model, table, out, args.top)
    print(f"wrote {out}: {table.shape[0]} frames ({args.walkers} walkers x "
          f"{result.frames.shape[0]}) at {args.temperature} K, acceptance "
          f"{result.acceptance:.2f}")
    return 0


def _write_beads(cg_model, table: np.ndarray, out: Path, top: str | None) -> None:
    import mdtraj

    topology = cg_model.system.topology
    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    sub = topology.subset(np.asarray(cg_model.cg_map.cg_atom_indices))
    traj = mdtraj.Trajectory(table.reshape(table.shape[0], sub.n_atoms, 3), sub)
    with atomic_path(out) as tmp:
        traj.save(str(tmp))
    if top:
        with atomic_path(top, suffix=".pdb") as tmp:
            traj[0].save_pdb(str(tmp))
