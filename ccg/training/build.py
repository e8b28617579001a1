"""Building a run from a `RunConfig`: system, CG map, flow, z proposal.

`build_model(config)` is the single place where a configuration becomes a `BackmappingModel`;
each part comes from its registry (`SYSTEMS`, `CG_MAPS`, `FLOW_BACKENDS`, `Z_PROPOSALS`), so
a new system, map, backend or proposal is one registered function or class next to its kind.
"""

from __future__ import annotations

import torch

from ccg.errors import ConfigError
from ccg.flows.build import build_flow
from ccg.mapping.base import CG_MAPS, CGMap
from ccg.mapping.beads import AtomSubsetMap
from ccg.mapping.torsion import TorsionMap, backbone_contact_pairs
from ccg.model import BackmappingModel
from ccg.systems.analytic import AnalyticSystem
from ccg.systems.base import System
from ccg.systems.openmm_system import OpenMMSystem
from ccg.systems.peptides import build_peptide, prepare_pdb
from ccg.systems.registry import SYSTEMS
from ccg.training.base_init import (
    base_scale,
    circular_concentration,
    conditional_moments,
    harmonic_scale_tril,
    has_reference,
    reference_hessian,
    stiff_torsions,
)
from ccg.training.base_modes import second_minima
from ccg.training.config import RunConfig
from ccg.training.proposals import Z_PROPOSALS, ZProposal

_SYSTEM_SETTINGS = ("Set by [system] forcefield, implicit_solvent, add_hydrogens (ccg train "
                    "--forcefield, --implicit-solvent, --add-hydrogens).")


def build_system(config: RunConfig) -> System:
    """The system of `config.system`: a peptide sequence or a PDB with force-field files
    (and an implicit-solvent model), or a registered name.

    A sequence is built by `build_peptide` (caps, hydrogens, minimized); a PDB with
    `implicit_solvent` or `add_hydrogens` by `prepare_pdb` (minimized when hydrogens were
    added), any other PDB by `OpenMMSystem.from_pdb` with the force-field files as listed.

    Raises:
        ConfigError: force-field files that do not exist or do not cover the molecule, a
            structure OpenMM cannot use (the message names the settings to change).
    """
    sc = config.system
    try:
        if sc.sequence is not None:
            return build_peptide(sc.sequence, forcefield=tuple(sc.forcefield),
                                 implicit_solvent=sc.implicit_solvent or "obc2",
                                 **sc.options).system
        if sc.pdb is not None and (sc.implicit_solvent is not None or sc.add_hydrogens):
            options = {"minimize_structure": sc.add_hydrogens, **sc.options}
            return prepare_pdb(sc.pdb, forcefield=tuple(sc.forcefield),
                               implicit_solvent=sc.implicit_solvent or "none",
                               add_hydrogens=sc.add_hydrogens, **options).system
        if sc.pdb is not None:
            return OpenMMSystem.from_pdb(sc.pdb, tuple(sc.forcefield), **sc.options)
    except ValueError as err:  # ConfigError, or OpenMM's template errors from from_pdb
        raise ConfigError(f"{err} {_SYSTEM_SETTINGS}") from None
    return SYSTEMS.resolve(sc.registered_name)(**sc.options)


def build_map(config: RunConfig, system: System) -> CGMap:
    """The CG map of `config.map` (a registered name, with the options it takes, such as
    `[map] torsions`) for `system`."""
    options = {key: getattr(config.map, key)
               for key in CG_MAPS.info(config.map.cg).get("options", ())}
    return CG_MAPS.resolve(config.map.cg)(system, **options)


