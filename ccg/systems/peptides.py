"""Peptides from a one-letter sequence or a PDB file, in vacuum or implicit solvent, and the
bundled peptide systems: Ace-(Ala)3-Nme, Ace-(Ala)5-Nme and chignolin (CLN025).

`build_peptide("AAA")` builds the backbone and side chains with PeptideBuilder (standard
residue geometries, chosen backbone torsions), adds ACE/NME caps and every hydrogen with
OpenMM's Modeller, minimizes the structure with OpenMM and returns the PDB text and the
`OpenMMSystem`. `prepare_pdb(path)` does the same for a structure file (hydrogens added only
when asked). Both check everything cheap first (sequence letters, force-field files, hydrogens,
templates) and write nothing unless every step succeeded.

Implicit solvent (`implicit_solvent`):

- "obc2": OBC type II generalized Born with the ACE surface term. With an amber99-family
  protein force field (amber99sbildn.xml, amber99sb.xml, amber96.xml, amber03.xml,
  amber10.xml) it is that force field's own `*_obc.xml` file, whose GBSAOBCForce is the
  setup of the published data-free benchmarks (amber99sbildn + amber99_obc.xml); with any
  other force field it is OpenMM's `implicit/obc2.xml` (a CustomGBForce). To use the
  CustomGBForce form with amber99sbildn, list "implicit/obc2.xml" in `forcefield` yourself:
  an implicit-solvent file already in the list is used as it is.
- "gbn2": OpenMM's `implicit/gbn2.xml` (GBn2, a CustomGBForce with the neck correction),
  parametrized with ff14SB (amber14-all.xml).
- "none": vacuum.

All systems are NoCutoff, without constraints, flexible water: what ccg samples. Their
generalized Born and nonbonded terms run on the torch path (see `ccg.systems._gb_terms`).
"""

from __future__ import annotations

import importlib.resources
import io
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import openmm
from openmm import app, unit

from ccg.errors import ConfigError
from ccg.systems._openmm_bridge import _load_forcefield, check_platform, jsonable
from ccg.systems.openmm_system import OpenMMSystem
from ccg.systems.registry import SYSTEMS

ONE_LETTER: dict[str, str] = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS",
    "I": "ILE", "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN",
    "R": "ARG", "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR",
}
"""One-letter codes of the 20 standard amino acids and their residue names."""

IMPLICIT_SOLVENT_MODELS = ("obc2", "gbn2", "none")
"""Values of `implicit_solvent`."""

DEFAULT_FORCEFIELD = ("amber99sbildn.xml",)
"""The protein force field of the bundled alanine systems (as alanine dipeptide)."""

_OBC_COMPANION = {
    "amber96.xml": "amber96_obc.xml",
    "amber99sb.xml": "amber99_obc.xml",
    "amber99sbildn.xml": "amber99_obc.xml",
    "amber99sbnmr.xml": "amber99_obc.xml",
    "amber03.xml": "amber03_obc.xml",
    "amber10.xml": "amber10_obc.xml",
}
"""Protein force fields whose own GBSAOBCForce file "obc2" uses."""

_IMPLICIT_FILES = {
    "amber96_obc.xml": "obc2",
    "amber99_obc.xml": "obc2",
    "amber03_obc.xml": "obc2",
    "amber10_obc.xml": "obc2",
    "implicit/obc2.xml": "obc2",
    "implicit/gbn2.xml": "gbn2",
    "implicit/obc1.xml": "obc1",
    "implicit/hct.xml": "hct",
    "implicit/gbn.xml": "gbn",
}
"""OpenMM's implicit-solvent files and the model each one is."""

MINIMIZE_TOLERANCE = 1.0
"""Energy minimization stops when the largest force is below this (kJ/mol/nm)."""

RESTRAINT_K = 1000.0
"""Force constant (kJ/mol/nm^2) holding a built peptide's backbone in place while its side
chains relax, before the free minimization."""

_BACKBONE = ("N", "CA", "C", "O", "CH3")


class BuiltSystem(NamedTuple):
    """A structure and its system: `pdb` (PDB text of the minimized structure, every atom,
    hydrogens included) and `system` (its `OpenMMSystem`, reference positions = that
    structure)."""

    pdb: str
    system: OpenMMSystem


# --- options -----------------------------------------------------------------------------


