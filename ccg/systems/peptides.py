"""Peptides from a one-letter sequence or a PDB file, in vacuum or implicit solvent.

`build_peptide("AAA")` builds the backbone and side chains with PeptideBuilder (standard
residue geometries, chosen backbone torsions), adds ACE/NME caps and every hydrogen with
OpenMM's Modeller, minimizes the structure with OpenMM and returns the PDB text and the
`OpenMMSystem`. `prepare_pdb(path)` does the same for a structure file (hydrogens added only
when asked). Both check everything cheap first (sequence letters, force-field files, hydrogens,
templates) and write nothing unless every step succeeded. The force-field files of each
implicit-solvent model are chosen by `ccg.systems.forcefields`; the bundled peptides live in
`ccg.systems.bundled`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import openmm
from openmm import app, unit

from ccg.errors import ConfigError
from ccg.systems._openmm_bridge import check_platform, jsonable
from ccg.systems.forcefields import (
    DEFAULT_FORCEFIELD,
    check_templates,
    create_openmm_system,
    forcefield_files,
    load_forcefield,
)
from ccg.systems.openmm_system import OpenMMSystem
from ccg.systems.structure import minimize, pdb_text, write_text

ONE_LETTER: dict[str, str] = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS",
    "I": "ILE", "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN",
    "R": "ARG", "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR",
}
"""One-letter codes of the 20 standard amino acids and their residue names."""

_BACKBONE = ("N", "CA", "C", "O", "CH3")


class BuiltSystem(NamedTuple):
    """A structure and its system: `pdb` (PDB text of the minimized structure, every atom,
    hydrogens included) and `system` (its `OpenMMSystem`, reference positions = that
    structure)."""

    pdb: str
    system: OpenMMSystem


# --- options -----------------------------------------------------------------------------


def check_sequence(sequence: str) -> str:
    """The sequence in upper case; ConfigError naming an unknown letter and its position."""
    if not isinstance(sequence, str) or not sequence.strip():
        raise ConfigError(
            f"Expected a peptide sequence of one-letter amino-acid codes such as 'AAA'; got "
            f"{sequence!r}."
        )
    seq = sequence.strip().upper()
    for k, letter in enumerate(seq):
        if letter not in ONE_LETTER:
            raise ConfigError(
                f"Unknown residue letter '{letter}' at position {k + 1} of the sequence "
                f"'{sequence}'. Expected one-letter codes of the 20 standard amino acids "
                f"({''.join(sorted(ONE_LETTER))}). Fix: replace it, or build the molecule "
                "another way and pass its PDB file instead."
            )
    return seq


def _check_backbone(
    backbone: Sequence[Sequence[float]] | None, n: int
) -> list[tuple[float, float]]:
    if backbone is None:
        return [(-120.0, 140.0)] * n  # PeptideBuilder's extended default
    rows = [tuple(float(v) for v in row) for row in backbone]
    if len(rows) != n or any(len(row) != 2 or not np.isfinite(row).all() for row in rows):
        raise ConfigError(
            f"Expected backbone as {n} (phi, psi) pairs in degrees, one per residue of the "
            f"sequence; got {backbone!r}."
        )
    return rows  # type: ignore[return-value]


# --- building ----------------------------------------------------------------------------


def _check_chi1(chi1: Mapping[int, float] | None, seq: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for position, angle in (chi1 or {}).items():
        if not isinstance(position, int) or not 1 <= position <= len(seq):
            raise ConfigError(
                f"Expected chi1 keys as residue positions 1..{len(seq)}; got {position!r}."
            )
        if seq[position - 1] in "GA":
            raise ConfigError(
                f"Residue {position} ({ONE_LETTER[seq[position - 1]]}) has no chi1 angle."
            )
        out[position] = float(angle)
    return out


def peptide_heavy_atoms(
    sequence: str,
    *,
    caps: bool = True,
    backbone: Sequence[Sequence[float]] | None = None,
    chi1: Mapping[int, float] | None = None,
) -> tuple[app.Topology, np.ndarray]:
    """Heavy atoms of a peptide built with PeptideBuilder: (topology, positions [n, 3] nm).

    Args:
        sequence: one-letter codes.
        caps: ACE and NME caps (built as the carbonyl and amide of two flanking glycines), or
            free termini (an OXT oxygen; charged when hydrogens are added at pH 7).
        backbone: (phi, psi) in degrees per residue; None: PeptideBuilder's extended default
            (-120, 140). Peptide bonds trans.
        chi1: side-chain torsion N-CA-CB-XG in degrees by residue position (1-based), for the
            residues whose PeptideBuilder default rotamer does not fit; the rest of the side
            chain turns with it.
    """
    from PeptideBuilder import Geometry, PeptideBuilder  # heavy import, only when building

    seq = check_sequence(sequence)
    torsions = _check_backbone(backbone, len(seq))
    rotamers = _check_chi1(chi1, seq)
    letters = f"G{seq}G" if caps else seq
    angles = [(-120.0, 140.0), *torsions, (-120.0, 140.0)] if caps else torsions
    geometries = []
    for k, letter in enumerate(letters):
        geometry = Geometry.geometry(letter)
        geometry.phi = angles[k][0]
        if k > 0:
            geometry.psi_im1 = angles[k - 1][1]
        position = k if caps else k + 1  # 1-based position in the sequence
        if position in rotamers and 0 < k < len(letters) - (1 if caps else 0):
            names = [
                n for n in vars(geometry) if n.startswith("N_CA_CB_") and n.endswith("_diangle")
            ]
            shift = rotamers[position] - getattr(geometry, names[0])
            for n in names:
                setattr(geometry, n, getattr(geometry, n) + shift)
        geometries.append(geometry)
    structure = PeptideBuilder.make_structure_from_geos(geometries)
    if not caps:
        PeptideBuilder.add_terminal_OXT(structure)
    residues = list(structure[0]["A"])
    topology = app.Topology()
    chain = topology.addChain("A")
    positions = []
    for k, residue in enumerate(residues):
        keep: dict[str, str] | None = None
        name = ONE_LETTER.get(letters[k], "GLY")
        if caps and k == 0:
            name, keep = "ACE", {"CA": "CH3", "C": "C", "O": "O"}
        elif caps and k == len(residues) - 1:
            name, keep = "NME", {"N": "N", "CA": "C"}
        out = topology.addResidue(name, chain)
        for atom in residue:
            atom_name = atom.get_id()
            if keep is not None:
                if atom_name not in keep:
                    continue
                atom_name = keep[atom_name]
            topology.addAtom(atom_name, app.element.get_by_symbol(atom.element), out)
            positions.append(np.asarray(atom.coord, dtype=np.float64) / 10.0)  # Å -> nm
    topology.createStandardBonds()
    return topology, np.array(positions)


def _add_hydrogens(
    modeller: app.Modeller, ff: app.ForceField, files: list[str], source: str
) -> None:
    """`modeller.addHydrogens(ff)` (pH 7) with OpenMM's template errors as ConfigError.

    Modeller starts some hydrogens at random positions (Python's `random`) and relaxes them:
    seeded here (the global state restored after) and relaxed on the Reference platform, so
    that a sequence always gives the same structure.
    """
    state = random.getstate()
    random.seed(0)
    try:
        modeller.addHydrogens(ff, platform=openmm.Platform.getPlatformByName("Reference"))
    except Exception as err:
        what = "No template found in" if "No template found" in str(err) else "Failed with"
        raise ConfigError(
            f"{what} the force-field files {files} while adding hydrogens to {source}: {err} "
            "Fix: use force-field files that define every residue (for example "
            '"amber14-all.xml" for proteins) and standard residue names.'
        ) from err
    finally:
        random.setstate(state)


def _finish(
    topology: app.Topology,
    positions_nm: np.ndarray,
    files: list[str],
    ff: app.ForceField,
    source: str,
    remarks: list[str],
    *,
    do_minimize: bool,
    minimize_platform: str,
    restrain_backbone: bool,
    pdb_out: str | os.PathLike[str] | None,
    create_system: dict[str, Any],
    system_options: dict[str, Any],
) -> BuiltSystem:
    """Templates, System, minimization, PDB text, OpenMMSystem, and last the file."""
    check_templates(ff, topology, files, source)
    openmm_system = create_openmm_system(ff, topology, files, source, create_system)
    if do_minimize:
        restrained = [
            atom.index for atom in topology.atoms() if restrain_backbone and atom.name in _BACKBONE
        ]
        positions_nm = minimize(
            openmm_system, positions_nm, platform=minimize_platform, restrained=restrained
        )
        how = "backbone restrained, then free" if restrained else "free"
        remarks = [*remarks, f"minimized with OpenMM ({minimize_platform} platform; {how})"]
    pdb = pdb_text(topology, positions_nm, remarks)
    system = OpenMMSystem(openmm_system, topology, positions=positions_nm, **system_options)
    system._pdb = pdb
    system._build = {
        "forcefield": files,
        "nonbonded_method": "NoCutoff",
        "constraints": None,
        "create_system": jsonable({"rigidWater": False, **create_system}),
        "source": source,
    }
    if pdb_out is not None:
        write_text(pdb_out, pdb)
    return BuiltSystem(pdb, system)


def build_peptide(
    sequence: str,
    *,
    forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD,
    implicit_solvent: str = "obc2",
    caps: bool = True,
    backbone: Sequence[Sequence[float]] | None = None,
    chi1: Mapping[int, float] | None = None,
    minimize_structure: bool = True,
    minimize_platform: str = "Reference",
    pdb_out: str | os.PathLike[str] | None = None,
    create_system: dict[str, Any] | None = None,
    **system_options: Any,
) -> BuiltSystem:
    """A peptide from its one-letter sequence: structure, minimization, `OpenMMSystem`.

    PeptideBuilder places the heavy atoms (standard geometries, the given backbone torsions,
    trans peptide bonds), ACE/NME caps come from two flanking glycines' carbonyl and amide
    groups, OpenMM's Modeller adds every hydrogen (pH 7: charged Asp, Glu, Lys, Arg; His as
    Modeller chooses), and OpenMM minimizes the result in the chosen force field.

    Args:
        sequence: one-letter codes of standard amino acids, e.g. "AAA" (Ace-(Ala)3-Nme).
        forcefield: protein force-field XML files; see `forcefield_files`.
        implicit_solvent: "obc2", "gbn2" or "none" (module docstring).
        caps: ACE/NME caps (default) or free, charged termini.
        backbone: (phi, psi) in degrees per residue; None: extended (-120, 140).
        chi1: side-chain chi1 angles in degrees by residue position (1-based) where the
            default rotamer clashes (see `peptide_heavy_atoms`).
        minimize_structure: run OpenMM's energy minimization (default True): first with the
            backbone heavy atoms restrained (`RESTRAINT_K`), so side chains relax around the
            chosen torsions, then free.
        minimize_platform: OpenMM platform of the minimization ("Reference": deterministic).
        pdb_out: also write the PDB here (only once everything succeeded).
        create_system: extra `ForceField.createSystem` options (e.g. {"soluteDielectric": 2.0}).
        **system_options: passed to `OpenMMSystem` (platform, n_workers, use_torch).

    Returns:
        `BuiltSystem(pdb, system)`.

    Raises:
        ConfigError: an unknown residue letter, an unknown implicit-solvent model, force-field
            files that do not exist or do not cover the molecule (checked before minimizing).
    """
    seq = check_sequence(sequence)
    files = forcefield_files(forcefield, implicit_solvent)
    check_platform(minimize_platform)
    ff = load_forcefield(files)
    _check_backbone(backbone, len(seq))
    _check_chi1(chi1, seq)
    topology, positions = peptide_heavy_atoms(seq, caps=caps, backbone=backbone, chi1=chi1)
    modeller = app.Modeller(topology, positions * unit.nanometer)
    _add_hydrogens(modeller, ff, files, f"the peptide {seq}")
    capping = "ACE/NME caps" if caps else "free termini"
    remarks = [
        f"ccg build_peptide: sequence {seq}, {capping}",
        "heavy atoms by PeptideBuilder, hydrogens by OpenMM Modeller",
        f"force field: {' '.join(files)}",
    ]
    return _finish(
        modeller.topology,
        np.asarray(modeller.positions.value_in_unit(unit.nanometer)),
        files,
        ff,
        f"the peptide {seq}",
        remarks,
        do_minimize=minimize_structure,
        minimize_platform=minimize_platform,
        restrain_backbone=True,
        pdb_out=pdb_out,
        create_system=dict(create_system or {}),
        system_options=system_options,
    )


def prepare_pdb(
    pdb_path: str | os.PathLike[str],
    *,
    forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD,
    implicit_solvent: str = "obc2",
    add_hydrogens: bool = False,
    minimize_structure: bool = False,
    minimize_platform: str = "Reference",
    pdb_out: str | os.PathLike[str] | None = None,
    create_system: dict[str, Any] | None = None,
    **system_options: Any,
) -> BuiltSystem:
    """A molecule from a PDB file, in vacuum or implicit solvent.

    Args:
        pdb_path: the structure. Without hydrogens it is refused unless `add_hydrogens`.
        forcefield, implicit_solvent, create_system, **system_options: as in `build_peptide`.
        add_hydrogens: add missing hydrogens with OpenMM's Modeller (pH 7).
        minimize_structure: minimize with OpenMM first (default False: the file's positions).
        minimize_platform: OpenMM platform of the minimization.
        pdb_out: also write the PDB used (hydrogens, minimized positions) here.

    Raises:
        ConfigError: a missing or unreadable file, a structure without hydrogens (and
            add_hydrogens False), force-field files that do not exist or do not cover it.
    """
    path = Path(pdb_path)
    if not path.is_file():
        raise ConfigError(f"PDB file not found: {path}. Fix: check the path.")
    files = forcefield_files(forcefield, implicit_solvent)
    check_platform(minimize_platform)
    pdb = check_hydrogens(path, add_hydrogens)
    ff = load_forcefield(files)
    topology, positions = pdb.topology, pdb.getPositions(asNumpy=True)
    remarks = [f"ccg prepare_pdb: {path.name}", f"force field: {' '.join(files)}"]
    if add_hydrogens:
        modeller = app.Modeller(topology, positions)
        _add_hydrogens(modeller, ff, files, str(path))
        topology, positions = modeller.topology, modeller.positions
        remarks.append("hydrogens added by OpenMM Modeller (pH 7)")
    return _finish(
        topology,
        np.asarray(positions.value_in_unit(unit.nanometer)),
        files,
        ff,
        str(path),
        remarks,
        do_minimize=minimize_structure,
        minimize_platform=minimize_platform,
        restrain_backbone=False,
        pdb_out=pdb_out,
        create_system=dict(create_system or {}),
        system_options=system_options,
    )


def check_hydrogens(pdb_path: str | os.PathLike[str], add_hydrogens: bool) -> app.PDBFile:
    """Read a PDB file; ConfigError if it cannot be read, or has no hydrogen atom and
    `add_hydrogens` is False (the message names --add-hydrogens)."""
    path = Path(pdb_path)
    try:
        pdb = app.PDBFile(str(path))
    except Exception as err:
        raise ConfigError(f"Could not read the PDB file {path}: {err}") from err
    n_hydrogens = sum(
        1 for atom in pdb.topology.atoms() if getattr(atom.element, "symbol", None) == "H"
    )
    if n_hydrogens == 0 and not add_hydrogens:
        raise ConfigError(
            f"The PDB file {path} has no hydrogen atoms ({pdb.topology.getNumAtoms()} heavy "
            "atoms); ccg needs every atom of the force field. Fix: pass add_hydrogens=True "
            "(ccg: --add-hydrogens) to add them with OpenMM's Modeller at pH 7, or add them "
            "with pdbfixer first."
        )
    return pdb


