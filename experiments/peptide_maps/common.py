"""Helpers shared by the scripts of this folder (a module, not a script): the bonds of a
molecule that no Z-matrix row carries, and which of them close a side-chain ring.

Scripts here import it as `from common import ...` (Python puts the script's folder first on
sys.path).
"""

from __future__ import annotations

RING_RESIDUES = {"PRO", "PHE", "TYR", "TRP", "HIS"}


def open_bonds(cg_map, topology) -> list[tuple[int, int]]:
    """Bonds (atom index pairs) that no Z-matrix row carries and that are not between two
    beads: ring closures, and for bead maps the last bond of each path between two beads."""
    zm = cg_map.zmatrix
    carried = {frozenset(row[:2]) for row in zm.rows}
    if zm.root:
        carried |= {frozenset(zm.root[:2]), frozenset(zm.root[1:])}
    fixed = set(zm.fixed_atoms)
    return [(a.index, b.index) for a, b in topology.bonds
            if frozenset((a.index, b.index)) not in carried and not {a.index, b.index} <= fixed]


def ring_closures(cg_map, topology) -> list[tuple[int, int]]:
    """The open bonds inside one ring residue (not the peptide bonds between residues)."""
    return [(a, b) for a, b in open_bonds(cg_map, topology)
            if topology.atom(a).residue is topology.atom(b).residue
            and topology.atom(a).residue.name in RING_RESIDUES]
