"""Reading CG frames from trajectories that mdtraj reads.

`read_cg_frames(path, cg_map, system, top=None)` returns z [N, cg_dim] (float64) from either

- an atomistic trajectory of the system (same atom count): z = cg_map.coarse_grain(x); or
- for bead maps, a trajectory of the CG atoms only, matched to the model's CG atoms by residue
  name, residue index order and atom name.
"""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import torch

from ccg._checks import check_finite

_NEEDS_TOPOLOGY = {".dcd", ".xtc", ".trr", ".nc", ".netcdf", ".binpos", ".mdcrd", ".crd"}


def load_trajectory(path: str | Path, top: str | Path | None = None) -> mdtraj.Trajectory:
    """mdtraj.load with clear errors for a missing file, a missing topology, or bad content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Trajectory file not found: {path}")
    if top is None and path.suffix.lower() in _NEEDS_TOPOLOGY:
        raise ValueError(
            f"{path.name} stores coordinates only; give its topology with --top FILE (a PDB of "
            "the same atoms)."
        )
    if top is not None and not Path(top).is_file():
        raise FileNotFoundError(f"Topology file not found: {top}")
    try:
        if top is None:
            return mdtraj.load(str(path))
        return mdtraj.load(str(path), top=str(top))
    except Exception as err:  # mdtraj raises many types for unreadable files
        raise ValueError(
            f"mdtraj could not read {path} ({type(err).__name__}: {err}). Check the format "
            "(by extension) and, for coordinate-only formats, the --top file."
        ) from None


def _atom_keys(topology: mdtraj.Topology, atoms) -> list[tuple[str, str]]:
    return [(topology.atom(a).residue.name, topology.atom(a).name) for a in atoms]


def read_cg_frames(path: str | Path, cg_map, system, top: str | Path | None = None
                   ) -> torch.Tensor:
    """CG coordinates z [N, cg_dim] (float64) of every frame of a trajectory file."""
    traj = load_trajectory(path, top)
    n_atoms = system.n_atoms
    xyz = torch.as_tensor(np.asarray(traj.xyz, dtype=np.float64))
    check_finite(xyz.reshape(xyz.shape[0], -1), f"coordinates in {Path(path).name}")
    if traj.n_atoms == n_atoms:
        return cg_map.coarse_grain(xyz).detach()
    cg_atoms = getattr(cg_map, "cg_atom_indices", None)
    if cg_atoms is None:
        raise ValueError(
            f"{Path(path).name} has {traj.n_atoms} atoms; this model's system has {n_atoms}. A "
            "torsion CG map needs atomistic frames of the same molecule."
        )
    want = _atom_keys(system.topology, cg_atoms)
    got = _atom_keys(traj.topology, range(traj.n_atoms))
    if got != want:
        missing = [f"{r}:{a}" for r, a in want if (r, a) not in got][:5]
        raise ValueError(
            f"The atoms of {Path(path).name} ({traj.n_atoms}) do not match the model's CG atoms "
            f"({len(want)}: {', '.join(f'{r}:{a}' for r, a in want[:6])}, ...). Expected the "
            f"same residue and atom names in the same order; missing or different: "
            f"{missing or 'order differs'}. Give the atomistic trajectory instead, or "
            "select the CG atoms with mdtraj (traj.atom_slice) first."
        )
    return xyz.reshape(xyz.shape[0], -1).detach()
