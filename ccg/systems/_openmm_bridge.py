"""The OpenMM side of `OpenMMSystem`: energies as a differentiable torch operation (the fallback
path), and Systems built from PDB and force-field files with clear errors.

`OpenMMEvaluator` owns an OpenMM Context built from a serialized System and evaluates energies
and forces of selected force groups configuration by configuration, in float64. `openmm_energy`
wraps it in a `torch.autograd.Function`: the forward returns energies [B] in x's dtype and
device, the backward is grad_x = -forces * grad_output[:, None, None].

Failures are never hidden: a configuration for which OpenMM raises or returns a non-finite
energy gets energy NaN (and NaN forces), so callers can count and report such samples.

Worker processes (`n_workers > 1`) split a batch into chunks evaluated in parallel; each worker
builds its own Context from the System XML once ('spawn' start method, pool created on first
use). This helps only when one evaluation is expensive (thousands of atoms, implicit solvent,
custom forces) and idle cores are available: each configuration and its forces are pickled to
and from a worker, which costs more than evaluating a small molecule such as alanine dipeptide
(there a single process is faster).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import weakref
from collections.abc import Sequence
from typing import Any

import mdtraj
import numpy as np
import openmm
import torch
from openmm import app, unit


def check_platform(name: str) -> None:
    """Raise ValueError unless OpenMM knows a platform called `name`."""
    available = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    if name not in available:
        raise ValueError(
            f'Unknown OpenMM platform "{name}". Must be one of {available} on this machine '
            '("CPU" is the fast default, "Reference" the double-precision reference).'
        )


def make_context(
    system: openmm.System, platform: str = "CPU", n_threads: int | None = None
) -> openmm.Context:
    """An OpenMM Context for energy evaluation (a dummy Verlet integrator, no dynamics).

    `n_threads` sets the CPU platform's "Threads" property (None: OpenMM's default).
    """
    check_platform(platform)
    properties = {}
    if n_threads is not None and platform == "CPU":
        properties["Threads"] = str(int(n_threads))
    return openmm.Context(
        system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName(platform),
        properties,
    )


def evaluate_positions(
    context: openmm.Context, positions: np.ndarray, groups: int, forces: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies [B] (kJ/mol) and optionally forces [B, n_atoms, 3] (kJ/mol/nm) with a Context.

    `positions` is float64 [B, n_atoms, 3] in nm; `groups` a force-group bit mask. A failed or
    non-finite evaluation gives NaN energy and NaN forces for that configuration.
    """
    n = positions.shape[0]
    energies = np.full(n, np.nan)
    out = np.full(positions.shape, np.nan) if forces else None
    for b in range(n):
        try:
            context.setPositions(positions[b])
            state = context.getState(getEnergy=True, getForces=forces, groups=groups)
            energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        except Exception:  # OpenMM raises OpenMMException or ValueError on bad states
            continue
        if not np.isfinite(energy):
            continue
        energies[b] = energy
        if out is not None:
            out[b] = state.getForces(asNumpy=True).value_in_unit(
                openmm.unit.kilojoule_per_mole / openmm.unit.nanometer
            )
    return energies, out


# --- building Systems from files ------------------------------------------------------

NONBONDED_METHODS = ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME", "LJPME")
CONSTRAINTS = ("HBonds", "AllBonds", "HAngles")
_EXAMPLES = (
    "amber99sbildn.xml",
    "amber14-all.xml",
    "charmm36.xml",
    "amber14/tip3p.xml",
    "implicit/obc2.xml",
)


def _forcefield_data_dir() -> str:
    return os.path.join(os.path.dirname(app.__file__), "data")


def _load_forcefield(names: Sequence[str]) -> app.ForceField:
    """`app.ForceField(*names)` with an error naming an unknown file and how to list valid ones."""
    for name in names:
        try:
            app.ForceField(name)
        except (ValueError, OSError) as err:
            if "locate" not in str(err) and not isinstance(err, FileNotFoundError):
                raise ValueError(f'Could not read force-field file "{name}": {err}') from err
            examples = [f for f in _EXAMPLES if os.path.exists(_forcefield_data_dir() + "/" + f)]
            raise ValueError(
                f'Unknown force-field file "{name}": OpenMM could not locate it. Pass a path to '
                "a force-field XML file or the name of one bundled with OpenMM, for example "
                f"{', '.join(examples)}; all bundled names are the .xml files under "
                f"{_forcefield_data_dir()} (names in subfolders include the folder)."
            ) from None
    return app.ForceField(*names)