def _as_files(forcefield: str | Sequence[str]) -> list[str]:
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
    if not files or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(
            f"Expected forcefield as OpenMM force-field XML file names; got {forcefield!r}. "
            'Fix: pass for example ("amber99sbildn.xml",) or ("amber14-all.xml",).'
        )
    return files


def forcefield_files(
    forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD, implicit_solvent: str = "obc2"
) -> list[str]:
    """The force-field XML files for a protein force field and an implicit-solvent model.

    Args:
        forcefield: protein force-field files (names bundled with OpenMM or paths). An
            implicit-solvent file in the list (amber99_obc.xml, implicit/obc2.xml, ...) is
            kept as it is and must be the model `implicit_solvent` names.
        implicit_solvent: "obc2", "gbn2" or "none" (see the module docstring).

    Returns:
        The files to load, in order: e.g. ["amber99sbildn.xml", "amber99_obc.xml"] for
        ("amber99sbildn.xml",) and "obc2", ["amber14-all.xml", "implicit/gbn2.xml"] for
        ("amber14-all.xml",) and "gbn2".
    """
    files = _as_files(forcefield)
    if implicit_solvent not in IMPLICIT_SOLVENT_MODELS:
        raise ConfigError(
            f'Unknown implicit_solvent "{implicit_solvent}". Must be one of '
            f"{list(IMPLICIT_SOLVENT_MODELS)} (OBC2 or GBn2 generalized Born, or vacuum)."
        )
    listed = [f for f in files if f in _IMPLICIT_FILES]
    if listed:
        models = {_IMPLICIT_FILES[f] for f in listed}
        if len(listed) > 1 or models != {implicit_solvent}:
            raise ConfigError(
                f"forcefield lists the implicit-solvent file(s) {listed} "
                f"({', '.join(sorted(models))}) but implicit_solvent is "
                f'"{implicit_solvent}". Fix: list at most one implicit-solvent file and set '
                "implicit_solvent to its model, or leave the file out and let "
                "implicit_solvent choose it."
            )
        return files
    if implicit_solvent == "none":
        return files
    if implicit_solvent == "gbn2":
        return [*files, "implicit/gbn2.xml"]
    companion = next((_OBC_COMPANION[f] for f in files if f in _OBC_COMPANION), None)
    return [*files, companion or "implicit/obc2.xml"]


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


def _template_check(ff: app.ForceField, topology: app.Topology, files: list[str], source: str):
    unmatched = ff.getUnmatchedResidues(topology)
    if unmatched:
        listed = ", ".join(f"{r.name} {r.id} (chain {r.chain.id})" for r in unmatched[:10])
        raise ConfigError(
            f"No template found in the force-field files {files} for residue(s) {listed} of "
            f"{source}. Fix: use force-field files that define these residues (for example "
            '"amber14-all.xml"), standard residue names (HIS/HIE, ACE/NME caps), or add '
            "missing hydrogens (add_hydrogens=True)."
        )


def _create_system(ff: app.ForceField, topology: app.Topology, files: list[str], source: str,
                   options: dict[str, Any]) -> openmm.System:
    try:
        return ff.createSystem(
            topology,
            nonbondedMethod=app.NoCutoff,
            constraints=None,
            rigidWater=False,
            **options,
        )
    except Exception as err:  # OpenMM raises ValueError, KeyError or OpenMMException here
        raise ConfigError(
            f"OpenMM could not create a System for {source} with the force-field files "
            f"{files}: {err}. Fix: check that these files cover every residue and atom type "
            "(an amber99 *_obc.xml file only covers amber99-family force fields; "
            '"implicit/obc2.xml" and "implicit/gbn2.xml" cover any).'
        ) from err


