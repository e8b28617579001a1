"""`TorsionMap`: CG coordinates z = named torsions (for alanine dipeptide φ and ψ)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import torch

from ccg.mapping.base import CG_MAPS, CGMap, as_reference_xyz, check_topology, register_map
from ccg.mapping.graph import bfs_distances, graph_from_topology
from ccg.mapping.split import ICSplit
from ccg.mapping.zmatrix import InternalCoordinates, ZMatrix, dihedral

_CANONICAL_FRAME = (0.0, 0.0, 0.0, math.pi / 2, 0.0, math.pi / 2)
LOG_RIGID_BODY_ROTATIONS = math.log(8.0 * math.pi**2)
"""log ∫ sin α dα dβ dγ = log(8π²): the rotational part of the rigid-body constant."""
CONTACT_D0_NM = 0.5
"""Half-way distance of the soft contact features 1 / (1 + (d / d0)^6): 0.96 at an H-bond's
O...N 0.3 nm, 0.5 at 0.5 nm, 0.02 at 1 nm."""


def _mdtraj_torsions() -> dict[str, Any]:
    import mdtraj as md

    return {"phi": md.compute_phi, "psi": md.compute_psi, "omega": md.compute_omega,
            "chi1": md.compute_chi1, "chi2": md.compute_chi2, "chi3": md.compute_chi3,
            "chi4": md.compute_chi4}


@register_map("torsion")
class TorsionMap(CGMap):
    """z = named torsions (rad, [−π, π)); r = every other internal coordinate.

    The Z-matrix is built with the z torsions as required entries, so z are Z-matrix
    coordinates and the split is exact. r = [bonds (nm) ..., angles (rad) ..., torsions (rad)
    ...] in Z-matrix order (root bond r0-r1, r1-r2 and root angle first), without the z
    torsions; chirality-constrained torsions (`r_chiral`) appear in half-range form t' (see
    `ccg.mapping.chirality`; not circular, in (−π, π)). `split` of a mirror-image (wrong
    chirality) configuration gives t' < −π there, outside the support of a flow on [−π, π].

    The six rigid-body coordinates are dropped: `merge` places the root atom r0 at the origin,
    r1 on the +x axis and r2 in the xy plane (y > 0). `log_jac` = Σ 2 log b + Σ log sin θ +
    n_chiral · log(1/2) over all bonds and angles (root ones included) excludes the rotation
    measure sin α, so for any rotation- and translation-invariant f

        ∫ f(x) dx = 8π² · V · ∫ f(X(z, r)) |J(z, r)| dz dr,

    V the volume of the translations: log_jac differs from the full Jacobian by the constant
    log(8π² V) (`LOG_RIGID_BODY_ROTATIONS` = log 8π²) after integrating the rigid body out.

    Args:
        topology: mdtraj.Topology.
        torsions: {name: (a, b, c, d)} or a list of quadruples (named "t0", "t1", ...).
        reference_xyz: reference structure [n_atoms, 3] nm (array, tensor or a Trajectory):
            fixes the chirality signs and `r_reference`.
        zmatrix: a prebuilt ZMatrix (from a config); default built from the topology.
        stiff_torsions: atom quadruples of r torsions (Z-matrix entries, not chiral) to model
            as real coordinates unwrapped around the reference, like the improper-style ones
            (kind "improper", not circular; see `ccg.mapping.split`): torsions that are stiff
            with a single minimum, such as peptide ω.
        contact_pairs: atom index pairs whose soft contact 1 / (1 + (d / d0)^6)
            (`CONTACT_D0_NM`) at z is appended to `cg_features(z)`, d measured in the
            structure `merge(z, r_reference)` (the reference bonds, angles and other torsions
            placed at z). They tell the flow's conditioners directly which parts of the chain
            z brings together (a helix's i -> i + 4 contacts) instead of leaving a smooth
            function of (cos z, sin z) to find them (see `backbone_contact_pairs`).
    """

    def __init__(
        self,
        topology,
        torsions: Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
        reference_xyz: Any,
        *,
        zmatrix: ZMatrix | None = None,
        stiff_torsions: Sequence[Sequence[int]] = (),
        contact_pairs: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__()
        n = topology.n_atoms
        if isinstance(torsions, Mapping):
            names, quads = list(torsions), [tuple(int(a) for a in q) for q in torsions.values()]
        else:
            quads = [tuple(int(a) for a in q) for q in torsions]
            names = [f"t{m}" for m in range(len(quads))]
        if not quads:
            raise ValueError("Expected at least one torsion for a TorsionMap; got none.")
        ref = as_reference_xyz(reference_xyz, n)
        zm = zmatrix if zmatrix is not None else ZMatrix.from_topology(
            topology, required_torsions=quads, reference_xyz=ref)
        if zm.root is None or zm.n_atoms != n:
            raise ValueError(f"Expected a rooted ZMatrix over {n} atoms for a TorsionMap.")
        z_index = []
        for name, q in zip(names, quads, strict=True):
            hits = [t for t, row in enumerate(zm.rows) if row in (q, q[::-1])]
            if not hits:
                raise ValueError(f"Torsion {name}={q} is not an entry of the Z-matrix.")
            z_index.append(hits[0])
        self.stiff_torsions = [tuple(int(a) for a in q) for q in stiff_torsions]
        self.zmatrix = zm
        with torch.no_grad():
            ic_ref, _ = zm(ref[None])
        bonds = [(a.index, b.index) for a, b in topology.bonds]
        self.layout = ICSplit(zm, z_index, bonds=bonds, reference_torsions=ic_ref.torsions[0],
                              stiff_rows=zm.row_indices(self.stiff_torsions))
        self.torsion_names = names
        self.torsion_atoms = quads
        self._reference_xyz = ref
        self.register_buffer("_quads", torch.tensor(quads, dtype=torch.long), False)
        pairs = [tuple(int(a) for a in p) for p in contact_pairs]
        if any(len(p) != 2 or p[0] == p[1] or not all(0 <= a < n for a in p) for p in pairs):
            raise ValueError(f"Expected contact_pairs as pairs of distinct atom indices in "
                             f"[0, {n}); got {pairs}.")
        self.contact_pairs = pairs
        self.register_buffer("_pairs", torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
                             False)
        self._declare(
            event_shape=(n, 3), cg_dim=len(quads), n_r=self.layout.n_r,
            cg_feature_dim=2 * len(quads) + len(pairs), z_circular=[True] * len(quads),
            r_circular=self.layout.r_circular, r_kinds=self.layout.r_kinds,
            r_chiral=self.layout.r_chiral,
        )
        with torch.no_grad():
            self.r_reference = self._split(ref[None])[1][0]

    @property
    def cg_names(self) -> list[str]:
        """The torsion names ("phi", "psi", ...), in z order."""
        return list(self.torsion_names)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def alanine_dipeptide(cls, reference_xyz: Any = None) -> TorsionMap:
        """(φ, ψ) map of the bundled alanine dipeptide (reference: the bundled PDB)."""
        import mdtraj as md

        traj = md.load(str(files("ccg") / "data" / "alanine_dipeptide.pdb"))
        return torsion_map_for(traj.topology, ("phi", "psi"),
                               traj if reference_xyz is None else reference_xyz)

    @classmethod
    def phi_psi(cls, topology, reference_xyz: Any) -> TorsionMap:
        """(φ, ψ) map of a dipeptide-like topology, torsions as mdtraj computes them."""
        return torsion_map_for(topology, ("phi", "psi"), reference_xyz)

    # ------------------------------------------------------------------ the map
    def _coarse_grain(self, x: torch.Tensor) -> torch.Tensor:
        q = self._quads
        return dihedral(x[:, q[:, 0]], x[:, q[:, 1]], x[:, q[:, 2]], x[:, q[:, 3]])

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ic, _ = self.zmatrix(x)
        log_jac = self.zmatrix.ic_log_jac(ic.bonds, ic.angles) + self.layout.log_jac_constant
        return self.layout.z_torsions(ic), self.layout.pack(ic), log_jac

    def _merge(self, z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bonds, angles, torsions = self.layout.unpack(r, z)
        frame = z.new_tensor(_CANONICAL_FRAME).expand(z.shape[0], 6)
        ic = InternalCoordinates(bonds, angles, torsions, frame, z.new_zeros((z.shape[0], 0, 3)))
        x, _ = self.zmatrix.inverse(ic)
        return x, self.zmatrix.ic_log_jac(bonds, angles) + self.layout.log_jac_constant

    def _cg_features(self, z: torch.Tensor) -> torch.Tensor:
        """(cos z_0, sin z_0, cos z_1, sin z_1, ..., then one soft contact per
        `contact_pairs` entry), shape [B, 2 · cg_dim + n_pairs]."""
        angles = torch.stack([torch.cos(z), torch.sin(z)], dim=-1).reshape(z.shape[0], -1)
        if not self.contact_pairs:
            return angles
        r = self.r_reference.to(dtype=z.dtype, device=z.device).expand(z.shape[0], -1)
        x, _ = self._merge(z, r)
        d = torch.linalg.vector_norm(x[:, self._pairs[:, 0]] - x[:, self._pairs[:, 1]], dim=-1)
        return torch.cat([angles, 1.0 / (1.0 + (d / CONTACT_D0_NM) ** 6)], dim=1)

    def config(self) -> dict:
        return {
            "type": self.map_type,
            "n_atoms": self.event_shape[0],
            "torsions": {n: list(q) for n, q in zip(self.torsion_names, self.torsion_atoms,
                                                    strict=True)},
            "reference_xyz": self._reference_xyz.tolist(),
            "zmatrix": self.zmatrix.config(),
            "stiff_torsions": [list(q) for q in self.stiff_torsions],
            "contact_pairs": [list(p) for p in self.contact_pairs],
        }

    @classmethod
    def from_config(cls, cfg: dict, topology: Any) -> TorsionMap:
        check_topology(topology, cfg["n_atoms"], "TorsionMap")
        return cls(topology, {n: tuple(q) for n, q in cfg["torsions"].items()},
                   cfg["reference_xyz"], zmatrix=ZMatrix.from_config(cfg["zmatrix"]),
                   stiff_torsions=[tuple(q) for q in cfg.get("stiff_torsions", [])],
                   contact_pairs=[tuple(p) for p in cfg.get("contact_pairs", [])])


BACKBONE_CONTACT_ATOMS = ("N", "CA", "C", "O", "CB", "CH3")
"""Atom names `backbone_contact_pairs` takes: the backbone, the beta carbon, and the caps'
methyl carbons (ACE / NME)."""


def backbone_contact_pairs(topology, min_bonds: int = 4) -> list[tuple[int, int]]:
    """Pairs of backbone heavy atoms (`BACKBONE_CONTACT_ATOMS`) at least `min_bonds` bonds
    apart: the pairs whose distance the backbone torsions change, as `contact_pairs`.

    Ace-(Ala)5-Nme: 325 pairs over 30 atoms at `min_bonds` = 4 (Ace-(Ala)3-Nme: 120); the
    count grows with the square of the chain length (the bundled 10-residue chignolin: 992).

    Args:
        topology: mdtraj.Topology.
        min_bonds: smallest bond-graph distance of a pair (4: from 1-5 pairs on).
    """
    atoms = [a.index for a in topology.atoms if a.name in BACKBONE_CONTACT_ATOMS
             and a.element is not None and a.element.symbol != "H"]
    graph = graph_from_topology(topology)
    pairs = []
    for start in atoms:
        dist = bfs_distances(graph, [start])  # -1: another molecule, never within min_bonds
        pairs += [(start, b) for b in atoms
                  if b > start and (dist[b] < 0 or dist[b] >= min_bonds)]
    return pairs


def torsion_map_for(
    topology, names: Sequence[str] = ("phi", "psi"), reference_xyz: Any = None
) -> TorsionMap:
    """A TorsionMap over mdtraj's named backbone / side-chain torsions.

    Args:
        topology: mdtraj.Topology, or an mdtraj.Trajectory (then its first frame is the
            default reference).
        names: any of "phi", "psi", "omega", "chi1".."chi4". A name matching several torsions
            gives "phi_0", "phi_1", ... in mdtraj's order.
        reference_xyz: reference structure [n_atoms, 3] nm.

    For alanine dipeptide: phi = C(ACE)-N-CA-C = (4, 6, 8, 14), psi = N-CA-C-N(NME) =
    (6, 8, 14, 16).
    """
    import mdtraj as md

    if isinstance(topology, md.Trajectory):
        reference_xyz = topology if reference_xyz is None else reference_xyz
        topology = topology.topology
    ref = as_reference_xyz(reference_xyz, topology.n_atoms)
    traj = md.Trajectory(ref.numpy()[None].astype("float32"), topology)
    known = _mdtraj_torsions()
    torsions: dict[str, tuple[int, ...]] = {}
    for name in names:
        if name not in known:
            raise ValueError(f'Unknown torsion name "{name}". Must be one of {sorted(known)}.')
        idx, _ = known[name](traj)
        if len(idx) == 0:
            raise ValueError(f'The topology has no "{name}" torsion (mdtraj finds none).')
        for m, quad in enumerate(idx):
            torsions[name if len(idx) == 1 else f"{name}_{m}"] = tuple(int(a) for a in quad)
    return TorsionMap(topology, torsions, ref)


@CG_MAPS.register("phi-psi", systems="molecular")
def phi_psi_map(system) -> TorsionMap:
    """`[map] cg = "phi-psi"`: the backbone (φ, ψ) of a molecular system (as mdtraj finds them),
    with the system's reference positions as the reference structure."""
    return torsion_map_for(system.topology, ("phi", "psi"), system.reference_positions)
