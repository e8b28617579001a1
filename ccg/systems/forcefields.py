"""Force-field files for a protein force field and an implicit-solvent model, and the OpenMM
System built from them.

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

from collections.abc import Sequence
from typing import Any

import openmm
from openmm import app

from ccg.errors import ConfigError
from ccg.systems._openmm_bridge import _load_forcefield

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


def load_forcefield(files: list[str]) -> app.ForceField:
    """OpenMM ForceField of these files; ConfigError for a file that does not exist."""
    try:
        return _load_forcefield(files)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def check_templates(ff: app.ForceField, topology: app.Topology, files: list[str],
                    source: str) -> None:
    """ConfigError naming the residues of `topology` that no template of `ff` matches."""
    unmatched = ff.getUnmatchedResidues(topology)
    if unmatched:
        listed = ", ".join(f"{r.name} {r.id} (chain {r.chain.id})" for r in unmatched[:10])
        raise ConfigError(
            f"No template found in the force-field files {files} for residue(s) {listed} of "
            f"{source}. Fix: use force-field files that define these residues (for example "
            '"amber14-all.xml"), standard residue names (HIS/HIE, ACE/NME caps), or add '
            "missing hydrogens (add_hydrogens=True)."
        )


def create_openmm_system(ff: app.ForceField, topology: app.Topology, files: list[str], source: str,
                         options: dict[str, Any]) -> openmm.System:
    """`ff.createSystem` as ccg samples it (NoCutoff, no constraints, flexible water);
    OpenMM's errors become a ConfigError naming the files."""
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
