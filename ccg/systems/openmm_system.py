"""`OpenMMSystem`: batched, differentiable U(x) of any OpenMM System.

Standard force terms (harmonic bonds and angles, periodic torsions, nonbonded without or with
a non-periodic cutoff, generalized Born implicit solvent: GBSAOBCForce and the CustomGBForce of
OpenMM's implicit/obc2.xml and implicit/gbn2.xml) are compiled into torch and evaluated for the
whole batch at once, on x's device and dtype; every other force is evaluated by OpenMM
configuration by configuration (slower, float64 on the CPU) and joined through autograd, so
forces and gradients work either way.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import openmm
import torch
from openmm import app, unit

from ccg.systems import _gb_kernel
from ccg.systems._gb_terms import fuse_gb_nonbonded  # also registers the GB compilers
from ccg.systems._openmm_bridge import (
    OpenMMEvaluator,
    check_platform,
    jsonable,
    openmm_energy,
    pdb_from_text,
    pdb_text,
    system_from_pdb,
)
from ccg.systems._torch_terms import TorchTerm, UnsupportedForce, atom_major, compile_force
from ccg.systems.base import MolecularSystem
from ccg.systems.registry import SYSTEM_KINDS

_NO_ENERGY = ("CMMotionRemover", "AndersenThermostat", "MonteCarloBarostat")
"""Force classes without a potential energy (ignored; other barostats end in "Barostat")."""
_CONFIG_VERSION = 1


@SYSTEM_KINDS.register("openmm")
class OpenMMSystem(MolecularSystem):
    """The potential energy U(x) (kJ/mol) of an OpenMM System, for batches x [B, n_atoms, 3] nm.

    Args:
        openmm_system: the `openmm.System` (no constraints, no virtual sites).
        topology: an `mdtraj.Topology` or `openmm.app.Topology` of the same atoms, in order.
        positions: optional reference positions [n_atoms, 3] in nm (numpy or a Quantity).
        platform: OpenMM platform for forces the torch path cannot compile ("CPU" or
            "Reference").
        n_workers: worker processes for that OpenMM path ('spawn' start method, so scripts need
            an `if __name__ == "__main__":` guard). Worth it only when one OpenMM evaluation
            is expensive (large or implicit-solvent systems) and cores are idle; for small
            molecules the inter-process copies cost more than they save.
        use_torch: False evaluates every force with OpenMM (a reference for the torch path).

    Energies keep x's dtype and device; forces follow by autograd (`forces(x)`).
    """

    def __init__(
        self,
        openmm_system: openmm.System,
        topology: mdtraj.Topology | app.Topology,
        *,
        positions: np.ndarray | unit.Quantity | None = None,
        platform: str = "CPU",
        n_workers: int = 1,
        use_torch: bool = True,
    ) -> None:
        if not isinstance(openmm_system, openmm.System):
            raise TypeError(
                f"Expected openmm_system as an openmm.System; got {type(openmm_system).__name__}."
            )
        if isinstance(topology, app.Topology):
            topology = mdtraj.Topology.from_openmm(topology)
        if not isinstance(topology, mdtraj.Topology):
            raise TypeError(
                "Expected topology as an mdtraj.Topology or openmm.app.Topology; "
                f"got {type(topology).__name__}."
            )
        n = openmm_system.getNumParticles()
        if topology.n_atoms != n:
            raise ValueError(
                f"The topology has {topology.n_atoms} atoms but the System has {n} particles; "
                "they must describe the same atoms in the same order."
            )
        virtual = [i for i in range(n) if openmm_system.isVirtualSite(i)]
        if virtual:
            raise ValueError(
                f"The System has {len(virtual)} virtual sites (first: particle {virtual[0]}); "
                "ccg needs every particle to be a real atom. Use a force field without virtual "
                "sites (for example TIP3P instead of TIP4P water)."
            )
        if openmm_system.getNumConstraints():
            raise ValueError(
                f"The System has {openmm_system.getNumConstraints()} constraints; ccg samples "
                "fully flexible molecules. Create the System with constraints=None (and "
                "rigidWater=False if it contains water)."
            )
        check_platform(platform)
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"Expected n_workers as an int >= 1; got {n_workers!r}.")
        self._system = openmm_system
        self._topology = topology
        self._positions = self._check_positions(positions, n)
        self._platform = platform
        self._n_workers = n_workers
        self._use_torch = bool(use_torch)
        self._build: dict[str, Any] | None = None
        self._pdb: str | None = None

        self._torch_terms: dict[str, TorchTerm] = {}
        self._groups: dict[str, int] = {}
        self._reasons: dict[str, str] = {}
        self._names: list[str] = []
        fallback: list[int] = []
        seen: dict[str, int] = {}
        for index, force in enumerate(openmm_system.getForces()):
            cls = type(force).__name__
            if cls in _NO_ENERGY or cls.endswith("Barostat"):
                continue
            name = cls if cls not in seen else f"{cls}:{seen[cls]}"
            seen[cls] = seen.get(cls, 0) + 1
            self._names.append(name)
            try:
                if not self._use_torch:
                    raise UnsupportedForce("use_torch=False")
                self._torch_terms[name] = compile_force(force)
            except UnsupportedForce as why:
                self._reasons[name] = str(why)
                self._groups[name] = len(fallback)
                fallback.append(index)
        # Generalized Born and nonbonded share one pass over the atom pairs in energy().
        self._fused = fuse_gb_nonbonded(self._torch_terms)
        self._mask = sum(1 << g for g in self._groups.values())
        self._evaluator = (
            OpenMMEvaluator.for_forces(
                openmm_system, fallback, platform=platform, n_workers=n_workers
            )
            if fallback
            else None
        )
        if fallback and self._use_torch:
            classes = sorted({type(openmm_system.getForce(i)).__name__ for i in fallback})
            warnings.warn(
                f"OpenMMSystem: {', '.join(classes)} cannot be compiled to torch and will be "
                f"evaluated by OpenMM ({platform} platform) one configuration at a time, which is "
                "slower than the batched torch path. See summary() for the reasons.",
                UserWarning,
                stacklevel=2,
            )

    @staticmethod
    def _check_positions(positions: object, n_atoms: int) -> np.ndarray | None:
        if positions is None:
            return None
        if isinstance(positions, unit.Quantity):
            positions = positions.value_in_unit(unit.nanometer)
        array = np.array(positions, dtype=np.float64)
        if array.shape != (n_atoms, 3):
            raise ValueError(
                f"Expected positions of shape [{n_atoms}, 3] in nm; got {list(array.shape)}."
            )
        if not np.isfinite(array).all():
            raise ValueError("positions contain NaN or infinite values.")
        return array

    # --- construction from files -------------------------------------------------------------

    @classmethod
    def from_pdb(
        cls,
        pdb_path: str | os.PathLike[str],
        forcefield: str | Sequence[str] = ("amber99sbildn.xml",),
        *,
        nonbonded_method: str = "NoCutoff",
        constraints: str | None = None,
        platform: str = "CPU",
        n_workers: int = 1,
        use_torch: bool = True,
        **create_system_kwargs: Any,
    ) -> OpenMMSystem:
        """Build from a PDB file and OpenMM force-field XML files.

        Args:
            pdb_path: the PDB (all hydrogens present); its positions become
                `reference_positions`.
            forcefield: force-field XML names or paths, e.g. ("amber14-all.xml",).
            nonbonded_method: one of "NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald",
                "PME", "LJPME" (only NoCutoff runs on the torch path).
            constraints: must stay None (ccg needs fully flexible systems).
            platform, n_workers, use_torch: as in `OpenMMSystem`.
            **create_system_kwargs: passed on to `ForceField.createSystem`.
        """
        path = Path(pdb_path)
        if not path.is_file():
            raise FileNotFoundError(f"PDB file not found: {path}. Check the path.")
        names = [forcefield] if isinstance(forcefield, str) else list(forcefield)
        text = path.read_text()
        options = dict(create_system_kwargs)
        system, pdb = system_from_pdb(
            text, names, nonbonded_method, constraints, options, source=str(path)
        )
        out = cls(
            system,
            pdb.topology,
            positions=pdb.getPositions(asNumpy=True),
            platform=platform,
            n_workers=n_workers,
            use_torch=use_torch,
        )
        out._pdb = text
        out._build = {
            "forcefield": names,
            "nonbonded_method": nonbonded_method,
            "constraints": constraints,
            "create_system": jsonable(options),
            "pdb_path": str(path),
        }
        return out

    @classmethod
    def from_xml(
        cls,
        system_xml: str | os.PathLike[str],
        topology_pdb: str | os.PathLike[str],
        **kwargs: Any,
    ) -> OpenMMSystem:
        """Build from a serialized System (XML text or a file path) and a PDB for the topology.

        The PDB's positions become `reference_positions`; `kwargs` go to `OpenMMSystem`.
        """
        if isinstance(system_xml, str) and system_xml.lstrip().startswith("<"):
            xml = system_xml
        else:
            xml_path = Path(system_xml)
            if not xml_path.is_file():
                raise FileNotFoundError(f"System XML file not found: {xml_path}.")
            xml = xml_path.read_text()
        path = Path(topology_pdb)
        if not path.is_file():
            raise FileNotFoundError(f"PDB file not found: {path}. Check the path.")
        try:
            system = openmm.XmlSerializer.deserialize(xml)
        except Exception as err:
            raise ValueError(f"Could not deserialize the System XML: {err}") from err
        if not isinstance(system, openmm.System):
            raise ValueError(f"The XML holds a {type(system).__name__}, not an openmm.System.")
        text = path.read_text()
        pdb = pdb_from_text(text, str(path))
        out = cls(system, pdb.topology, positions=pdb.getPositions(asNumpy=True), **kwargs)
        out._pdb = text
        return out

    # --- properties ----------------------------------------------------------------------------

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return self._topology.n_atoms

    @property
    def topology(self) -> mdtraj.Topology:
        """The mdtraj.Topology of the atoms, in the order of x's second axis."""
        return self._topology

    @property
    def openmm_system(self) -> openmm.System:
        """The openmm.System this was built from (not modified)."""
        return self._system

    @property
    def reference_positions(self) -> np.ndarray | None:
        """Reference positions [n_atoms, 3] in nm (a copy), or None."""
        return None if self._positions is None else self._positions.copy()

    @property
    def term_names(self) -> list[str]:
        """Energy terms in System order; a repeated class gets a suffix (":1", ":2", ...)."""
        return list(self._names)

    @property
    def term_paths(self) -> dict[str, str]:
        """Which path evaluates each term: "torch" or "openmm"."""
        return {n: "torch" if n in self._torch_terms else "openmm" for n in self._names}

    # --- energies ------------------------------------------------------------------------------

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self._torch_terms:
            xt = atom_major(x)
            joined = set(self._fused[:2]) if self._fused is not None else set()
            parts = [t(xt) for name, t in self._torch_terms.items() if name not in joined]
            if self._fused is not None:
                parts.append(self._fused[2](xt))
        if self._evaluator is not None:
            parts.append(openmm_energy(x, self._evaluator, self._mask))
        if not parts:  # a System without energy terms: U = 0, still differentiable
            return (x * 0).sum((1, 2))
        energy = parts[0]
        for part in parts[1:]:
            energy = energy + part
        return energy

    def energy_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-term energies: {term name: U_term(x) [B] in kJ/mol}, differentiable.

        Args:
            x: configurations [B, n_atoms, 3] in nm (validated as in `energy`).

        Torch terms share one layout pass; each OpenMM-path term is a separate OpenMM pass.
        """
        self._check_input(x)
        xt = atom_major(x) if self._torch_terms else None
        out: dict[str, torch.Tensor] = {}
        for name in self._names:
            if name in self._torch_terms:
                out[name] = self._torch_terms[name](xt)
            else:
                out[name] = openmm_energy(x, self._evaluator, 1 << self._groups[name])
        return out

    # --- the C++ generalized Born kernel ---------------------------------------------------

    def use_gb_kernel(self) -> bool:
        """Evaluate generalized Born energy and forces on the CPU with ccg's C++ kernel
        (three passes over the atom pairs, vectorized over the batch; 2-3x the compiled torch
        path at B = 1,024, experiments/bench). The kernel is built on first use (about a
        minute, needs a C++ compiler; then cached). Returns whether any term uses it: False
        without a GB term, for settings it does not cover (a cutoff, salt), or when it cannot
        be built; the torch path then stays. Values and forces are the torch path's to
        rounding (tests: 1e-12 relative in float64); CUDA and second derivatives keep using
        the torch path. `compile_energy` calls this."""
        # New containers: a shallow copy of this system made before the call is unaffected.
        self._torch_terms, self._fused, changed = _gb_kernel.with_kernel(
            self._torch_terms, self._fused)
        return changed

    @property
    def uses_gb_kernel(self) -> bool:
        """Whether `energy` evaluates a generalized Born term with the C++ kernel."""
        terms = [*self._torch_terms.values(), *([self._fused[2]] if self._fused else [])]
        return any(getattr(t, "use_kernel", False) for t in terms)

    def compile_energy(self, **options) -> None:
        """`System.compile_energy`, with generalized Born terms on the C++ kernel on the CPU
        (`use_gb_kernel`; it needs the same C++ compiler as torch.compile there)."""
        self.use_gb_kernel()
        super().compile_energy(**options)

    # --- description and serialization ----------------------------------------------------

    def summary(self) -> str:
        """A human-readable description: atoms, residues, each term and its path."""
        residues = " ".join(str(r) for r in list(self._topology.residues)[:12])
        if self._topology.n_residues > 12:
            residues += " ..."
        lines = [
            f"OpenMMSystem: {self.n_atoms} atoms, {self._topology.n_residues} residues "
            f"({residues})",
            "terms:",
        ]
        width = max((len(n) for n in self._names), default=4)
        for name in self._names:
            if name in self._torch_terms:
                detail = f"torch   ({self._torch_terms[name].n_interactions} interactions)"
            else:
                detail = f"openmm  ({self._reasons[name]})"
            lines.append(f"  {name:<{width}}  {detail}")
        if self._fused is not None:
            lines.append(
                f"energy() evaluates {self._fused[0]} and {self._fused[1]} together, in one "
                "pass over the atom pairs"
            )
        if self.uses_gb_kernel:
            lines.append("generalized Born on the CPU: the C++ kernel (use_gb_kernel)")
        if self._evaluator is not None:
            lines.append(f"OpenMM path: platform {self._platform}, n_workers {self._n_workers}")
        return "\n".join(lines)

    @property
    def pdb(self) -> str:
        """The structure as PDB text: the file it was built from (for a built peptide or a
        prepared PDB, the minimized structure with every hydrogen), else written from the
        topology and the reference positions."""
        if self._pdb is not None:
            return self._pdb
        pos = self._positions if self._positions is not None else np.zeros((self.n_atoms, 3))
        return pdb_text(self._topology, pos)

    def __repr__(self) -> str:
        return (
            f"OpenMMSystem(n_atoms={self.n_atoms}, terms={self.term_paths}, "
            f"platform={self._platform!r})"
        )

    def config(self) -> dict[str, Any]:
        """A JSON-serializable description that `from_config` rebuilds exactly.

        Holds the serialized System XML, the topology as PDB text, the reference positions,
        the evaluation options and, when built by `from_pdb`, the force-field names and
        createSystem options (for the record).
        """
        pdb = self._pdb
        if pdb is None:
            pos = self._positions if self._positions is not None else np.zeros((self.n_atoms, 3))
            pdb = pdb_text(self._topology, pos)
        return {
            "class": "OpenMMSystem",
            "version": _CONFIG_VERSION,
            "system_xml": openmm.XmlSerializer.serialize(self._system),
            "pdb": pdb,
            "reference_positions": None if self._positions is None else self._positions.tolist(),
            "platform": self._platform,
            "n_workers": self._n_workers,
            "use_torch": self._use_torch,
            "build": self._build,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> OpenMMSystem:
        """Rebuild from `config()` output (energies identical to the original)."""
        if not isinstance(cfg, dict):
            raise TypeError(f"Expected cfg as a dict from OpenMMSystem.config(); got {type(cfg)}.")
        missing = [k for k in ("system_xml", "pdb") if k not in cfg]
        if missing or cfg.get("class", "OpenMMSystem") != "OpenMMSystem":
            raise ValueError(
                f"Not an OpenMMSystem config (class {cfg.get('class')!r}, missing keys "
                f"{missing}); expected the dict returned by OpenMMSystem.config()."
            )
        if cfg.get("version", _CONFIG_VERSION) > _CONFIG_VERSION:
            raise ValueError(
                f"OpenMMSystem config version {cfg['version']} is newer than this ccg "
                f"supports ({_CONFIG_VERSION}); upgrade ccg."
            )
        system = openmm.XmlSerializer.deserialize(cfg["system_xml"])
        pdb = pdb_from_text(cfg["pdb"], "in the config")
        positions = cfg.get("reference_positions")
        out = cls(
            system,
            pdb.topology,
            positions=None if positions is None else np.asarray(positions, dtype=np.float64),
            platform=cfg.get("platform", "CPU"),
            n_workers=cfg.get("n_workers", 1),
            use_torch=cfg.get("use_torch", True),
        )
        out._pdb = cfg["pdb"]
        out._build = cfg.get("build")
        return out
