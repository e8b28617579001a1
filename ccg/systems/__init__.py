"""Targets: batched differentiable potential energies U(x)."""

from ccg.systems.alanine import alanine_dipeptide
from ccg.systems.analytic import (
    AnalyticSystem,
    DoubleWell2D,
    HarmonicFastModes,
    MuellerBrown,
    make_analytic,
)
from ccg.systems.base import MolecularSystem, System
from ccg.systems.openmm_system import OpenMMSystem

__all__ = [
    "AnalyticSystem",
    "DoubleWell2D",
    "HarmonicFastModes",
    "MolecularSystem",
    "MuellerBrown",
    "OpenMMSystem",
    "System",
    "alanine_dipeptide",
    "make_analytic",
]
