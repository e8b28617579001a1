"""Helpers shared by the scripts of this folder (a module, not a script): the grid-ESS
measure of evaluate.py, the replica-exchange populated set, readable names of the flow's r
dims, and peptide-bond dihedrals.

Scripts here import it as `from common import ...` (Python puts the script's folder first on
sys.path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import ccg


def reference_populated(folder: Path, temperature: float, grid: int,
                        cutoff_kt: float) -> torch.Tensor:
    """[grid, grid] bool: F of the replica-exchange reference FOLDER/remd_ref_<T>K.npz below
    `cutoff_kt` at the grid points (the reference has 3x finer bins; the grid's points are
    the centres of every third bin)."""
    path = Path(folder) / f"remd_ref_{temperature:.0f}K.npz"
    if not path.is_file():
        raise SystemExit(f"No reference for {temperature:.0f} K: expected {path} (made by "
                         "experiments/ala2_reference/run_remd.py and analyze.py).")
    f_kt = np.load(path)["F_kT"]
    if f_kt.shape != (3 * grid, 3 * grid):
        raise SystemExit(f"Expected a {3 * grid} x {3 * grid} reference for a {grid} x {grid} "
                         f"grid; got {f_kt.shape} in {path}.")
    centres = f_kt[1::3, 1::3]
    return torch.from_numpy(centres - centres.min() < cutoff_kt)


def populated_ess(model, temperature: float, *, grid: int = 12, samples: int = 256,
                  seed: int = 0, cutoff_kt: float = 4.0,
                  reference_dir: Path | None = None) -> dict:
    """Median and 10th percentile of the per-point ESS over the populated grid points at one
    temperature (K): {"populated", "median_ess", "p10_ess", "mask" ([grid, grid] bool)}.
    Populated: the model's own F below `cutoff_kt`, or with `reference_dir` the reference's."""
    surface = ccg.free_energy_surface(model, temperature, n_grid=grid, n_samples=samples,
                                      generator=torch.Generator().manual_seed(seed))
    ess = surface.estimates.ess.reshape(surface.shape)
    populated = surface.f_kt < cutoff_kt
    if reference_dir is not None:
        populated = reference_populated(reference_dir, temperature, grid, cutoff_kt)
    sel = ess[populated]
    return {"populated": int(populated.sum()), "median_ess": float(sel.median()),
            "p10_ess": float(torch.quantile(sel, 0.1)), "mask": populated}


def dim_names(model) -> list[str]:
    """A readable name per r dim of a torsion-map model: 'bond i', 'angle i', or the placed
    atom of a torsion with the two atoms it turns about."""
    cg_map = model.cg_map
    if not isinstance(cg_map, ccg.TorsionMap):
        raise SystemExit(f"Expected a model with a torsion CG map; got {type(cg_map).__name__}.")
    layout, rows = cg_map.layout, cg_map.zmatrix.rows
    atoms = [f"{a.residue.name}-{a.name}" for a in model.system.topology.atoms]
    first = layout.n_bonds + layout.n_angles
    names = []
    for d, kind in enumerate(layout.r_kinds):
        if d < first:
            names.append(f"{kind} {d}")
        else:
            row = rows[layout.r_torsion_rows[d - first]]
            names.append(f"{kind} of {atoms[row[0]]} about {atoms[row[1]]}-{atoms[row[2]]}")
    return names


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dihedral a-b-c-d of positions [..., 3] in rad, in (-pi, pi] (mdtraj's convention)."""
    b1, b2, b3 = b - a, c - b, d - c
    c1 = torch.linalg.cross(b2, b3, dim=-1)
    c2 = torch.linalg.cross(b1, b2, dim=-1)
    p1 = (b1 * c1).sum(-1) * torch.linalg.vector_norm(b2, dim=-1)
    return torch.atan2(p1, (c1 * c2).sum(-1))
