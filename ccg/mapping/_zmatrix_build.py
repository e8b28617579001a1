"""Building a Z-matrix (placement order and reference atoms) from a molecular bond graph.

Private to `ccg.mapping.zmatrix`. The builder grows a spanning tree from the root (three bonded
atoms carrying the rigid-body frame) or from the fixed atoms, placing

1. first, any atom that completes a required torsion (its three partners are placed);
2. then heavy atoms, then hydrogens, each in breadth-first order from the start set.

Each placed atom l gets references (k, j, i): k a placed bond partner, j a placed neighbour of
k, and i preferably a third placed neighbour of k ("improper style", well decoupled from other
torsions) or else a neighbour of j; further placed atoms by graph distance as a fallback. At a
chiral center the three highest-priority substituents are always tied together by one
improper-style entry, so the chirality is carried by the sign of one torsion.

With fixed atoms (bead maps) the references are ranked differently, because between beads the
nearest placed atoms are often the previous residue's backbone, and references taken from it
chained every residue to the one before (in a 20-residue C-alpha map that chain amplified a
change of one torsion about 2x per residue, to 1.4e5 nm/rad at the far end). There j and i are
every placed atom, ranked: for i, a bond partner of l first (so that a bond is carried, e.g.
N(i+1) by the peptide plane through C(i)); then those at most MAX_DEPTH placements from the
fixed atoms (depth 0 for a fixed atom, 1 + the deepest reference otherwise); then by bonds from
l (C(i) by C-alpha i + 1, its own peptide unit, rather than C-alpha i - 1). The largest lever
is then 2.5 nm/rad, like the torsion maps' 3-5 (tests/test_peptide_maps.py).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

from ccg.mapping.chirality import ChiralCenter
from ccg.mapping.graph import MolGraph, bfs_distances

MIN_SIN = math.sin(math.radians(8.0))  # refs closer than 8 degrees to collinear are rejected
MAX_DEPTH = 1  # bead maps: references deeper than this only when no shallower one will do


def sin_angle(xyz: np.ndarray | None, a: int, b: int, c: int) -> float:
    """sin of the angle a-b-c in the reference structure (1.0 without a reference)."""
    if xyz is None:
        return 1.0
    u, v = xyz[a] - xyz[b], xyz[c] - xyz[b]
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return float(np.linalg.norm(np.cross(u, v)) / (nu * nv))


def _center_distance(graph: MolGraph) -> list[float]:
    """Per atom, how far it is from the graph's middle (double-sweep BFS estimate)."""
    heavy = [a for a in range(graph.n_atoms) if graph.atomic_numbers[a] != 1]
    dist = bfs_distances(graph, [heavy[0] if heavy else 0])
    u = max(range(graph.n_atoms), key=lambda a: (dist[a], -a))
    dist_u = bfs_distances(graph, [u])
    v = max(range(graph.n_atoms), key=lambda a: (dist_u[a], -a))
    dist_v = bfs_distances(graph, [v])
    half = dist_u[v] / 2.0
    return [abs(dist_u[a] - half) + abs(dist_v[a] - half) for a in range(graph.n_atoms)]


def default_root(graph: MolGraph) -> tuple[int, int, int]:
    """A root path (r0, r1, r2) near the graph center, heavy atoms preferred."""
    off_center = _center_distance(graph)

    def score(a: int) -> tuple:
        nbrs = graph.adjacency[a]
        n_heavy = sum(graph.atomic_numbers[b] != 1 for b in nbrs)
        return (len(nbrs) < 2, off_center[a], -n_heavy, a)

    center = min(range(graph.n_atoms), key=score)
    nbrs = sorted(graph.adjacency[center], key=lambda b: (graph.atomic_numbers[b] == 1, b))
    if len(nbrs) < 2:
        raise ValueError(
            "Cannot choose a Z-matrix root: no atom has two bonded neighbours. A Z-matrix needs "
            "a bonded molecule of at least 3 atoms."
        )
    return (nbrs[0], center, nbrs[1])


