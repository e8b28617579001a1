"""Targets: batched differentiable potential energies U(x)."""

from ccg.systems.alanine import alanine_dipeptide
from ccg.systems.analytic import (
    AnalyticSystem,
    DoubleWell2D,
    HarmonicFastModes,
    MuellerBrown,
    analytic_names,
    make_analytic,
)
from ccg.systems.base import MolecularSystem, System
from ccg.systems.bundled import build_bundled, bundled_pdb_path
from ccg.systems.forcefields import IMPLICIT_SOLVENT_MODELS, forcefield_files
from ccg.systems.openmm_system import OpenMMSystem
from ccg.systems.peptides import BuiltSystem, build_peptide, prepare_pdb
from ccg.systems.registry import SYSTEM_KINDS, SYSTEMS, system_from_config, system_to_config
from ccg.systems.torus_wells import TorusDoubleWells

__all__ = [
    "IMPLICIT_SOLVENT_MODELS",
    "SYSTEMS",
    "SYSTEM_KINDS",
    "AnalyticSystem",
    "BuiltSystem",
    "DoubleWell2D",
    "HarmonicFastModes",
    "MolecularSystem",
    "MuellerBrown",
    "OpenMMSystem",
    "System",
    "TorusDoubleWells",
    "alanine_dipeptide",
    "analytic_names",
    "build_bundled",
    "build_peptide",
    "bundled_pdb_path",
    "forcefield_files",
    "make_analytic",
    "prepare_pdb",
    "system_from_config",
    "system_to_config",
]
