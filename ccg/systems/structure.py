"""Preparing a structure: OpenMM energy minimization (optionally with the backbone held first),
PDB text with remarks, and an atomic write of that text."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from ccg.errors import ConfigError
from ccg.systems._openmm_bridge import check_platform

MINIMIZE_TOLERANCE = 1.0
"""Energy minimization stops when the largest force is below this (kJ/mol/nm)."""

RESTRAINT_K = 1000.0
"""Force constant (kJ/mol/nm^2) holding a built peptide's backbone in place while its side
chains relax, before the free minimization."""


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


def pdb_text(topology: app.Topology, positions_nm: np.ndarray, remarks: Sequence[str]) -> str:
    """PDB text of `topology` at `positions_nm` [n, 3] (nm), the `remarks` first."""
    buffer = io.StringIO()
    for k, remark in enumerate(remarks):
        buffer.write(f"REMARK {k + 2:3d} {remark}\n")
    app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, buffer, keepIds=True)
    return buffer.getvalue()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write atomically (a temporary file in the same folder, then a rename). The same as
    `ccg.io.atomic.atomic_write_text`, which this layer cannot import, but a missing folder
    is a ConfigError."""
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