class _Builder:
    """Greedy placement (see module docstring). Call `run()` once."""

    def __init__(
        self,
        graph: MolGraph,
        start: Sequence[int],
        required: Sequence[tuple[int, int, int, int]],
        centers: Sequence[ChiralCenter],
        xyz: np.ndarray | None,
        shallow_first: bool = False,
    ) -> None:
        self.g = graph
        self.xyz = xyz
        self.order: dict[int, int] = {a: n for n, a in enumerate(start)}
        self.required = [tuple(t) for t in required]
        self.done_required: set[int] = set()
        self.triple_of = {c.center: set(c.neighbors[:3]) for c in centers}
        self.centers_of: dict[int, list[int]] = {}
        for c in centers:
            for a in c.neighbors[:3]:
                self.centers_of.setdefault(a, []).append(c.center)
        self.dist = bfs_distances(graph, list(start))
        self.rows: list[tuple[int, int, int, int]] = []
        self.depth: dict[int, int] = dict.fromkeys(start, 0)
        self.shallow_first = shallow_first

    def _is_h(self, a: int) -> bool:
        return self.g.atomic_numbers[a] == 1

    def _pref(self, a: int) -> tuple[bool, int]:
        return (self._is_h(a), self.order[a])

    def _placed_nbrs(self, a: int, exclude: Sequence[int] = ()) -> list[int]:
        out = [b for b in self.g.adjacency[a] if b in self.order and b not in exclude]
        return sorted(out, key=self._pref)

    def _placed_by_distance(self, a: int, exclude: Sequence[int]) -> list[int]:
        """Placed atoms of a's fragment by graph distance from a (then preference)."""
        dist = bfs_distances(self.g, [a])
        out = [b for b in self.order if dist[b] > 0 and b not in exclude]
        return sorted(out, key=lambda b: (dist[b], *self._pref(b)))

    def _required_refs(self, atom: int) -> tuple[tuple[int, int, int] | None, int, bool]:
        """(refs completing a required torsion or None, its index, blocked?) for `atom`.

        Blocked: placing `atom` now would make some required torsion impossible (its other end
        is already placed, or cannot carry the torsion itself).
        """
        blocked = False
        for n, (a, b, c, d) in enumerate(self.required):
            if n in self.done_required or atom not in (a, d):
                continue
            quad = (a, b, c, d) if atom == a else (d, c, b, a)
            if all(o in self.order for o in quad[1:]) and quad[1] in self.g.adjacency[atom]:
                return (quad[1], quad[2], quad[3]), n, False
            if quad[3] in self.order or quad[3] not in self.g.adjacency[quad[2]]:
                blocked = True
        return None, -1, blocked

    def _chiral_refs(self, atom: int) -> tuple[int, int, int] | None:
        for c in self.centers_of.get(atom, ()):
            others = sorted(self.triple_of[c] - {atom}, key=lambda a: self.order.get(a, 1 << 30))
            if c in self.order and all(o in self.order for o in others):
                return (c, others[0], others[1])
        if atom in self.triple_of:
            trip = sorted(self.triple_of[atom], key=lambda a: self.order.get(a, 1 << 30))
            if all(t in self.order for t in trip):
                return (trip[0], trip[1], trip[2])
        return None

    def _general_refs(self, atom: int) -> tuple[int, int, int]:
        ks = self._placed_nbrs(atom)
        near = bfs_distances(self.g, [atom]) if self.shallow_first else None
        for k in ks:
            for j in self._candidates(self._placed_nbrs(k, (atom,)), k, (atom, k), near, ()):
                if sin_angle(self.xyz, atom, k, j) < MIN_SIN:
                    continue
                first = self._placed_nbrs(k, (atom, j)) + self._placed_nbrs(j, (atom, k))
                for i in self._candidates(first, k, (atom, k, j), near, self.g.adjacency[atom]):
                    if sin_angle(self.xyz, k, j, i) >= MIN_SIN:
                        return (k, j, i)
        raise ValueError(
            f"Cannot anchor atom {atom}: fewer than 3 non-collinear placed (or fixed) atoms are "
            f"reachable from it through bonds (placed neighbours: {ks}). Every fragment needs "
            "at least 3 given atoms (for a bead map: at least 3 CG atoms per molecule)."
        )

    def _candidates(self, first: list[int], k: int, exclude: tuple[int, ...],
                    near: list[int] | None, bonded):
        """`first`, then (lazily) every other placed atom by graph distance from k. With
        `shallow_first` (bead maps; `near`: bond distances from the atom being placed): every
        placed atom, ranked `bonded` atoms first, then those at most MAX_DEPTH deep, then
        nearest to the placed atom."""
        seen = set(first)
        rest = (b for b in self._placed_by_distance(k, exclude) if b not in seen)
        if near is not None:
            yield from sorted([*first, *rest], key=lambda b: (
                b not in bonded, self.depth[b] > MAX_DEPTH, near[b]))
            return
        yield from first
        yield from rest

    def _push(self, heap: list, atom: int) -> None:
        heapq.heappush(heap, (self._is_h(atom), self.dist[atom], atom))

    def run(self) -> list[tuple[int, int, int, int]]:
        heap: list = []
        queued: set[int] = set()
        for a in list(self.order):
            for b in self.g.adjacency[a]:
                if b not in self.order and b not in queued:
                    queued.add(b)
                    self._push(heap, b)
        while heap:
            atom, refs = self._next(heap)
            self.rows.append((atom, *refs))
            self.order[atom] = len(self.order)
            self.depth[atom] = 1 + max(self.depth[a] for a in refs)
            for b in self.g.adjacency[atom]:
                if b not in self.order and b not in queued:
                    queued.add(b)
                    self._push(heap, b)
        missing = [a for a in range(self.g.n_atoms) if a not in self.order]
        if missing:
            raise ValueError(
                f"Cannot anchor atoms {missing[:10]}: they are not bonded (even indirectly) to "
                "the root or to any fixed atom. Each molecule fragment needs its own anchor "
                "(for a bead map: at least 3 CG atoms in every fragment)."
            )
        return self.rows

    def _next(self, heap: list) -> tuple[int, tuple[int, int, int]]:
        # 1. an atom completing a required torsion goes first
        pending_required = len(self.done_required) < len(self.required)
        for item in sorted(heap) if pending_required else ():
            refs, n, _ = self._required_refs(item[2])
            if refs is not None:
                heap.remove(item)
                heapq.heapify(heap)
                self.done_required.add(n)
                return item[2], refs
        # 2. heavy atoms, then hydrogens, breadth first; skip atoms that would spoil a torsion
        deferred = []
        try:
            while heap:
                item = heapq.heappop(heap)
                _, _, blocked = self._required_refs(item[2])
                if blocked:
                    deferred.append(item)
                    continue
                atom = item[2]
                return atom, self._chiral_refs(atom) or self._general_refs(atom)
        finally:
            for item in deferred:
                heapq.heappush(heap, item)
        pending = [self.required[n] for n in range(len(self.required))
                   if n not in self.done_required]
        raise ValueError(
            f"Cannot make the required torsions {pending} Z-matrix entries: each needs one end "
            "atom placed after the other three, bonded to its neighbour in the quadruple, and "
            "neither end may be a root or fixed atom while the other is too. Choose another "
            "root (for example the three middle atoms of one torsion) or fewer torsions."
        )