def build_model(config: RunConfig, system: System | None = None) -> BackmappingModel:
    """System + CG map + a freshly initialized flow, as configured (validated first).

    The flow's base is initialized from the force field at the system's reference structure
    (`ccg.training.base_init`); the model is on the CPU in float32.

    Args:
        config: the run configuration.
        system: use this system instead of building `config.system` (e.g. a peptide built
            once with `build_peptide` and reused for several maps).
    """
    config.validate()
    system = build_system(config) if system is None else system
    cg_map = build_map(config, system)
    t_ref = config.train.reference_temperature
    fc = config.flow
    linear_stiff = fc.linear_stiff_torsions and isinstance(cg_map, TorsionMap | AtomSubsetMap)
    # d2U/dr2 at the reference, computed once (the stiff-torsion map below packs the same r)
    hessian = reference_hessian(cg_map, system) if has_reference(system) else None
    extra = {}
    if linear_stiff:  # peptide omegas, ring torsions: unwrapped around the reference by the map
        quads = stiff_torsions(cg_map, system, t_ref, hessian=hessian)
        if quads:
            extra["stiff_torsions"] = quads
    if config.map.contacts:
        if not isinstance(cg_map, TorsionMap):
            raise ConfigError(f'[map] contacts needs a torsion map (cg = "phi-psi", '
                              f'"backbone-torsions" or "torsions"); got cg = "{config.map.cg}". '
                              "Fix: drop contacts = true (ccg train --contacts).")
        extra["contact_pairs"] = backbone_contact_pairs(system.topology)
    if extra:  # the same map (same Z-matrix) with these torsions unwrapped, these contacts
        cg_map = type(cg_map).from_config({**cg_map.config(), **extra}, system.topology)
    # Chirality-constrained torsions live on [-pi, pi) like the free ones: the flow keeps them
    # inside it, so every sample has the reference chirality (both ends are the planar,
    # high-energy configuration). With linear_stiff_torsions they are real coordinates instead,
    # ~20 harmonic widths from either end; a sample beyond one would have the mirror
    # chirality and is excluded as non-finite (BackmappingModel.sample).
    circular = cg_map.r_circular | cg_map.r_chiral
    loc = cg_map.r_reference
    if isinstance(system, AnalyticSystem):
        loc = conditional_moments(system, t_ref)[0]
    scale = base_scale(cg_map, t_ref, system, hessian=hessian)
    if linear_stiff:  # the stiff chiral torsions: real coordinates t' with a Gaussian base
        rho = circular_concentration(cg_map, system, t_ref, circular, hessian=hessian)
        linear = cg_map.r_chiral & (rho > 0)
        scale = torch.where(linear, -torch.log(rho.clamp_min(1e-12)), scale)
        circular = circular & ~linear
    tril = (harmonic_scale_tril(cg_map, system, t_ref, ~circular, hessian=hessian)
            if fc.correlated_base else None)
    rho = (circular_concentration(cg_map, system, t_ref, circular, hessian=hessian)
           if fc.concentrate_circular else None)
    modes = None
    if rho is not None and fc.circular_modes:
        found = second_minima(cg_map, system, t_ref, rho > 0, circular, hessian=hessian)
        modes = [[m.dim, m.offset, m.energy_kt, m.log_ratio] for m in found] or None
    flow = build_flow(
        cg_map.n_r, cg_map.cg_feature_dim + 1, circular, loc, scale,
        backend=fc.backend, n_layers=fc.n_layers, hidden=fc.hidden, n_blocks=fc.n_blocks,
        n_bins=fc.n_bins, temperature_scaling=fc.temperature_scaling, tail_bound=fc.tail_bound,
        scale_after_layers=fc.scale_after_layers, spline=fc.spline, scale_tril=tril,
        circular_concentration=rho,
        circular_modes=modes, conditional_affine=fc.conditional_affine,
    )
    return BackmappingModel(system, cg_map, flow, t_ref=t_ref,
                            t_range=(config.train.t_min, config.train.t_max))


def build_proposal(config: RunConfig, model: BackmappingModel) -> ZProposal:
    """The z proposal rho(z) of `config.train.z_proposal` for this model's CG space."""
    t = config.train
    extra = {"cooperative": float(t.z_cooperative)} if t.z_cooperative else {}
    return Z_PROPOSALS.resolve(t.z_proposal)(model, t_min=t.t_min, t_max=t.t_max,
                                             sharpness=t.z_sharpness,
                                             cg_frames=config.map.cg_frames, seed=t.seed,
                                             **extra)
