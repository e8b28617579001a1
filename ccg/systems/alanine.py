"""Alanine dipeptide (ACE-ALA-NME, 22 atoms) in vacuum: the reference molecular system."""

from __future__ import annotations

import importlib.resources
from typing import Any

from ccg.systems.openmm_system import OpenMMSystem
from ccg.systems.registry import SYSTEMS

ALANINE_DIPEPTIDE_PDB = "alanine_dipeptide.pdb"
"""File name of the bundled structure in `ccg/data`."""


@SYSTEMS.register("alanine-dipeptide", kind="molecular", default_map="phi-psi")
def alanine_dipeptide(**kwargs: Any) -> OpenMMSystem:
    """Alanine dipeptide with amber99sbildn, NoCutoff, no constraints (fully flexible).

    Every term (bonds, angles, torsions, nonbonded) runs on the torch path. Reference
    positions [22, 3] (nm) come from the bundled PDB.

    Args:
        **kwargs: passed to `OpenMMSystem.from_pdb` (for example `platform="Reference"`,
            `use_torch=False`, `n_workers=2`).
    """
    options: dict[str, Any] = {"nonbonded_method": "NoCutoff", "constraints": None, **kwargs}
    resource = importlib.resources.files("ccg") / "data" / ALANINE_DIPEPTIDE_PDB
    with importlib.resources.as_file(resource) as path:
        return OpenMMSystem.from_pdb(path, ("amber99sbildn.xml",), **options)