def minimize(
    system: openmm.System,
    positions_nm: np.ndarray,
    *,
    platform: str = "Reference",
    tolerance: float = MINIMIZE_TOLERANCE,
    max_iterations: int = 0,
    restrained: Sequence[int] = (),
    restraint_k: float = RESTRAINT_K,
) -> np.ndarray:
    """Positions [n, 3] (nm) after OpenMM's L-BFGS energy minimization (LocalEnergyMinimizer).

    Args:
        system: the OpenMM System (not modified).
        positions_nm: start positions [n, 3] in nm.
        platform: OpenMM platform ("Reference": deterministic).
        tolerance: stop when the largest force is below this (kJ/mol/nm).
        max_iterations: 0 runs until converged.
        restrained: atoms held near their start positions in a first minimization by
            harmonic restraints of `restraint_k` (kJ/mol/nm^2), so that side chains relax
            around the given backbone before everything is minimized freely.
    """
    check_platform(platform)
    start = np.asarray(positions_nm, dtype=np.float64)
    if len(restrained):
        held = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
        restraint = openmm.CustomExternalForce("0.5*k_restraint*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        restraint.addGlobalParameter("k_restraint", float(restraint_k))
        for name in ("x0", "y0", "z0"):
            restraint.addPerParticleParameter(name)
        for atom in restrained:
            restraint.addParticle(int(atom), [float(v) for v in start[atom]])
        held.addForce(restraint)
        start = _minimized(held, start, platform, tolerance, max_iterations)
    return _minimized(system, start, platform, tolerance, max_iterations)


def _minimized(
    system: openmm.System, positions_nm: np.ndarray, platform: str, tolerance: float,
    max_iterations: int,
) -> np.ndarray:
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform)
    )
    context.setPositions(positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance, max_iterations)
    state = context.getState(getPositions=True, getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not np.isfinite(energy):
        raise ConfigError(
            "Energy minimization ended at a non-finite energy; the structure has clashes "
            "OpenMM cannot resolve. Fix: check the input structure."
        )
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def _pdb_text(topology: app.Topology, positions_nm: np.ndarray, remarks: Sequence[str]) -> str:
    buffer = io.StringIO()
    for k, remark in enumerate(remarks):
        buffer.write(f"REMARK {k + 2:3d} {remark}\n")
    app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, buffer, keepIds=True)
    return buffer.getvalue()


def _write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write atomically (a temporary file in the same folder, then a rename)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(
            f"The folder of {target} does not exist. Fix: create it or choose another path."
        )
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        umask = os.umask(0o022)  # mkstemp makes the file owner-only; give it open()'s mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    _template_check(ff, topology, files, source)
    openmm_system = _create_system(ff, topology, files, source, create_system)
    if do_minimize:
        restrained = [
            atom.index for atom in topology.atoms() if restrain_backbone and atom.name in _BACKBONE
        ]
        positions_nm = minimize(
            openmm_system, positions_nm, platform=minimize_platform, restrained=restrained
        )
        how = "backbone restrained, then free" if restrained else "free"
        remarks = [*remarks, f"minimized with OpenMM ({minimize_platform} platform; {how})"]
    pdb = _pdb_text(topology, positions_nm, remarks)
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
        _write_text(pdb_out, pdb)
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
    ff = _forcefield(files)
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
    ff = _forcefield(files)
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


def _forcefield(files: list[str]) -> app.ForceField:
    try:
        return _load_forcefield(files)
    except ValueError as err:
        raise ConfigError(str(err)) from err


# --- bundled systems -----------------------------------------------------------------------

BUNDLED_PDB = {
    "ala3": "ace_ala3_nme.pdb",
    "ala5": "ace_ala5_nme.pdb",
    "chignolin": "chignolin_cln025.pdb",
}
"""File names in `ccg/data` of the bundled minimized structures."""

_STRAND = (-120.0, 130.0)
BUNDLED_RECIPES: dict[str, dict[str, Any]] = {
    "ala3": {"sequence": "AAA", "forcefield": DEFAULT_FORCEFIELD, "implicit_solvent": "obc2"},
    "ala5": {"sequence": "AAAAA", "forcefield": DEFAULT_FORCEFIELD, "implicit_solvent": "obc2"},
    "chignolin": {
        "sequence": "YYDPETGTWY",
        "caps": False,
        "forcefield": ("amber14-all.xml",),
        "implicit_solvent": "gbn2",
        # Strands Y1-D3 and T8-Y10, loop P4-G7 (alpha_R, alpha_R, alpha_R, alpha_L at Gly7);
        # Tyr2 chi1 = 180 (its default rotamer overlaps Tyr10's ring).
        "backbone": (
            _STRAND, _STRAND, _STRAND, (-65.0, -30.0), (-60.0, -30.0), (-90.0, 0.0),
            (80.0, 10.0), _STRAND, _STRAND, _STRAND,
        ),
        "chi1": {2: 180.0},
    },
}
"""`build_peptide` arguments that made each bundled structure (minimized on the Reference
platform: backbone restrained, then free). Ace-(Ala)n-Nme: extended backbone. Chignolin CLN025
(YYDPETGTWY, Honda et al. 2008), free termini as in the experimental peptide: no experimental
structure could be downloaded here, so it is built from these torsions (not taken from PDB
5AWL) as a beta hairpin; after minimization in ff14SB + GBn2 its strands are paired by the
Asp3 N-H ... O=C Thr8 hydrogen bond (Asp3-Thr8 C-alpha distance 0.51 nm), with the turn
hydrogen bonds Gly7 N-H ... O=C Pro4 and Trp9 N-H ... O=C Gly7 (tests/test_peptides.py
checks the pairing)."""


