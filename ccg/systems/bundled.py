"""The bundled peptide systems: Ace-(Ala)3-Nme and Ace-(Ala)5-Nme (amber99sbildn, OBC2 or GBn2)
and chignolin CLN025 (ff14SB + GBn2), each from a minimized structure in `ccg/data` that
`build_bundled` rebuilds from its recipe."""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccg.errors import ConfigError
from ccg.systems.forcefields import DEFAULT_FORCEFIELD, forcefield_files
from ccg.systems.openmm_system import OpenMMSystem
from ccg.systems.peptides import BuiltSystem, build_peptide
from ccg.systems.registry import SYSTEMS

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
