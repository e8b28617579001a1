"""CG frames and atomistic trajectories in and out, through mdtraj.

`read_cg_frames(path, cg_map, system, top=None)` returns z [N, cg_dim] (float64) from either

- an atomistic trajectory of the system (same atom count): z = cg_map.coarse_grain(x); or
- for bead maps, a trajectory of the CG atoms only, matched to the model's CG atoms by residue
  name, residue index order and atom name.

`read_cg_input` also reads tables of torsions (CSV / NPY, one row per frame);
`write_cg_frames` writes CG frames as such a table or, for bead maps, as a trajectory of the CG
atoms; `TrajectoryWriter` streams atomistic frames to pdb, dcd, xtc or h5.
"""

from __future__ import annotations

from pathlib import Path

import mdtraj
import mdtraj.formats as mdf
import numpy as np
import torch

from ccg._checks import check_finite
from ccg.io.atomic import atomic_path
from ccg.mapping.base import CGMap
from ccg.mapping.beads import AtomSubsetMap

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
    if not isinstance(cg_map, AtomSubsetMap):
        raise ValueError(
            f"{Path(path).name} has {traj.n_atoms} atoms; this model's system has {n_atoms}. A "
            "torsion CG map needs atomistic frames of the same molecule."
        )
    want = _atom_keys(system.topology, cg_map.cg_atom_indices)
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


class TrajectoryWriter:
    """Appends frames to an mdtraj-format file chosen by extension (pdb, dcd, xtc, h5)."""

    FORMATS = (".pdb", ".dcd", ".xtc", ".h5")

    def __init__(self, path: str | Path, topology: mdtraj.Topology):
        path = Path(path)
        self.suffix = path.suffix.lower()
        self.topology = topology
        self.model_index = 0
        if self.suffix == ".pdb":
            self.handle = mdf.PDBTrajectoryFile(str(path), "w")
        elif self.suffix == ".dcd":
            self.handle = mdf.DCDTrajectoryFile(str(path), "w")
        elif self.suffix == ".xtc":
            self.handle = mdf.XTCTrajectoryFile(str(path), "w")
        else:
            self.handle = mdf.HDF5TrajectoryFile(str(path), "w")
            self.handle.topology = topology

    def write(self, xyz_nm: np.ndarray) -> None:
        if self.suffix == ".pdb":
            for frame in xyz_nm:
                self.model_index += 1
                self.handle.write(10.0 * frame, self.topology, modelIndex=self.model_index)
        elif self.suffix == ".dcd":
            self.handle.write(10.0 * xyz_nm)
        elif self.suffix == ".xtc":
            self.handle.write(xyz_nm)
        else:
            self.handle.write(coordinates=xyz_nm)

    def close(self) -> None:
        self.handle.close()


TABLES = (".csv", ".npy", ".txt")
"""Extensions of CG tables (one row per frame, one column per CG coordinate)."""


def read_cg_input(path: str | Path, cg_map: CGMap, system, *, top: str | Path | None = None,
                  degrees: bool = False) -> torch.Tensor:
    """CG frames z [N, cg_dim] (float64) from a trajectory (`read_cg_frames`) or, for torsion
    maps, a CSV/NPY table (radians, or degrees with `degrees`; wrapped to [-π, π))."""
    path = Path(path)
    if path.suffix.lower() in TABLES:
        if not path.is_file():
            raise FileNotFoundError(f"CG table not found: {path}")
        if isinstance(cg_map, AtomSubsetMap):
            raise ValueError("A bead-map model takes CG trajectories (pdb, dcd with --top, ...), "
                             "not a CSV/NPY table.")
        try:
            table = (np.load(path) if path.suffix.lower() == ".npy"
                     else np.loadtxt(path, delimiter=",", ndmin=2))
        except ValueError as err:
            raise ValueError(f"Could not read the CG table {path}: {err}") from None
        table = np.atleast_2d(np.asarray(table, dtype=np.float64))
        if table.shape[1] != cg_map.cg_dim:
            raise ValueError(
                f"Expected {cg_map.cg_dim} columns (one per CG coordinate: "
                f"{', '.join(cg_map.cg_names)}) in {path.name}; got {table.shape[1]}.")
        if degrees:
            table = np.radians(table)
        z = torch.as_tensor(table)
        check_finite(z, f"CG values in {path.name}")
        return torch.remainder(z + np.pi, 2 * np.pi) - np.pi
    return read_cg_frames(path, cg_map, system, top=top)


def write_cg_frames(path: str | Path, z: torch.Tensor | np.ndarray, cg_map: CGMap, system, *,
                    top: str | Path | None = None) -> Path:
    """Write CG frames z [N, cg_dim] atomically, in the format of `path`'s extension.

    .npy or .csv: a table, one row per frame (radians for torsions; the CSV header names the
    CG coordinates), which `read_cg_input` reads back. Bead maps can also write any mdtraj
    trajectory format of the CG atoms (with `top`, a PDB of the CG atoms for coordinate-only
    formats).
    """
    path = Path(path)
    table = np.asarray(z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else z)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, table)
    elif suffix == ".csv":
        with atomic_path(path) as tmp:
            np.savetxt(tmp, table, delimiter=",", header=",".join(cg_map.cg_names),
                       comments="# ")
    elif isinstance(cg_map, AtomSubsetMap):
        sub = system.topology.subset(np.asarray(cg_map.cg_atom_indices))
        traj = mdtraj.Trajectory(table.reshape(table.shape[0], sub.n_atoms, 3), sub)
        with atomic_path(path) as tmp:
            traj.save(str(tmp))
        if top:
            with atomic_path(top, suffix=".pdb") as tmp:
                traj[0].save_pdb(str(tmp))
    else:
        raise ValueError(f"Output {path.name}: a torsion/coordinate CG model writes a table "
                         f"(.npy, .csv); trajectory formats need a bead map.")
    return path