def pdb_from_text(text: str, source: str) -> app.PDBFile:
    """Parse PDB text (`source` names it in errors)."""
    try:
        return app.PDBFile(io.StringIO(text))
    except Exception as err:
        raise ValueError(f"Could not read the PDB file {source}: {err}") from err


def pdb_text(topology: mdtraj.Topology, positions_nm: np.ndarray) -> str:
    """PDB text of a topology with positions [n_atoms, 3] in nm."""
    buffer = io.StringIO()
    app.PDBFile.writeFile(topology.to_openmm(), positions_nm * unit.nanometer, buffer)
    return buffer.getvalue()


def jsonable(options: dict[str, Any]) -> dict[str, Any]:
    """createSystem options for `config()`: JSON values kept, others recorded by repr."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        try:
            json.dumps(value)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out


def system_from_pdb(
    text: str,
    forcefield: list[str],
    nonbonded_method: str,
    constraints: str | None,
    options: dict[str, Any],
    source: str,
) -> tuple[openmm.System, app.PDBFile]:
    """`ForceField(*forcefield).createSystem` for PDB text, with clear errors (see from_pdb)."""
    if not forcefield or not all(isinstance(n, str) for n in forcefield):
        raise TypeError(f"Expected forcefield as XML file names; got {forcefield!r}.")
    if nonbonded_method not in NONBONDED_METHODS:
        raise ValueError(
            f'Invalid nonbonded_method "{nonbonded_method}". '
            f"Must be one of {list(NONBONDED_METHODS)}."
        )
    if constraints is not None and constraints not in CONSTRAINTS:
        raise ValueError(
            f'Invalid constraints "{constraints}". Must be None (required by ccg) or one of '
            f"{list(CONSTRAINTS)}."
        )
    pdb = pdb_from_text(text, source)
    ff = _load_forcefield(forcefield)
    unmatched = ff.getUnmatchedResidues(pdb.topology)
    if unmatched:
        listed = ", ".join(f"{r.name} {r.id} (chain {r.chain.id})" for r in unmatched[:10])
        raise ValueError(
            f"No template in {forcefield} matches residue(s) {listed} of {source}. Fixes: add "
            "missing hydrogens (openmm.app.Modeller(...).addHydrogens(forcefield)); use "
            "standard residue names (for example HIS/HIE, ACE/NME caps); or add a force "
            "field that defines these residues."
        )
    try:
        system = ff.createSystem(
            pdb.topology,
            nonbondedMethod=getattr(app, nonbonded_method),
            constraints=None if constraints is None else getattr(app, constraints),
            **options,
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"OpenMM could not create a System for {source}: {err}") from err
    return system, pdb


# --- worker processes ---------------------------------------------------------------------

_WORKER_CONTEXT: openmm.Context | None = None


def _worker_init(system_xml: str, platform: str, n_threads: int | None) -> None:
    global _WORKER_CONTEXT
    system = openmm.XmlSerializer.deserialize(system_xml)
    _WORKER_CONTEXT = make_context(system, platform, n_threads)


def _worker_evaluate(
    args: tuple[np.ndarray, int, bool],
) -> tuple[np.ndarray, np.ndarray | None]:
    if _WORKER_CONTEXT is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("OpenMM worker used before its Context was built.")
    positions, groups, forces = args
    return evaluate_positions(_WORKER_CONTEXT, positions, groups, forces)


class OpenMMEvaluator:
    """Energies and forces of an OpenMM System, one configuration at a time, in float64.

    Args:
        system_xml: the System serialized with `openmm.XmlSerializer.serialize`.
        platform: OpenMM platform name, "CPU" (default) or "Reference".
        n_threads: CPU platform "Threads" (None: OpenMM's default; workers default to 1).
        n_workers: processes evaluating chunks of a batch in parallel (1: in this process).

    The Context and the worker pool are created on first use and are not pickled.
    """

    def __init__(
        self,
        system_xml: str,
        *,
        platform: str = "CPU",
        n_threads: int | None = None,
        n_workers: int = 1,
    ) -> None:
        check_platform(platform)
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"Expected n_workers as an int >= 1; got {n_workers!r}.")
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ValueError(f"Expected n_threads as None or an int >= 1; got {n_threads!r}.")
        self.system_xml = system_xml
        self.platform = platform
        self.n_threads = n_threads
        self.n_workers = n_workers
        self._context: openmm.Context | None = None
        self._pool: Any = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def for_forces(
        cls, system: openmm.System, force_indices: list[int], **kwargs: Any
    ) -> OpenMMEvaluator:
        """An evaluator of a copy of `system` holding only the forces at `force_indices`.

        The k-th kept force is put in force group k, so `1 << k` selects it; `kwargs` go to
        `OpenMMEvaluator`. Raises ValueError past OpenMM's 32 force groups.
        """
        if len(force_indices) > 32:
            raise ValueError(
                f"{len(force_indices)} forces need the OpenMM path, but OpenMM has 32 force "
                "groups. Combine forces (for example into one CustomBondForce) first."
            )
        copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
        for index in reversed(range(copy.getNumForces())):
            if index not in force_indices:
                copy.removeForce(index)
        for group, force in enumerate(copy.getForces()):
            force.setForceGroup(group)
        return cls(openmm.XmlSerializer.serialize(copy), **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_context=None, _pool=None, _finalizer=None)
        return state

    @property
    def context(self) -> openmm.Context:
        """The in-process Context (built on first access)."""
        if self._context is None:
            system = openmm.XmlSerializer.deserialize(self.system_xml)
            self._context = make_context(system, self.platform, self.n_threads)
        return self._context

    def _get_pool(self) -> Any:
        if self._pool is None:
            threads = 1 if self.n_threads is None else self.n_threads
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(
                self.n_workers,
                initializer=_worker_init,
                initargs=(self.system_xml, self.platform, threads),
            )
            self._finalizer = weakref.finalize(self, self._pool.terminate)
        return self._pool

    def close(self) -> None:
        """Shut the worker pool down (it is re-created if needed later)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool = None
        self._finalizer = None

    def evaluate(
        self, positions: np.ndarray, groups: int = -1, forces: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Energies [B] in kJ/mol and forces [B, n_atoms, 3] in kJ/mol/nm (None if not asked).

        `positions`: float64 [B, n_atoms, 3] in nm; `groups`: force-group bit mask (-1: all).
        Failed configurations give NaN.
        """
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        if self.n_workers == 1 or positions.shape[0] < 2:
            return evaluate_positions(self.context, positions, groups, forces)
        chunks = np.array_split(positions, min(self.n_workers, positions.shape[0]))
        results = self._get_pool().map(_worker_evaluate, [(c, groups, forces) for c in chunks])
        energies = np.concatenate([r[0] for r in results])
        out = np.concatenate([r[1] for r in results]) if forces else None
        return energies, out


class _OpenMMEnergy(torch.autograd.Function):
    """Energies from OpenMM; backward uses OpenMM's forces (first derivatives only)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, evaluator: OpenMMEvaluator, groups: int
    ) -> torch.Tensor:
        positions = x.detach().to("cpu", torch.float64).numpy()
        energies, forces = evaluator.evaluate(positions, groups, forces=ctx.needs_input_grad[0])
        if forces is not None:
            ctx.save_for_backward(torch.from_numpy(forces).to(x.device, x.dtype))
        return torch.from_numpy(energies).to(x.device, x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (forces,) = ctx.saved_tensors
        return -forces * grad_output[:, None, None], None, None


def openmm_energy(x: torch.Tensor, evaluator: OpenMMEvaluator, groups: int = -1) -> torch.Tensor:
    """Differentiable energy of the force groups in `groups` (bit mask) evaluated by OpenMM.

    Args:
        x: positions [B, n_atoms, 3] in nm (float32 or float64, any device; evaluated in
            float64 on the CPU).
        evaluator: the OpenMM evaluator of the system.
        groups: force-group bit mask (-1: every group).

    Returns:
        Energies [B] in kJ/mol in x's dtype and device; NaN where OpenMM failed.
    """
    return _OpenMMEnergy.apply(x, evaluator, groups)