def build_bundled(molecule: str, **kwargs: Any) -> BuiltSystem:
    """Rebuild a bundled structure from its recipe (`BUNDLED_RECIPES`); `kwargs` override
    `build_peptide` arguments (for example `pdb_out=...`)."""
    if molecule not in BUNDLED_RECIPES:
        raise ConfigError(
            f'Unknown bundled molecule "{molecule}". Must be one of {list(BUNDLED_RECIPES)}.'
        )
    return build_peptide(**{**BUNDLED_RECIPES[molecule], **kwargs})


def bundled_pdb_path(molecule: str) -> Path:
    """Path of a bundled structure: "ala3", "ala5" or "chignolin"."""
    if molecule not in BUNDLED_PDB:
        raise ConfigError(
            f'Unknown bundled molecule "{molecule}". Must be one of {list(BUNDLED_PDB)}.'
        )
    return Path(str(importlib.resources.files("ccg") / "data" / BUNDLED_PDB[molecule]))


def _bundled(molecule: str, forcefield: Sequence[str], implicit_solvent: str,
             **kwargs: Any) -> OpenMMSystem:
    options: dict[str, Any] = {"nonbonded_method": "NoCutoff", "constraints": None, **kwargs}
    files = forcefield_files(forcefield, implicit_solvent)
    return OpenMMSystem.from_pdb(bundled_pdb_path(molecule), files, **options)


@SYSTEMS.register("ala3-obc2", kind="molecular", default_map="phi-psi")
def ala3_obc2(**kwargs: Any) -> OpenMMSystem:
    """Ace-(Ala)3-Nme (42 atoms), amber99sbildn + OBC2 (amber99_obc.xml, GBSAOBCForce).

    Reference positions from the bundled minimized structure; every term on the torch path.
    `kwargs` go to `OpenMMSystem.from_pdb` (platform, use_torch, n_workers, ...).
    """
    return _bundled("ala3", DEFAULT_FORCEFIELD, "obc2", **kwargs)


@SYSTEMS.register("ala5-obc2", kind="molecular", default_map="phi-psi")
def ala5_obc2(**kwargs: Any) -> OpenMMSystem:
    """Ace-(Ala)5-Nme (62 atoms), amber99sbildn + OBC2 (amber99_obc.xml, GBSAOBCForce)."""
    return _bundled("ala5", DEFAULT_FORCEFIELD, "obc2", **kwargs)


@SYSTEMS.register("ala3-gbn2", kind="molecular", default_map="phi-psi")
def ala3_gbn2(**kwargs: Any) -> OpenMMSystem:
    """Ace-(Ala)3-Nme (42 atoms), amber99sbildn + GBn2 (implicit/gbn2.xml)."""
    return _bundled("ala3", DEFAULT_FORCEFIELD, "gbn2", **kwargs)


@SYSTEMS.register("ala5-gbn2", kind="molecular", default_map="phi-psi")
def ala5_gbn2(**kwargs: Any) -> OpenMMSystem:
    """Ace-(Ala)5-Nme (62 atoms), amber99sbildn + GBn2 (implicit/gbn2.xml)."""
    return _bundled("ala5", DEFAULT_FORCEFIELD, "gbn2", **kwargs)


@SYSTEMS.register("chignolin-gbn2", kind="molecular", default_map="phi-psi")
def chignolin_gbn2(**kwargs: Any) -> OpenMMSystem:
    """Chignolin CLN025 (YYDPETGTWY, free termini, 166 atoms), amber14-all (ff14SB) + GBn2
    (implicit/gbn2.xml), the force field GBn2 was parametrized with. The bundled structure is
    a beta hairpin built from the torsions in `BUNDLED_RECIPES["chignolin"]` and minimized."""
    return _bundled("chignolin", ("amber14-all.xml",), "gbn2", **kwargs)
