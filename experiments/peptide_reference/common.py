"""Helpers of the peptide reference scripts: the ladder, backbone torsions and per-residue
Ramachandran histograms (the states are ccg's own, `ccg.ramachandran_groups`)."""

from __future__ import annotations

import math

import mdtraj
import numpy as np
import torch

import ccg

KB_KJ_PER_MOL_K = 0.0083144626181532
"""Boltzmann constant in kJ / (mol K) (R of the 2019 SI)."""

CENTRES_DEG = {"A": (-65.0, -40.0), "B": (-120.0, 130.0), "P": (-70.0, 145.0),
               "L": (60.0, 40.0)}
"""(phi, psi) in degrees at the centre of each Ramachandran region (A: alpha-R, B: beta,
P: PPII, L: alpha-L)."""


def state_centres(model, states) -> list[tuple[str, torch.Tensor]]:
    """(letters, z [cg_dim] float64 rad) for each state of a (phi, psi) model: every residue at
    the centre of its letter's region; a state names one letter per residue, or one for all.
    SystemExit naming the residues for a state of the wrong length or letters."""
    names = list(model.cg_map.cg_names)
    groups = ccg.ramachandran_groups(names)
    pairs = [ccg.resolve_dims(g.name.split("/"), names) for g in groups]
    rows = []
    for state in states:
        letters = state * len(pairs) if len(state) == 1 else state
        if len(letters) != len(pairs) or any(c not in CENTRES_DEG for c in letters):
            raise SystemExit(f"error: --states {state}: expected {len(pairs)} letters (or one) "
                             f"from {''.join(CENTRES_DEG)} for the residues "
                             f"{', '.join(g.name for g in groups)}")
        z = torch.zeros(model.cg_dim, dtype=torch.float64)
        for (i, j), code in zip(pairs, letters, strict=True):
            z[i], z[j] = (math.radians(a) for a in CENTRES_DEG[code])
        rows.append((letters, z))
    return rows

def default_ladder() -> np.ndarray:
    """300 -> 450 K geometric in 4 steps, 450 -> 600 K in 3 (8 temperatures, 450 K exact)."""
    low = 300.0 * 1.5 ** (np.arange(4) / 4)
    high = 450.0 * (600.0 / 450.0) ** (np.arange(4) / 3)
    return np.concatenate([low, high])


def backbone_torsions(topology) -> tuple[list[str], list[list[int]]]:
    """Every phi and psi mdtraj finds, named by residue number (1-based, caps included):
    ([names], [[a, b, c, d], ...]) ordered phi2, psi2, phi3, psi3, ..."""
    traj = mdtraj.Trajectory(np.zeros((1, topology.n_atoms, 3), np.float32), topology)
    out = []
    for kind, compute in (("phi", mdtraj.compute_phi), ("psi", mdtraj.compute_psi)):
        quads, _ = compute(traj)
        for quad in quads:
            residue = topology.atom(int(quad[2])).residue.index + 1   # the C-alpha's residue
            out.append((residue, kind, [int(a) for a in quad]))
    out.sort(key=lambda item: (item[0], item[1] != "phi"))
    return [f"{kind}{res}" for res, kind, _ in out], [quad for _, _, quad in out]


def dihedrals(xyz: np.ndarray, quads) -> np.ndarray:
    """Torsions (rad, (-pi, pi]) of atoms quads [k, 4] in xyz [..., n, 3] (mdtraj's sign)."""
    p = xyz[..., np.asarray(quads), :]
    b1, b2, b3 = (p[..., k + 1, :] - p[..., k, :] for k in range(3))
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)
    return np.arctan2(y, np.sum(n1 * n2, axis=-1))


def residue_pairs(names) -> list[tuple[int, int, int]]:
    """(residue, column of phi, column of psi) for residues with both torsions."""
    names = [str(n) for n in names]
    out = []
    for col, name in enumerate(names):
        if name.startswith("phi") and f"psi{name[3:]}" in names:
            out.append((int(name[3:]), col, names.index(f"psi{name[3:]}")))
    return out


def free_energy_2d(phi: np.ndarray, psi: np.ndarray, n_grid: int = 36) -> np.ndarray:
    """-log p on an n_grid x n_grid grid over [-pi, pi)^2 (kT, min 0; inf where empty)."""
    edges = np.linspace(-np.pi, np.pi, n_grid + 1)
    hist, _, _ = np.histogram2d(phi, psi, bins=(edges, edges))
    with np.errstate(divide="ignore"):
        f = -np.log(hist / hist.sum())
    return f - f[np.isfinite(f)].min()


def rmse_shifted(f_a: np.ndarray, f_b: np.ndarray, mask: np.ndarray) -> float:
    """RMSE of f_a - f_b over mask after the best constant shift (kT)."""
    mask = mask & np.isfinite(f_a) & np.isfinite(f_b)
    diff = f_a[mask] - f_b[mask]
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
