"""A default CG proposal for bead maps: frames of a short OpenMM Langevin run.

Bead maps need CG frames to train on (their z are Cartesian, there is no natural box). When the
user gives none, `langevin_frames` runs the system's own OpenMM System from its reference
structure at the highest training temperature and returns the coarse-grained frames. This is
the force field only (no external data); the flow is still trained by reverse KL. The run is
short, so it covers the basins reachable from the reference at that temperature, not the
whole CG space: pass --cg-frames for anything broader.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

from ccg._checks import check_temperature
from ccg.io.trajectories import read_cg_frames

logger = logging.getLogger(__name__)


def langevin_frames(system, temperature_k: float, *, n_frames: int = 2000,
                    stride: int = 100, timestep_fs: float = 1.0, friction_per_ps: float = 1.0,
                    seed: int = 0, platform: str = "Reference") -> np.ndarray:
    """Positions [n_frames, n_atoms, 3] (nm) every `stride` steps of Langevin dynamics.

    Args:
        system: an `OpenMMSystem` with reference positions (the start).
        temperature_k: T in K.
        n_frames, stride: frames to keep and steps between them (after 10 strides of
            equilibration).
        timestep_fs: time step in fs (1 fs: the system is fully flexible, with X-H bonds).
    """
    check_temperature(temperature_k)
    if system.reference_positions is None:
        raise ValueError("The system has no reference positions to start the Langevin run from.")
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * unit.kelvin, friction_per_ps / unit.picosecond,
        timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(int(seed) + 1)
    context = openmm.Context(system.openmm_system, integrator,
                             openmm.Platform.getPlatformByName(platform))
    context.setPositions(system.reference_positions)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, int(seed) + 1)
    integrator.step(10 * stride)
    frames = np.empty((n_frames, system.n_atoms, 3))
    for k in range(n_frames):
        integrator.step(stride)
        state = context.getState(getPositions=True)
        frames[k] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return frames


def langevin_cg_frames(system, cg_map, temperature_k: float, **kwargs) -> torch.Tensor:
    """CG coordinates z [n_frames, cg_dim] (float64) of `langevin_frames`."""
    frames = torch.as_tensor(langevin_frames(system, temperature_k, **kwargs))
    return cg_map.coarse_grain(frames).detach()


def proposal_frames(model, cg_frames: str | Path | None, temperature_k: float, *,
                    seed: int = 0) -> torch.Tensor:
    """CG frames z [N, cg_dim] for a bead map's z proposal: those of the trajectory
    `cg_frames` (atomistic or CG atoms only), else of `langevin_frames` at `temperature_k`."""
    if cg_frames is not None:
        return read_cg_frames(cg_frames, model.cg_map, model.system)
    logger.info("bead map without --cg-frames: proposing CG frames from a 200 ps OpenMM Langevin "
                "run at %s K (force field only; see ccg.training.md_proposal)", temperature_k)
    return langevin_cg_frames(model.system, model.cg_map, temperature_k, seed=seed)
