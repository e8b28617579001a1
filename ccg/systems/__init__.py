"""Targets: batched differentiable potential energies U(x)."""

from ccg.systems.base import MolecularSystem, System

__all__ = ["MolecularSystem", "System"]
