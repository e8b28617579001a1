"""Molecular bond graphs: neighbour lists from a topology or an edge list, components and
breadth-first distances (used by the Z-matrix builder, chirality detection and bead maps)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import NamedTuple


class MolGraph(NamedTuple):
    """A molecular bond graph: sorted neighbour lists and atomic numbers (0 if unknown)."""

    adjacency: list[list[int]]
    atomic_numbers: list[int]

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.adjacency)


def graph_from_bonds(
    n_atoms: int, bonds: Sequence[tuple[int, int]], atomic_numbers: Sequence[int] | None = None
) -> MolGraph:
    """A `MolGraph` from an edge list (atom indices in [0, n_atoms))."""
    adjacency: list[set[int]] = [set() for _ in range(n_atoms)]
    for a, b in bonds:
        a, b = int(a), int(b)
        if not (0 <= a < n_atoms and 0 <= b < n_atoms) or a == b:
            raise ValueError(f"Invalid bond ({a}, {b}) for a molecule of {n_atoms} atoms.")
        adjacency[a].add(b)
        adjacency[b].add(a)
    numbers = list(atomic_numbers) if atomic_numbers is not None else [6] * n_atoms
    return MolGraph([sorted(s) for s in adjacency], [int(z) for z in numbers])


def graph_from_topology(topology) -> MolGraph:
    """The bond graph of an mdtraj.Topology."""
    numbers = [
        int(a.element.atomic_number) if a.element is not None else 0 for a in topology.atoms
    ]
    bonds = [(b[0].index, b[1].index) for b in topology.bonds]
    return graph_from_bonds(topology.n_atoms, bonds, numbers)


def components(graph: MolGraph) -> list[list[int]]:
    """Connected components (sorted atom lists)."""
    seen = [False] * graph.n_atoms
    out = []
    for start in range(graph.n_atoms):
        if seen[start]:
            continue
        seen[start] = True
        comp, queue = [start], deque([start])
        while queue:
            for b in graph.adjacency[queue.popleft()]:
                if not seen[b]:
                    seen[b] = True
                    comp.append(b)
                    queue.append(b)
        out.append(sorted(comp))
    return out


def bfs_distances(graph: MolGraph, sources: Sequence[int]) -> list[int]:
    """Graph distance from the nearest source (-1 if unreachable)."""
    dist = [-1] * graph.n_atoms
    queue = deque(sources)
    for s in sources:
        dist[s] = 0
    while queue:
        a = queue.popleft()
        for b in graph.adjacency[a]:
            if dist[b] < 0:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist
