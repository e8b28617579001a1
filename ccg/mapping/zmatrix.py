"""Internal coordinates: a batched, exactly invertible Z-matrix with log|det J|.

Each placed atom l has references (k, j, i): k bonded to l, and

    bond b = |x_l − x_k| (nm),  angle θ = angle(l, k, j) in [0, π],
    torsion φ = dihedral(l, k, j, i) in [−π, π)  (mdtraj / IUPAC sign convention).

Without fixed atoms, a root path (r0, r1, r2) carries the rigid-body frame and the full map
R^{3N} <-> (3N − 6 internal coordinates, 6 frame coordinates) is a bijection (almost
everywhere). The root contributes bonds b(r1, r0), b(r2, r1) and angle θ(r2, r1, r0), stored
first; the frame is [tx, ty, tz, α, β, γ]: the position of r0 (nm), the polar angle
α ∈ [0, π] and azimuth β ∈ [−π, π) of the r0 → r1 direction, and the rotation γ ∈ [−π, π) of r2
about that axis (rad). With fixed atoms (bead maps) the fixed positions are given and all other
atoms are placed from them.

Jacobian: log|det ∂x/∂(ICs, frame)| = Σ_bonds 2 log b + Σ_angles log sin θ + log sin α
(the last term only with a root); the forward map x -> ICs has the negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ccg.mapping import _zmatrix_build as zb
from ccg.mapping.chirality import chiral_torsion_entries, find_chiral_centers_in_graph
from ccg.mapping.graph import MolGraph, components, graph_from_topology


def wrap_angle(t: torch.Tensor) -> torch.Tensor:
    """Wrap angles (rad) to [−π, π)."""
    return torch.remainder(t + math.pi, 2.0 * math.pi) - math.pi


def bond_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a-b-c at b in [0, π] (rad), by atan2 (finite gradients near 0 and π)."""
    u, v = a - b, c - b
    cross = torch.linalg.vector_norm(torch.linalg.cross(u, v, dim=-1), dim=-1)
    return torch.atan2(cross, (u * v).sum(-1))


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dihedral angle a-b-c-d in [−π, π) (rad), same sign convention as mdtraj."""
    b1, b2, b3 = b - a, c - b, d - c
    c1 = torch.linalg.cross(b2, b3, dim=-1)
    c2 = torch.linalg.cross(b1, b2, dim=-1)
    p1 = (b1 * c1).sum(-1) * torch.linalg.vector_norm(b2, dim=-1)
    p2 = (c1 * c2).sum(-1)
    return wrap_angle(torch.atan2(p1, p2))


def place_atom(
    xi: torch.Tensor, xj: torch.Tensor, xk: torch.Tensor,
    bond: torch.Tensor, angle: torch.Tensor, torsion: torch.Tensor,
) -> torch.Tensor:
    """NeRF: the position l with |l − k| = bond, angle(l, k, j) = angle, dihedral(l, k, j, i) =
    torsion. Positions [..., 3] (nm), internal coordinates [...] (nm, rad)."""
    bc = xk - xj
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True)
    n = torch.linalg.cross(xj - xi, bc, dim=-1)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc, dim=-1)
    rs = (bond * torch.sin(angle)).unsqueeze(-1)
    return (
        xk - (bond * torch.cos(angle)).unsqueeze(-1) * bc
        + rs * torch.cos(torsion).unsqueeze(-1) * m
        + rs * torch.sin(torsion).unsqueeze(-1) * n
    )


class InternalCoordinates(NamedTuple):
    """Internal coordinates of a batch (B = batch size).

    bonds [B, n_bonds] nm; angles [B, n_angles] rad in [0, π]; torsions [B, n_torsions] rad in
    [−π, π); frame [B, 6] (tx, ty, tz nm; α, β, γ rad) or [B, 0] without a root; fixed
    [B, n_fixed, 3] nm (positions of the fixed atoms, sorted by index) or [B, 0, 3].
    """

    bonds: torch.Tensor
    angles: torch.Tensor
    torsions: torch.Tensor
    frame: torch.Tensor
    fixed: torch.Tensor


def _frame_vectors(alpha: torch.Tensor, beta: torch.Tensor):
    """Unit vectors e1 (polar α, azimuth β) and the two perpendiculars ex, ey; each [B, 3]."""
    ca, sa, cb, sb = torch.cos(alpha), torch.sin(alpha), torch.cos(beta), torch.sin(beta)
    e1 = torch.stack([sa * cb, sa * sb, ca], dim=-1)
    ex = torch.stack([ca * cb, ca * sb, -sa], dim=-1)
    ey = torch.stack([-sb, cb, torch.zeros_like(sb)], dim=-1)
    return e1, ex, ey


class ZMatrix(torch.nn.Module):
    """A Z-matrix over n_atoms atoms: forward x -> (ICs, log|det|), inverse ICs -> (x, log|det|).

    Args:
        n_atoms: number of atoms.
        rows: placement rows (l, k, j, i), in placement order: every atom except the root /
            fixed atoms exactly once; k, j, i placed before l (or root / fixed).
        root: (r0, r1, r2) with r0-r1 and r1-r2 bonds (full bijection with frame), or None.
        fixed_atoms: atoms given as input (bead maps); exclusive with `root`.
        chiral: (torsion index, sign ±1) of the torsions whose sign is fixed by chirality.

    Build one with `ZMatrix.from_topology`. Index buffers move with `.to(device)`; computations
    follow the dtype of the input.
    """

    def __init__(
        self,
        n_atoms: int,
        rows: Sequence[Sequence[int]],
        *,
        root: Sequence[int] | None = None,
        fixed_atoms: Sequence[int] = (),
        chiral: Sequence[tuple[int, float]] = (),
    ) -> None:
        super().__init__()
        self.n_atoms = int(n_atoms)
        self.rows = [tuple(int(a) for a in row) for row in rows]
        self.root = tuple(int(a) for a in root) if root is not None else None
        self.fixed_atoms = tuple(sorted(int(a) for a in fixed_atoms))
        self.chiral = [(int(t), 1.0 if s > 0 else -1.0) for t, s in chiral]
        gens = self._validate()
        root_l = list(self.root) if self.root else []
        bonds = ([(root_l[1], root_l[0]), (root_l[2], root_l[1])] if self.root else [])
        bonds += [(atom, k) for atom, k, _, _ in self.rows]
        angles = [tuple(root_l[::-1])] if self.root else []
        angles += [(atom, k, j) for atom, k, j, _ in self.rows]
        self._off_b, self._off_a = (2, 1) if self.root else (0, 0)
        order = sorted(range(len(self.rows)), key=lambda n: gens[n])
        self._gen_bounds: list[tuple[int, int]] = []
        for n_pos, n in enumerate(order):
            if n_pos == 0 or gens[n] != gens[order[n_pos - 1]]:
                self._gen_bounds.append((n_pos, n_pos + 1))
            else:
                self._gen_bounds[-1] = (self._gen_bounds[-1][0], n_pos + 1)
        self.generations = gens

        def buf(name: str, data: list, shape: tuple[int, ...], dtype=torch.long) -> None:
            self.register_buffer(name, torch.tensor(data, dtype=dtype).reshape(shape), False)

        buf("_bond_idx", bonds, (-1, 2))
        buf("_angle_idx", angles, (-1, 3))
        buf("_rows", self.rows, (-1, 4))
        buf("_gen_order", order, (-1,))
        buf("_root", root_l, (-1,))
        buf("_fixed", list(self.fixed_atoms), (-1,))
        buf("chiral_index", [t for t, _ in self.chiral], (-1,))
        buf("chiral_sign", [s for _, s in self.chiral], (-1,), torch.float64)

    def _validate(self) -> list[int]:
        n = self.n_atoms
        if (self.root is None) == (len(self.fixed_atoms) == 0):
            raise ValueError(
                "Expected exactly one of root (3 atoms) or fixed_atoms (non-empty); got "
                f"root={self.root}, fixed_atoms={list(self.fixed_atoms)}."
            )
        if self.root is not None and len(set(self.root)) != 3:
            raise ValueError(f"Expected a root of 3 distinct atoms; got {self.root}.")
        gen = dict.fromkeys(self.root or self.fixed_atoms, 0)
        out = []
        for row in self.rows:
            if len(row) != 4 or len(set(row)) != 4 or not all(0 <= a < n for a in row):
                raise ValueError(f"Invalid Z-matrix row {row}: need 4 distinct atoms in [0, {n}).")
            atom, k, j, i = row
            if atom in gen:
                raise ValueError(f"Atom {atom} is placed twice (row {row}).")
            missing = [a for a in (k, j, i) if a not in gen]
            if missing:
                raise ValueError(f"Row {row} refers to atoms {missing} not placed before {atom}.")
            gen[atom] = 1 + max(gen[k], gen[j], gen[i])
            out.append(gen[atom])
        if len(gen) != n:
            raise ValueError(
                f"The Z-matrix covers {len(gen)} of {n} atoms; missing "
                f"{sorted(set(range(n)) - set(gen))[:10]}."
            )
        for t, _ in self.chiral:
            if not 0 <= t < len(self.rows):
                raise ValueError(f"Chiral torsion index {t} out of range [0, {len(self.rows)}).")
        return out

    def row_indices(self, quads: Sequence[Sequence[int]]) -> list[int]:
        """The index of the row (torsion) of each atom quadruple, given either way round."""
        where: dict[tuple[int, ...], int] = {}
        for t, row in enumerate(self.rows):  # the first row that matches, either way round
            where.setdefault(row, t)
            where.setdefault(row[::-1], t)
        missing = [tuple(q) for q in quads if tuple(int(a) for a in q) not in where]
        if missing:
            raise ValueError(f"The torsions {missing[:5]} are not rows of the Z-matrix; give "
                             "atom quadruples from zmatrix.rows.")
        return [where[tuple(int(a) for a in q)] for q in quads]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_topology(
        cls,
        topology,
        *,
        root: Sequence[int] | None = None,
        fixed_atoms: Sequence[int] | None = None,
        required_torsions: Sequence[Sequence[int]] = (),
        reference_xyz: torch.Tensor | np.ndarray | None = None,
        chirality: bool = True,
    ) -> ZMatrix:
        """Build from an mdtraj.Topology's bond graph (see `from_graph`)."""
        return cls.from_graph(
            graph_from_topology(topology), root=root, fixed_atoms=fixed_atoms,
            required_torsions=required_torsions, reference_xyz=reference_xyz,
            chirality=chirality,
        )

    @classmethod
    def from_graph(
        cls,
        graph: MolGraph,
        *,
        root: Sequence[int] | None = None,
        fixed_atoms: Sequence[int] | None = None,
        required_torsions: Sequence[Sequence[int]] = (),
        reference_xyz: torch.Tensor | np.ndarray | None = None,
        chirality: bool = True,
    ) -> ZMatrix:
        """Build the Z-matrix of a bond graph.

        Args:
            graph: the molecular graph (`_zmatrix_build.MolGraph`).
            root: (r0, r1, r2), a bonded path carrying the rigid-body frame; default: chosen so
                that the required torsions work (their middle atoms), else near the center.
            fixed_atoms: atoms given as input and never placed (exclusive with root).
            required_torsions: quadruples (a, b, c, d) that must be torsion entries (placed
                atom a with refs (b, c, d), or d with (c, b, a)); ValueError if impossible.
            reference_xyz: [n_atoms, 3] nm; used to reject near-collinear references and to
                fix the sign of chirality-constrained torsions (none without it).
            chirality: detect chiral centers and constrain their improper torsions.
        """
        n = graph.n_atoms
        xyz = None
        if reference_xyz is not None:
            xyz = np.asarray(torch.as_tensor(reference_xyz, dtype=torch.float64).cpu())
            if xyz.shape != (n, 3) or not np.isfinite(xyz).all():
                raise ValueError(f"Expected finite reference_xyz of shape [{n}, 3] (nm); got "
                                 f"shape {list(xyz.shape)}.")
        required = [zb.check_quad(t, n) for t in required_torsions]
        centers = (find_chiral_centers_in_graph(graph.adjacency, graph.atomic_numbers)
                   if chirality else [])
        kwargs = {"required_torsions": required, "centers": centers, "xyz": xyz}
        if fixed_atoms is not None and len(fixed_atoms) > 0:
            if root is not None:
                raise ValueError("Give either root or fixed_atoms, not both.")
            fixed = sorted({int(a) for a in fixed_atoms})
            if fixed[0] < 0 or fixed[-1] >= n:
                raise ValueError(f"fixed_atoms must be in [0, {n}); got {fixed}.")
            rows = zb.build_rows(graph, root=None, fixed_atoms=fixed, **kwargs)
            chosen = None
        else:
            fixed, chosen, rows = [], None, []
            if n < 3 or len(components(graph)) != 1:
                raise ValueError(
                    f"A Z-matrix without fixed atoms needs one bonded molecule of >= 3 atoms; got "
                    f"{n} atoms in {len(components(graph))} fragment(s). Pass fixed_atoms."
                )
            roots = [zb.check_root(root, graph)] if root is not None else zb.candidate_roots(
                graph, required)
            errors = []
            for cand in roots:
                if zb.sin_angle(xyz, cand[0], cand[1], cand[2]) < zb.MIN_SIN:
                    errors.append(f"root {cand} is nearly collinear")
                    continue
                try:
                    rows = zb.build_rows(graph, root=cand, fixed_atoms=(), **kwargs)
                except ValueError as err:
                    errors.append(str(err))
                    continue
                chosen = cand
                break
            if chosen is None:
                raise ValueError(f"No root works (tried {roots}): {errors[-1]}")
        chiral = chiral_torsion_entries(rows, centers, graph.adjacency, xyz, required)
        return cls(n, rows, root=chosen, fixed_atoms=fixed, chiral=chiral)

    def config(self) -> dict:
        """JSON-serializable description; `ZMatrix.from_config` rebuilds it exactly."""
        return {"n_atoms": self.n_atoms, "root": list(self.root) if self.root else None,
                "fixed_atoms": list(self.fixed_atoms), "rows": [list(r) for r in self.rows],
                "chiral": [[t, s] for t, s in self.chiral]}

    @classmethod
    def from_config(cls, cfg: dict) -> ZMatrix:
        """Inverse of `config()`."""
        return cls(cfg["n_atoms"], cfg["rows"], root=cfg["root"], fixed_atoms=cfg["fixed_atoms"],
                   chiral=[tuple(c) for c in cfg["chiral"]])

    # ------------------------------------------------------------------ sizes
    @property
    def n_bonds(self) -> int:
        """Number of bond coordinates (2 root bonds + one per placed atom)."""
        return self._off_b + len(self.rows)

    @property
    def n_angles(self) -> int:
        """Number of angle coordinates (1 root angle + one per placed atom)."""
        return self._off_a + len(self.rows)

    @property
    def n_torsions(self) -> int:
        """Number of torsion coordinates (one per placed atom)."""
        return len(self.rows)

    @property
    def n_generations(self) -> int:
        """Number of placement generations (Python-loop length of `inverse`)."""
        return len(self._gen_bounds)

    # ------------------------------------------------------------------ transforms
    @staticmethod
    def ic_log_jac(bonds: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Σ 2 log b + Σ log sin θ, shape [B]: the IC part of log|det ∂x/∂(ICs, frame)|."""
        return 2.0 * torch.log(bonds).sum(-1) + torch.log(torch.sin(angles)).sum(-1)

    @staticmethod
    def frame_log_jac(frame: torch.Tensor) -> torch.Tensor:
        """log sin α, shape [B]: the rotation-measure part (0 without a root)."""
        if frame.shape[-1] == 0:
            return frame.new_zeros(frame.shape[:-1])
        return torch.log(torch.sin(frame[..., 3]))

    def forward(self, x: torch.Tensor) -> tuple[InternalCoordinates, torch.Tensor]:
        """x [B, n_atoms, 3] nm -> (internal coordinates, log|det ∂(ICs, frame)/∂x| [B])."""
        bi, ai, ti = self._bond_idx, self._angle_idx, self._rows
        bonds = torch.linalg.vector_norm(x[:, bi[:, 0]] - x[:, bi[:, 1]], dim=-1)
        angles = bond_angle(x[:, ai[:, 0]], x[:, ai[:, 1]], x[:, ai[:, 2]])
        torsions = dihedral(x[:, ti[:, 0]], x[:, ti[:, 1]], x[:, ti[:, 2]], x[:, ti[:, 3]])
        frame = self._frame(x) if self.root else x.new_zeros((x.shape[0], 0))
        ic = InternalCoordinates(bonds, angles, torsions, frame, x[:, self._fixed])
        return ic, -(self.ic_log_jac(bonds, angles) + self.frame_log_jac(frame))

    def _frame(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1, x2 = x[:, self._root[0]], x[:, self._root[1]], x[:, self._root[2]]
        v1, v2 = x1 - x0, x2 - x1
        alpha = torch.atan2(torch.linalg.vector_norm(v1[:, :2], dim=-1), v1[:, 2])
        beta = torch.atan2(v1[:, 1], v1[:, 0])
        _, ex, ey = _frame_vectors(alpha, beta)
        gamma = torch.atan2((v2 * ey).sum(-1), (v2 * ex).sum(-1))
        return torch.cat([x0, torch.stack([alpha, wrap_angle(beta), wrap_angle(gamma)], -1)], -1)

    def _root_positions(self, ic: InternalCoordinates) -> torch.Tensor:
        """[B, 3, 3] positions of r0, r1, r2 from the frame and the root bonds / angle."""
        f = ic.frame
        e1, ex, ey = _frame_vectors(f[:, 3], f[:, 4])
        b1, b2 = ic.bonds[:, :1], ic.bonds[:, 1:2]
        th, ga = ic.angles[:, :1], f[:, 5:6]
        x0 = f[:, :3]
        x1 = x0 + b1 * e1
        x2 = x1 + b2 * (torch.sin(th) * (torch.cos(ga) * ex + torch.sin(ga) * ey)
                        - torch.cos(th) * e1)
        return torch.stack([x0, x1, x2], dim=1)

    def _start(self, ic: InternalCoordinates) -> torch.Tensor:
        b = ic.bonds.shape[0]
        x = ic.bonds.new_zeros((b, self.n_atoms, 3))
        if self.root:
            x[:, self._root] = self._root_positions(ic)
        else:
            x[:, self._fixed] = ic.fixed
        return x

    def inverse(self, ic: InternalCoordinates) -> tuple[torch.Tensor, torch.Tensor]:
        """ICs -> (x [B, n_atoms, 3] nm, log|det ∂x/∂(ICs, frame)| [B]).

        Batched over samples and over all atoms of one generation (atoms whose references are
        already placed); the Python loop runs over generations only.
        """
        x = self._start(ic)
        for start, stop in self._gen_bounds:
            rows = self._gen_order[start:stop]
            atom, k, j, i = self._rows[rows].unbind(-1)
            x[:, atom] = place_atom(
                x[:, i], x[:, j], x[:, k], ic.bonds[:, rows + self._off_b],
                ic.angles[:, rows + self._off_a], ic.torsions[:, rows],
            )
        return x, self.ic_log_jac(ic.bonds, ic.angles) + self.frame_log_jac(ic.frame)

    def _inverse_loop(self, ic: InternalCoordinates) -> torch.Tensor:
        """Brute-force reference for `inverse`: one atom at a time, in row order."""
        x = self._start(ic).clone()
        for n, (atom, k, j, i) in enumerate(self.rows):
            x[:, atom] = place_atom(x[:, i], x[:, j], x[:, k], ic.bonds[:, n + self._off_b],
                                 ic.angles[:, n + self._off_a], ic.torsions[:, n])
        return x

    def table(self, topology=None) -> str:
        """The Z-matrix as text: one line per atom (root / fixed / placed rows with refs)."""
        return zb.format_table(self, topology)

