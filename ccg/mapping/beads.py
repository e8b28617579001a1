"""`AtomSubsetMap`: CG beads = a subset of the atoms (heavy atoms, backbone, a list)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ccg.errors import ConfigError
from ccg.mapping.base import CG_MAPS, CGMap, as_reference_xyz, check_topology, register_map
from ccg.mapping.graph import MolGraph, components, graph_from_bonds, graph_from_topology
from ccg.mapping.split import ICSplit
from ccg.mapping.zmatrix import InternalCoordinates, ZMatrix

FEATURE_BOND_SCALE_NM = 0.01
"""cg_features: CG bond lengths enter as (b − b_ref) / 0.01 nm."""
FEATURE_ANGLE_SCALE_RAD = 0.1
"""cg_features: CG angles enter as (θ − θ_ref) / 0.1 rad."""
_SELECTIONS = ("heavy", "backbone")


def resolve_cg_atoms(topology, cg_atoms: Sequence[int] | str) -> list[int]:
    """Sorted CG atom indices from a list or "heavy" / "backbone" (mdtraj's selection)."""
    n = topology.n_atoms
    if isinstance(cg_atoms, str):
        if cg_atoms == "heavy":
            idx = [a.index for a in topology.atoms
                   if a.element is None or a.element.atomic_number != 1]
        elif cg_atoms == "backbone":
            idx = [int(a) for a in topology.select("backbone")]
        else:
            raise ValueError(f'Unknown cg_atoms selection "{cg_atoms}". Must be one of '
                             f"{list(_SELECTIONS)} or a list of atom indices.")
    else:
        try:
            raw = [a for a in np.asarray(cg_atoms).reshape(-1).tolist()]
        except (TypeError, ValueError):
            raise TypeError(f"Expected cg_atoms as a list of atom indices or one of "
                            f"{list(_SELECTIONS)}; got {type(cg_atoms).__name__}.") from None
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in raw):
            raise TypeError(f"Expected integer atom indices in cg_atoms; got {raw[:10]}.")
        bad = [a for a in raw if not 0 <= a < n]
        if bad:
            raise ValueError(f"cg_atoms must be atom indices in [0, {n}); got {bad[:10]}.")
        if len(set(raw)) != len(raw):
            dup = sorted({a for a in raw if raw.count(a) > 1})
            raise ValueError(f"cg_atoms has duplicate indices {dup}.")
        idx = raw
    idx = sorted(idx)
    if len(idx) < 3:
        raise ValueError(f"Expected at least 3 CG atoms (a rigid frame); got {len(idx)}: {idx}.")
    if len(idx) == n:
        raise ValueError(f"cg_atoms covers all {n} atoms: nothing is left to backmap.")
    return idx


def cg_graph(graph: MolGraph, cg: Sequence[int], xyz: np.ndarray) -> MolGraph:
    """Graph over the CG atoms (0..n_cg-1): CG atoms joined by a path through non-CG atoms;
    separate fragments are joined at their closest pair in the reference structure."""
    pos = {a: m for m, a in enumerate(cg)}
    edges = set()
    for a in cg:
        seen, queue = {a}, deque([a])
        while queue:
            for b in graph.adjacency[queue.popleft()]:
                if b in seen:
                    continue
                seen.add(b)
                if b in pos:
                    edges.add(tuple(sorted((pos[a], pos[b]))))
                else:
                    queue.append(b)
    numbers = [graph.atomic_numbers[a] for a in cg]
    g = graph_from_bonds(len(cg), sorted(edges), numbers)
    comps = components(g)
    sub = xyz[list(cg)]
    while len(comps) > 1:
        first, rest = comps[0], [a for c in comps[1:] for a in c]
        d = np.linalg.norm(sub[first][:, None] - sub[rest][None], axis=-1)
        m, k = np.unravel_index(np.argmin(d), d.shape)
        edges.add((first[m], rest[k]))
        g = graph_from_bonds(len(cg), sorted(edges), numbers)
        comps = components(g)
    return g