def build_rows(
    graph: MolGraph,
    *,
    root: tuple[int, int, int] | None,
    fixed_atoms: Sequence[int],
    required_torsions: Sequence[tuple[int, int, int, int]],
    centers: Sequence[ChiralCenter],
    xyz: np.ndarray | None,
) -> list[tuple[int, int, int, int]]:
    """Placement rows (l, k, j, i) for every atom not in the root / fixed set."""
    start = list(root) if root is not None else list(fixed_atoms)
    required_torsions = list({min(tuple(t), tuple(t)[::-1]): tuple(t)
                              for t in required_torsions}.values())
    for t in required_torsions:
        if set(t) <= set(start):
            raise ValueError(
                f"Required torsion {tuple(t)} lies entirely in the root / fixed atoms {start}; "
                "it cannot be a Z-matrix entry."
            )
    builder = _Builder(graph, start, required_torsions, centers, xyz,
                       shallow_first=root is None)
    rows = builder.run()
    pending = [tuple(t) for n, t in enumerate(builder.required) if n not in builder.done_required]
    if pending:
        raise ValueError(
            f"Cannot make the required torsions {pending} Z-matrix entries with the start atoms "
            f"{start}: one end atom must be placed after the other three (it cannot be a root "
            "or fixed atom) and be bonded to its neighbour in the quadruple."
        )
    return rows


