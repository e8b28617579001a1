"""Chiral centers from the bond graph, and the exact half-range parameterization of torsions.

The force field gives L- and D-alanine the same energy, so a flow over free torsions would
produce both. ccg fixes chirality through the parameterization instead of filtering samples:

- `find_chiral_centers` detects atoms with four pairwise distinct substituents, using a
  canonical graph-invariant ranking (iterated Morgan-style refinement over element and
  neighbour ranks, with the candidate center marked).
- A Z-matrix torsion whose four atoms are a chiral center plus three of its neighbours, with the
  center as bond atom (an "improper-style" torsion l-k-j-i with k the center and l, j, i its
  neighbours) or as the placed atom, has the sign of sin(torsion) fixed by the chirality. Such a
  torsion is exposed as t' in [-π, π) through

      torsion = sign · (t' + π) / 2,     t' = 2 · sign · torsion − π,

  so the torsion lives in (0, π) (sign = +1) or (−π, 0) (sign = −1), as in the reference
  structure. The map t' -> torsion has constant log|d torsion / d t'| = log(1/2)
  (`HALF_RANGE_LOG_JAC`).
- A configuration with the wrong chirality maps to t' in (−3π, −π), outside [−π, π): a flow
  whose support is [−π, π) gives it zero density (log_prob = −inf or an out-of-support error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ccg.mapping.graph import graph_from_topology

HALF_RANGE_LOG_JAC = -math.log(2.0)
"""log|d torsion / d t'| of the half-range map torsion = sign · (t' + π) / 2."""


class ChiralCenter(NamedTuple):
    """A chiral atom and its four neighbours in a fixed, graph-invariant priority order.

    `neighbors` is sorted by (atomic number, canonical rank) from highest to lowest, ties by
    atom index; the chirality sign uses the first three (`chirality_signs`).
    """

    center: int
    neighbors: tuple[int, int, int, int]


def _relabel(keys: Sequence[object]) -> list[int]:
    """Canonical integer labels: the rank of each key among the sorted distinct keys."""
    order = {key: rank for rank, key in enumerate(sorted(set(keys)))}  # type: ignore[type-var]
    return [order[key] for key in keys]


def refine_labels(adjacency: Sequence[Sequence[int]], initial: Sequence[object]) -> list[int]:
    """Iterated Morgan-style refinement of atom labels over the bond graph.

    Args:
        adjacency: neighbour lists, one per atom.
        initial: one sortable invariant per atom (for example (atomic number, is_marked)).

    Returns:
        Integer labels, one per atom; equal labels mean "not distinguished by the
        refinement". Labels are canonical: they depend only on the graph and `initial`, not on
        atom order.
    """
    labels = _relabel(list(initial))
    n_classes = len(set(labels))
    while True:
        signatures = [
            (labels[a], tuple(sorted(labels[b] for b in adjacency[a])))
            for a in range(len(adjacency))
        ]
        new = _relabel(signatures)
        n_new = len(set(new))
        if n_new == n_classes:
            return new
        labels, n_classes = new, n_new


def find_chiral_centers_in_graph(
    adjacency: Sequence[Sequence[int]], atomic_numbers: Sequence[int]
) -> list[ChiralCenter]:
    """Chiral centers of a molecular graph: atoms with 4 pairwise distinct substituents.

    Substituents are compared by canonical refinement labels, first without and (on ties) with
    the candidate center marked, so two branches are distinct when the refinement tells them
    apart as seen from the center.
    """
    n = len(adjacency)
    global_labels = refine_labels(adjacency, list(atomic_numbers))
    centers = []
    for c in range(n):
        nbrs = list(adjacency[c])
        if len(nbrs) != 4:
            continue
        terminal = [atomic_numbers[a] for a in nbrs if len(adjacency[a]) == 1]
        if len(terminal) != len(set(terminal)):  # two equal terminal atoms (e.g. two H)
            continue
        labels = global_labels
        if len({labels[a] for a in nbrs}) < 4:
            labels = refine_labels(adjacency, [(atomic_numbers[a], a == c) for a in range(n)])
            if len({labels[a] for a in nbrs}) < 4:
                continue
        order = sorted(nbrs, key=lambda a, lab=labels: (-atomic_numbers[a], -lab[a], a))
        centers.append(ChiralCenter(c, (order[0], order[1], order[2], order[3])))
    return centers


def find_chiral_centers(topology) -> list[ChiralCenter]:
    """Chiral centers of an mdtraj.Topology (see `find_chiral_centers_in_graph`).

    For alanine dipeptide this is [ChiralCenter(center=8, neighbors=(6, 14, 10, 9))]: ALA CA
    with N, C, CB, HA.
    """
    graph = graph_from_topology(topology)
    return find_chiral_centers_in_graph(graph.adjacency, graph.atomic_numbers)


def chiral_torsion_entries(
    rows: Sequence[Sequence[int]],
    centers: Sequence[ChiralCenter],
    adjacency: Sequence[Sequence[int]],
    xyz: np.ndarray | None,
    required: Sequence[Sequence[int]] = (),
) -> list[tuple[int, float]]:
    """Z-matrix torsions whose sign is fixed by chirality, with the reference sign.

    A row (l, k, j, i) qualifies when k is a chiral center and l, j, i are its neighbours, or l
    is a chiral center and k, j, i are its neighbours; required torsions (CG coordinates) are
    excluded. Returns (row index, sign of sin(torsion) in `xyz`) pairs; [] without `xyz`.
    """
    if xyz is None:
        return []
    nbrs = {c.center: set(adjacency[c.center]) for c in centers}
    req = [set(t) for t in required]
    out = []
    for t, (atom, k, j, i) in enumerate(rows):
        hit = (k in nbrs and {atom, j, i} <= nbrs[k]) or (atom in nbrs and {k, j, i} <= nbrs[atom])
        if not hit or {atom, k, j, i} in req:
            continue
        # sign of sin(dihedral(l, k, j, i)) = -sign((l - k) . ((j - k) x (i - k)))
        triple = float(np.dot(xyz[atom] - xyz[k], np.cross(xyz[j] - xyz[k], xyz[i] - xyz[k])))
        scale = float(np.prod([np.linalg.norm(xyz[a] - xyz[k]) for a in (atom, j, i)]))
        if abs(triple) < 1e-3 * scale:
            center = k if k in nbrs else atom
            raise ValueError(
                f"The reference structure is (nearly) planar around chiral center {center}: the "
                f"torsion {(atom, k, j, i)} has no clear sign. Use a proper 3D reference."
            )
        out.append((t, -1.0 if triple > 0 else 1.0))
    return out


def chirality_signs(x: torch.Tensor, centers: Sequence[ChiralCenter]) -> torch.Tensor:
    """Chirality of each center: sign of the triple product of three substituent bonds.

    Args:
        x: positions, shape [B, n_atoms, 3] (nm).
        centers: chiral centers; for each, a = n0 - c, b = n1 - c, d = n2 - c (the first three
            neighbours in their stored order) and the sign of a · (b × d) is returned.

    Returns:
        Tensor [B, n_centers] of +1 / -1 (0 for a degenerate, planar arrangement), dtype of x.
        A mirror image flips every sign; rotations and translations keep them.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != 3:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"Expected x of shape [B, n_atoms, 3] (nm); got {got}.")
    if len(centers) == 0:
        return x.new_zeros((x.shape[0], 0))
    idx = torch.tensor(
        [[c.center, *c.neighbors[:3]] for c in centers], dtype=torch.long, device=x.device
    )
    if int(idx.max()) >= x.shape[1]:
        raise ValueError(
            f"A chiral center refers to atom {int(idx.max())}, but x has {x.shape[1]} atoms."
        )
    center = x[:, idx[:, 0]]
    a, b, d = (x[:, idx[:, m]] - center for m in (1, 2, 3))
    return torch.sign((a * torch.linalg.cross(b, d, dim=-1)).sum(-1))


def torsion_to_half_range(torsion: torch.Tensor, sign: torch.Tensor | float) -> torch.Tensor:
    """t' = 2 · sign · torsion − π: in (−π, π) for the reference chirality, else < −π.

    `torsion` in rad on [−π, π); `sign` (±1) broadcasts against it.
    """
    return 2.0 * sign * torsion - math.pi


def half_range_to_torsion(t_half: torch.Tensor, sign: torch.Tensor | float) -> torch.Tensor:
    """torsion = sign · (t' + π) / 2, in (0, π) or (−π, 0) for t' in (−π, π) (rad)."""
    return sign * (t_half + math.pi) * 0.5