@register_map("atom_subset")
class AtomSubsetMap(CGMap):
    """z = Cartesian positions of the CG atoms; r = internal coordinates of the others.

    z = x[:, cg_atom_indices].reshape(B, 3 · n_cg) (nm, sorted atom order). The non-CG atoms are
    placed by a Z-matrix whose fixed atoms are the CG atoms, so merge commutes with rotations
    and translations of the CG frame by construction. r = [bonds (nm), angles (rad), torsions
    (rad)] of the placed atoms in Z-matrix order; chirality-constrained torsions (`r_chiral`,
    e.g. HA at a CA whose heavy neighbours are beads) in half-range form t' in (−π, π), and
    t' < −π for a mirror-image configuration (see `ccg.mapping.chirality`). The map
    (z, r) -> x is square (3 n_cg + n_r = 3 N); log_jac = Σ (2 log b + log sin θ) over placed
    atoms + n_chiral · log(1/2).

    cg_features(z): internal coordinates of the CG atoms themselves (a second Z-matrix over the
    CG atoms, bonded through non-CG paths): (b − b_ref) / 0.01 nm, (θ − θ_ref) / 0.1 rad, cos φ,
    sin φ; invariant to rotations and translations, not to reflections.

    Args:
        topology: mdtraj.Topology.
        cg_atoms: atom indices, "heavy" (all non-hydrogens) or "backbone" (mdtraj selection).
        reference_xyz: reference structure [n_atoms, 3] nm (fixes chirality signs,
            r_reference and the feature offsets).
        zmatrix, feature_zmatrix: prebuilt Z-matrices (from a config).
        stiff_torsions: atom quadruples of r torsions (rows of the Z-matrix, neither chiral
            nor free rotors) to model as real coordinates unwrapped around their reference
            value, like `TorsionMap`'s: the stiff ring and peptide-bond torsions, whose
            circular base would otherwise open rings in its tails.
    """

    def __init__(
        self,
        topology,
        cg_atoms: Sequence[int] | str,
        reference_xyz: Any,
        *,
        zmatrix: ZMatrix | None = None,
        feature_zmatrix: ZMatrix | None = None,
        stiff_torsions: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__()
        n = topology.n_atoms
        idx = resolve_cg_atoms(topology, cg_atoms)
        ref = as_reference_xyz(reference_xyz, n)
        graph = graph_from_topology(topology)
        zm = zmatrix if zmatrix is not None else ZMatrix.from_graph(
            graph, fixed_atoms=idx, reference_xyz=ref)
        if list(zm.fixed_atoms) != idx or zm.n_atoms != n:
            raise ValueError("The given zmatrix does not fix exactly the CG atoms.")
        fzm = feature_zmatrix if feature_zmatrix is not None else ZMatrix.from_graph(
            cg_graph(graph, idx, ref.numpy()), reference_xyz=ref[idx], chirality=False)
        self.zmatrix, self.feature_zmatrix = zm, fzm
        self.stiff_torsions = [tuple(int(a) for a in q) for q in stiff_torsions]
        with torch.no_grad():
            ic_ref, _ = zm(ref[None])
        bonds = [(a.index, b.index) for a, b in topology.bonds]
        self.layout = ICSplit(zm, bonds=bonds, reference_torsions=ic_ref.torsions[0],
                              stiff_rows=zm.row_indices(self.stiff_torsions))
        self.cg_atom_indices = idx
        self._reference_xyz = ref
        self.register_buffer("_cg", torch.tensor(idx, dtype=torch.long), False)
        n_feat = fzm.n_bonds + fzm.n_angles + 2 * fzm.n_torsions
        self._declare(
            event_shape=(n, 3), cg_dim=3 * len(idx), n_r=self.layout.n_r, cg_feature_dim=n_feat,
            z_circular=[False] * (3 * len(idx)), r_circular=self.layout.r_circular,
            r_kinds=self.layout.r_kinds, r_chiral=self.layout.r_chiral,
        )
        ic_ref, _ = fzm(ref[idx][None])
        self.register_buffer("_feat_bond_ref", ic_ref.bonds[0].clone(), False)
        self.register_buffer("_feat_angle_ref", ic_ref.angles[0].clone(), False)
        with torch.no_grad():
            self.r_reference = self._split(ref[None])[1][0]

    @classmethod
    def heavy_atoms(cls, topology, reference_xyz: Any) -> AtomSubsetMap:
        """Beads = all heavy (non-hydrogen) atoms."""
        return cls(topology, "heavy", reference_xyz)

    @property
    def n_cg(self) -> int:
        """Number of CG atoms."""
        return len(self.cg_atom_indices)

    def _coarse_grain(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self._cg].reshape(x.shape[0], -1)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ic, _ = self.zmatrix(x)
        log_jac = self.zmatrix.ic_log_jac(ic.bonds, ic.angles) + self.layout.log_jac_constant
        return ic.fixed.reshape(x.shape[0], -1), self.layout.pack(ic), log_jac

    def _merge(self, z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bonds, angles, torsions = self.layout.unpack(r)
        b = z.shape[0]
        ic = InternalCoordinates(bonds, angles, torsions, z.new_zeros((b, 0)),
                                 z.reshape(b, self.n_cg, 3))
        x, log_jac = self.zmatrix.inverse(ic)
        return x, log_jac + self.layout.log_jac_constant

    def _cg_features(self, z: torch.Tensor) -> torch.Tensor:
        ic, _ = self.feature_zmatrix(z.reshape(z.shape[0], self.n_cg, 3))
        bonds = (ic.bonds - self._feat_bond_ref.to(z.dtype)) / FEATURE_BOND_SCALE_NM
        angles = (ic.angles - self._feat_angle_ref.to(z.dtype)) / FEATURE_ANGLE_SCALE_RAD
        return torch.cat([bonds, angles, torch.cos(ic.torsions), torch.sin(ic.torsions)], -1)

    def config(self) -> dict:
        return {
            "type": self.map_type,
            "n_atoms": self.event_shape[0],
            "cg_atoms": list(self.cg_atom_indices),
            "reference_xyz": self._reference_xyz.tolist(),
            "zmatrix": self.zmatrix.config(),
            "feature_zmatrix": self.feature_zmatrix.config(),
            "stiff_torsions": [list(q) for q in self.stiff_torsions],
        }

    @classmethod
    def from_config(cls, cfg: dict, topology: Any) -> AtomSubsetMap:
        check_topology(topology, cfg["n_atoms"], "AtomSubsetMap")
        return cls(topology, list(cfg["cg_atoms"]), cfg["reference_xyz"],
                   zmatrix=ZMatrix.from_config(cfg["zmatrix"]),
                   feature_zmatrix=ZMatrix.from_config(cfg["feature_zmatrix"]),
                   stiff_torsions=[tuple(q) for q in cfg.get("stiff_torsions", [])])


@CG_MAPS.register("heavy-atoms", systems="molecular")
def heavy_atom_map(system) -> AtomSubsetMap:
    """`[map] cg = "heavy-atoms"`: one bead per heavy (non-hydrogen) atom."""
    return AtomSubsetMap(system.topology, "heavy", system.reference_positions)


@CG_MAPS.register("backbone", systems="molecular")
def backbone_map(system) -> AtomSubsetMap:
    """`[map] cg = "backbone"`: one bead per backbone atom (N, CA, C, O)."""
    return AtomSubsetMap(system.topology, "backbone", system.reference_positions)


@CG_MAPS.register("ca", systems="molecular")
def ca_map(system) -> AtomSubsetMap:
    """`[map] cg = "ca"`: one bead per residue at its C-alpha (atoms named CA; the ACE / NME
    caps have none). Needs at least 3 residues with a C-alpha (a rigid frame)."""
    topology = system.topology
    ca = [a.index for a in topology.atoms if a.name == "CA"]
    if len(ca) < 3:
        raise ConfigError(
            f'[map] cg = "ca" needs at least 3 residues with a C-alpha (atom CA) to fix a frame; '
            f"the molecule has {len(ca)}. Fix: use --cg heavy-atoms or backbone (beads), or "
            "phi-psi / backbone-torsions (torsions)."
        )
    return AtomSubsetMap(topology, ca, system.reference_positions)