def candidate_roots(
    graph: MolGraph, required_torsions: Sequence[tuple[int, int, int, int]]
) -> list[tuple[int, int, int]]:
    """Roots to try, most promising first: inner triples shared by most required torsions."""
    count: dict[tuple[int, int, int], int] = {}
    for a, b, c, d in required_torsions:
        for tri in ((b, c, d), (a, b, c)):
            p, q, r = tri
            if q in graph.adjacency[p] and r in graph.adjacency[q]:
                key = (p, q, r) if p < r else (r, q, p)
                count[key] = sum(set(key) <= set(t) for t in required_torsions)
    off_center = _center_distance(graph) if count else []
    ranked = sorted(count, key=lambda key: (-count[key], off_center[key[1]], key))
    fallback = default_root(graph)
    return ranked + ([fallback] if fallback not in ranked else [])


def check_quad(t: Sequence[int], n: int) -> tuple[int, int, int, int]:
    """Validate a torsion quadruple of atom indices."""
    quad = tuple(int(a) for a in t)
    if len(quad) != 4 or len(set(quad)) != 4 or not all(0 <= a < n for a in quad):
        raise ValueError(f"Expected a torsion as 4 distinct atom indices in [0, {n}); got {t}.")
    return quad  # type: ignore[return-value]


def check_root(root: Sequence[int], graph: MolGraph) -> tuple[int, int, int]:
    """Validate a root path (r0, r1, r2) with bonds r0-r1 and r1-r2."""
    r = tuple(int(a) for a in root)
    n = graph.n_atoms
    if len(r) != 3 or len(set(r)) != 3 or not all(0 <= a < n for a in r):
        raise ValueError(f"Expected root as 3 distinct atom indices in [0, {n}); got {root}.")
    if r[0] not in graph.adjacency[r[1]] or r[2] not in graph.adjacency[r[1]]:
        raise ValueError(f"Expected root (r0, r1, r2) with bonds r0-r1 and r1-r2; got {r}.")
    return r  # type: ignore[return-value]


def format_table(zm, topology=None) -> str:
    """A ZMatrix as text: one line per atom (root / fixed atoms, then placed rows with refs)."""
    names = ([str(a) for a in topology.atoms] if topology is not None
             else [str(a) for a in range(zm.n_atoms)])

    def cell(a: int | None) -> str:
        return f"{a:>3} {names[a]:<11}" if a is not None else " " * 15

    def line(cells: Sequence[int | None], gen: int, note: str) -> str:
        return "  ".join(cell(a) for a in cells) + f"  {gen:>3}  {note}"

    head = ["atom", "k (bond)", "j (angle)", "i (torsion)"]
    lines = ["  ".join(f"{h:<15}" for h in head) + "  gen  note"]
    if zm.root:
        r0, r1, r2 = zm.root
        lines.append(line([r0, None, None, None], 0, "root: translation"))
        lines.append(line([r1, r0, None, None], 0, "root: polar, azimuth"))
        lines.append(line([r2, r1, r0, None], 0, "root: rotation about r0->r1"))
    lines += [line([a, None, None, None], 0, "fixed (CG)") for a in zm.fixed_atoms]
    signs = dict(zm.chiral)
    for n, row in enumerate(zm.rows):
        note = f"chiral, sign {signs[n]:+.0f}" if n in signs else ""
        lines.append(line(row, zm.generations[n], note))
    return "\n".join(lines)
