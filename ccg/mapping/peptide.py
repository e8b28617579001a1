"""Peptide torsions by residue: the `backbone-torsions` and `torsions` CG maps.

Torsions are named by kind and residue number, as `ccg train --torsions` and `[map] torsions`
take them. One syntax, two forms:

- a named torsion `KIND:RES`, KIND one of phi, psi, omega, chi1, chi2, chi3, chi4 and RES the
  residue number (`"phi:2"`, `"chi1:6"`); for phi, psi and omega the colon may be left out
  (`"phi2"`, `"psi2"`, `"omega3"`), which is also how the z coordinates are named. The atoms
  are mdtraj's (`mdtraj.compute_phi`, ...): phi<i> = C(i−1)–N(i)–CA(i)–C(i), psi<i> =
  N(i)–CA(i)–C(i)–N(i+1), omega<i> = CA(i−1)–C(i−1)–N(i)–CA(i) (the peptide bond before
  residue i, numbered like phi<i>), chi<k><i> the side-chain torsions of residue i.
- an atom quadruple `RES:A-B-C-D`, four atom names of residue RES joined by "-"; a name
  written `-X` is atom X of the previous residue and `+X` of the next one (the GROMACS
  convention): `"2:-C-N-CA-C"` is phi2, `"PHE6:N-CA-CB-CG"` is chi1 of Phe 6.

RES is the residue number of the structure (the PDB's residue sequence number: with ACE/NME
caps, ACE is 1 and the first amino acid 2), optionally preceded by the residue name, which is
then checked (`"ALA2"`). When residue numbers repeat (several chains) the residues are
numbered 1, 2, ... in topology order instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from ccg.errors import ConfigError
from ccg.mapping.base import CG_MAPS, as_reference_xyz
from ccg.mapping.torsion import TorsionMap, _mdtraj_torsions

TORSION_KINDS = ("phi", "psi", "omega", "chi1", "chi2", "chi3", "chi4")
"""Named torsion kinds of `peptide_torsions` (mdtraj's definitions)."""

_ATOM_OF_RESIDUE = {"phi": 2, "omega": 2}
"""Which atom of mdtraj's quadruple gives the residue number (default: the second)."""

_NAMED = re.compile(r"^(?:(phi|psi|omega):?|(chi[1-4]):)([A-Za-z]*)(-?\d+)$")
_QUAD = re.compile(r"^([A-Za-z]*)(-?\d+):([-+]?[^-+\s]+)-([-+]?[^-+\s]+)-([-+]?[^-+\s]+)"
                   r"-([-+]?[^-+\s]+)$")


def torsion_name(kind: str, residue: int) -> str:
    """The z name of a named torsion: "phi2", "psi2", "omega3", "chi1:6"."""
    return f"{kind}:{residue}" if kind[-1].isdigit() else f"{kind}{residue}"


def residue_numbers(topology) -> list[int]:
    """The number of each residue as torsion names use it: the PDB residue sequence numbers
    (`resSeq`) when they are unique, else 1, 2, ... in topology order."""
    seqs = [int(r.resSeq) for r in topology.residues]
    if len(set(seqs)) == len(seqs):
        return seqs
    return list(range(1, len(seqs) + 1))


def peptide_torsions(topology) -> dict[str, tuple[int, int, int, int]]:
    """Every named torsion of a peptide, by name, residue by residue.

    Args:
        topology: mdtraj.Topology.

    Returns:
        {name: (a, b, c, d) atom indices}, ordered by residue and, within a residue, phi, psi,
        omega, chi1..chi4 (e.g. "phi2", "psi2", "omega3", "chi1:3"; see the module docstring).
    """
    import mdtraj as md

    numbers = residue_numbers(topology)
    traj = md.Trajectory(np.zeros((1, topology.n_atoms, 3), dtype=np.float32), topology)
    found: list[tuple[int, int, str, tuple[int, int, int, int]]] = []
    for rank, (kind, compute) in enumerate(_mdtraj_torsions().items()):
        idx, _ = compute(traj)
        for quad in idx:
            residue = topology.atom(int(quad[_ATOM_OF_RESIDUE.get(kind, 1)])).residue.index
            found.append((residue, rank, kind, tuple(int(a) for a in quad)))
    found.sort(key=lambda item: (item[0], item[1]))
    return {torsion_name(kind, numbers[res]): quad for res, _, kind, quad in found}


def backbone_torsions(topology) -> dict[str, tuple[int, int, int, int]]:
    """Every phi and psi, ordered phi_1, psi_1, phi_2, ... by residue (names "phi2", "psi2",
    ...); a terminal residue without a neighbour lacks one of them."""
    return {name: quad for name, quad in peptide_torsions(topology).items()
            if name.startswith(("phi", "psi"))}


def _available(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _residue(topology, numbers: list[int], resname: str, number: int, spec: str):
    residues = list(topology.residues)
    if number not in numbers:
        listed = ", ".join(f"{r.name}{n}" for r, n in zip(residues, numbers, strict=True))
        raise ConfigError(
            f'Torsion "{spec}": no residue number {number}. The molecule has residues '
            f"{listed}. Fix: use one of these numbers in [map] torsions (--torsions)."
        )
    residue = residues[numbers.index(number)]
    if resname and resname.upper() != residue.name.upper():
        raise ConfigError(
            f'Torsion "{spec}": residue {number} is {residue.name}, not {resname.upper()}. '
            f'Fix: write "{residue.name}{number}" or only the number.'
        )
    return residue


def _quadruple(topology, numbers: list[int], match: re.Match, spec: str):
    resname, number = match.group(1), int(match.group(2))
    residue = _residue(topology, numbers, resname, number, spec)
    residues = list(topology.residues)
    quad = []
    for token in match.groups()[2:]:
        shift = {"-": -1, "+": 1}.get(token[0], 0)
        name = token[1:] if shift else token
        k = residue.index + shift
        if not 0 <= k < len(residues):
            where = "previous" if shift < 0 else "next"
            raise ConfigError(f'Torsion "{spec}": residue {number} has no {where} residue '
                              f'(atom "{token}"). Fix: choose atoms that exist.')
        other = residues[k]
        atoms = [a.index for a in other.atoms if a.name == name]
        if not atoms:
            names = " ".join(a.name for a in other.atoms)
            raise ConfigError(
                f'Torsion "{spec}": residue {other.name}{numbers[k]} has no atom "{name}"; its '
                f"atoms are {names}. Fix: use these atom names (prefix - for the previous "
                "residue, + for the next)."
            )
        quad.append(atoms[0])
    if len(set(quad)) != 4:
        raise ConfigError(f'Torsion "{spec}": expected 4 distinct atoms; got {quad}.')
    bonded = {frozenset((a.index, b.index)) for a, b in topology.bonds}
    for a, b in pairwise(quad):
        if frozenset((a, b)) not in bonded:
            raise ConfigError(
                f'Torsion "{spec}": atoms {topology.atom(a)} and {topology.atom(b)} are not '
                "bonded; a torsion A-B-C-D needs the bonds A-B, B-C and C-D."
            )
    return f"{residue.name}{number}:{'-'.join(match.groups()[2:])}", tuple(quad)


def check_torsion_specs(specs: Any) -> list[str]:
    """The torsion list of `[map] torsions`, checked for syntax only (no molecule needed).

    Raises:
        ConfigError: not a non-empty list of strings, or a string of neither form.
    """
    if (not isinstance(specs, list | tuple) or not specs
            or not all(isinstance(s, str) for s in specs)):
        raise ConfigError(
            f'[map] torsions must be a non-empty list of torsion names such as ["phi2", '
            f'"psi2", "chi1:3", "2:-C-N-CA-C"]; got {specs!r}.'
        )
    for spec in specs:
        if not (_NAMED.match(spec.strip()) or _QUAD.match(spec.strip())):
            raise ConfigError(
                f'[map] torsions: cannot read "{spec}". Expected KIND:RES (KIND one of '
                f'{list(TORSION_KINDS)}, e.g. "chi1:3"; "phi2" for phi, psi, omega) or '
                'RES:A-B-C-D atom names (e.g. "2:-C-N-CA-C", "PHE6:N-CA-CB-CG"; -X / +X: atom '
                "X of the previous / next residue). Fix: [map] torsions (--torsions)."
            )
    return [s.strip() for s in specs]


def resolve_torsions(topology, specs: Sequence[str]) -> dict[str, tuple[int, int, int, int]]:
    """Torsion names (module docstring) -> {z name: atom quadruple}, in the order given.

    Raises:
        ConfigError: bad syntax, an unknown residue or atom, a torsion the molecule does not
            have (the message lists those it has), or a torsion given twice.
    """
    specs = check_torsion_specs(list(specs))
    numbers = residue_numbers(topology)
    table = peptide_torsions(topology)
    out: dict[str, tuple[int, int, int, int]] = {}
    for spec in specs:
        named = _NAMED.match(spec)
        if named:
            kind = named.group(1) or named.group(2)
            resname, number = named.group(3), int(named.group(4))
            _residue(topology, numbers, resname, number, spec)
            name = torsion_name(kind, number)
            if name not in table:
                have = [n for n in table if n.startswith(kind)]
                listed = (f"the {kind} torsions {', '.join(have)}" if have else
                          f"no {kind}; its named torsions are {_available(list(table))}")
                raise ConfigError(
                    f'Torsion "{spec}": residue {number} has no {kind}. The molecule has '
                    f"{listed}. Fix: [map] torsions (--torsions)."
                )
            quad = table[name]
        else:
            name, quad = _quadruple(topology, numbers, _QUAD.match(spec), spec)
        same = [n for n, q in out.items() if q in (quad, quad[::-1])]
        if same:
            raise ConfigError(f'Torsion "{spec}" is given twice (also as "{same[0]}"). Fix: '
                              "list each torsion once in [map] torsions (--torsions).")
        out[name] = quad
    return out


def peptide_torsion_map(topology, specs: Sequence[str] | None, reference_xyz: Any) -> TorsionMap:
    """A TorsionMap over named peptide torsions (`specs`; None: every phi and psi, residue by
    residue, as `backbone_torsions`).

    Args:
        topology: mdtraj.Topology.
        specs: torsion names (module docstring), e.g. ["phi2", "psi2", "chi1:3"].
        reference_xyz: reference structure [n_atoms, 3] nm.

    Raises:
        ConfigError: see `resolve_torsions`; a molecule without phi / psi torsions.
    """
    if specs is None:
        torsions = backbone_torsions(topology)
        if not torsions:
            raise ConfigError(
                "The molecule has no backbone phi / psi torsions (mdtraj finds none: no "
                'peptide bond). Fix: use [map] cg = "heavy-atoms" (--cg heavy-atoms).'
            )
    else:
        torsions = resolve_torsions(topology, specs)
    ref = as_reference_xyz(reference_xyz, topology.n_atoms)
    try:
        return TorsionMap(topology, torsions, ref)
    except ValueError as err:
        raise ConfigError(
            f"The torsions {list(torsions)} cannot all be CG coordinates together: {err} "
            "Fix: leave out a torsion that shares three atoms with another (for example a "
            "chi1 and an atom quadruple over the same bonds)."
        ) from None


@CG_MAPS.register("backbone-torsions", systems="molecular")
def backbone_torsion_map(system) -> TorsionMap:
    """`[map] cg = "backbone-torsions"`: every phi and psi of a peptide, ordered phi2, psi2,
    phi3, ... residue by residue (the peptide omegas become stiff r coordinates in
    `build_model`, as for phi-psi)."""
    return peptide_torsion_map(system.topology, None, system.reference_positions)


@CG_MAPS.register("torsions", systems="molecular", options=("torsions",))
def listed_torsion_map(system, torsions: Sequence[str] | None = None) -> TorsionMap:
    """`[map] cg = "torsions"` with `torsions = ["phi2", "psi2", "chi1:3", ...]`: the listed
    torsions (syntax: `ccg.mapping.peptide`)."""
    if torsions is None:
        raise ConfigError('[map] cg = "torsions" needs the list [map] torsions = ["phi2", '
                          '"psi2", ...] (ccg train --torsions phi2 psi2).')
    return peptide_torsion_map(system.topology, torsions, system.reference_positions)


def phi_psi_pairs(cg_names: Sequence[str],
                  torsion_atoms: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int]]:
    """The (phi, psi) pairs of one residue each among CG torsions, as indices into z.

    Names are "phi"/"psi", "phi_k"/"psi_k" (the `phi-psi` map) or "phi<res>"/"psi<res>" (the
    `backbone-torsions` map); a phi pairs with the psi of the same suffix, or, with
    `torsion_atoms` (the map's atom quadruples), with the psi whose C-alpha (its second atom)
    is the phi's (its third). Pairs are ordered by their phi; unpaired torsions are left out.
    """
    names = list(cg_names)
    phis = [i for i, n in enumerate(names) if re.fullmatch(r"phi(_?\d+)?", n)]
    psis = [i for i, n in enumerate(names) if re.fullmatch(r"psi(_?\d+)?", n)]
    pairs = []
    for i in phis:
        if torsion_atoms is not None:
            match = [j for j in psis if torsion_atoms[j][1] == torsion_atoms[i][2]]
        else:
            match = [j for j in psis if names[j][3:] == names[i][3:]]
        if match:
            pairs.append((i, match[0]))
    return pairs


def residue_blocks(cg_names: Sequence[str],
                   torsion_atoms: Sequence[Sequence[int]] | None = None
                   ) -> list[tuple[int, ...]]:
    """Blocks of z indices for a block-product z proposal: each residue's (phi, psi) pair
    (`phi_psi_pairs`), every other torsion alone; ordered by their first index."""
    pairs = phi_psi_pairs(cg_names, torsion_atoms)
    paired = {i for pair in pairs for i in pair}
    singles = [(i,) for i in range(len(cg_names)) if i not in paired]
    return sorted([*pairs, *singles])
