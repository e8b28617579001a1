"""ccg: invertible ("cycle") coarse graining of molecules with conditional normalizing flows.

The public API: everything a user, an experiment or the documentation needs is importable from
here (`ccg.__all__`); the subpackages are the implementation. Units throughout: positions in
nm, energies in kJ/mol, temperatures in K, angles in rad.

    import ccg
    model, summary = ccg.train(ccg.RunConfig(), "runs/demo")      # data-free, from the force field
    model = ccg.load_model("runs/demo/model.pt")
    est = ccg.estimate_free_energy(model, z, 300.0)                  # beta F(z), errors, ESS
"""

from ccg._version import __version__
from ccg.backmapping import BackmapResult, backmap, backmap_to_file, minimize_keeping_cg
from ccg.constants import KB_KJMOL_PER_K, beta_from_temperature
from ccg.cycle import Cycle, CycleConfig, run_cycle
from ccg.errors import CCGError, ConfigError, Interrupted, ModelFileError, TrainingError
from ccg.flows import FLOW_BACKENDS, ConditionalFlow, FlowConfig, build_flow, make_context
from ccg.free_energy.ais import AISSamples, ais_sample
from ccg.free_energy.cg_model import FreeEnergyModel
from ccg.free_energy.compare import (
    histogram_free_energy,
    kl_divergence,
    rmse_after_shift,
    shifted_difference,
    state_populations,
)
from ccg.free_energy.estimators import PointEstimates, estimate_free_energy
from ccg.free_energy.fit import FitConfig, ObservableSet, fit_free_energy_model
from ccg.free_energy.joint import (
    JointSamples,
    joint_ess,
    joint_ess_parts,
    pilot_proposal,
    sample_joint,
)
from ccg.free_energy.langevin import LangevinResult, default_start, simulate
from ccg.free_energy.plots import plot_free_energy, plot_projections
from ccg.free_energy.projections import Projection, project_free_energy, resolve_dims
from ccg.free_energy.state_mixture import (
    StateMixtureProposal,
    fit_state_mixture,
    state_mixture_proposal,
)
from ccg.free_energy.states import (
    Region,
    StateGroup,
    StateTable,
    default_groups,
    group_populations,
    halves_groups,
    ramachandran_groups,
    region_populations,
    save_state_table,
)
from ccg.free_energy.surface import (
    Surface,
    cg_model_arrays,
    free_energy_arrays,
    free_energy_surface,
    grid_centers,
    grid_points,
    save_free_energy,
)
from ccg.free_energy.tails import pareto_k
from ccg.free_energy.validation import (
    HeldOutScore,
    held_out_scores,
    predicts_within_noise,
    worst_chi2,
)
from ccg.io.cg_model_file import file_kind, load_cg_model, save_cg_model
from ccg.io.model_file import load_model, save_model
from ccg.io.trajectories import (
    TrajectoryWriter,
    load_trajectory,
    read_cg_frames,
    read_cg_input,
    write_cg_frames,
)
from ccg.mapping import (
    CG_MAPS,
    AtomSubsetMap,
    CGMap,
    CoordinateSplitMap,
    TorsionMap,
    ZMatrix,
    backbone_contact_pairs,
    chirality_signs,
    find_chiral_centers,
    peptide_torsion_map,
    peptide_torsions,
    resolve_torsions,
    torsion_map_for,
)
from ccg.model import BackmappingModel, FlowSamples
from ccg.protocols import CGMapProtocol, FlowProtocol, SystemProtocol
from ccg.registry import Registry
from ccg.systems import (
    SYSTEMS,
    AnalyticSystem,
    DoubleWell2D,
    HarmonicFastModes,
    MolecularSystem,
    MuellerBrown,
    OpenMMSystem,
    System,
    TorusDoubleWells,
    alanine_dipeptide,
    build_peptide,
    make_analytic,
    prepare_pdb,
)
from ccg.systems.benchmark import benchmark_energy, format_energy_table
from ccg.training.benchmark import (
    benchmark_flow_backends,
    benchmark_training,
    format_flow_table,
    format_training_table,
)
from ccg.training.build import build_map, build_model, build_proposal, build_system
from ccg.training.config import MapConfig, RunConfig, SystemConfig, TrainConfig
from ccg.training.losses import ForwardKL, JointReverseKL, ReverseKL
from ccg.training.product_proposal import ProductTorusProposal
from ccg.training.proposals import (
    Z_PROPOSALS,
    AdaptiveTorusProposal,
    FrameProposal,
    TemperatureSampler,
    UniformBox,
    UniformTorus,
    ZProposal,
)
from ccg.training.run import train
from ccg.training.trainer import Trainer

__all__ = [
    "CG_MAPS",
    "FLOW_BACKENDS",
    "KB_KJMOL_PER_K",
    "SYSTEMS",
    "Z_PROPOSALS",
    "AISSamples",
    "AdaptiveTorusProposal",
    "AnalyticSystem",
    "AtomSubsetMap",
    "BackmapResult",
    "BackmappingModel",
    "CCGError",
    "CGMap",
    "CGMapProtocol",
    "ConditionalFlow",
    "ConfigError",
    "CoordinateSplitMap",
    "Cycle",
    "CycleConfig",
    "DoubleWell2D",
    "FitConfig",
    "FlowConfig",
    "FlowProtocol",
    "FlowSamples",
    "ForwardKL",
    "FrameProposal",
    "FreeEnergyModel",
    "HarmonicFastModes",
    "HeldOutScore",
    "Interrupted",
    "JointReverseKL",
    "JointSamples",
    "LangevinResult",
    "MapConfig",
    "ModelFileError",
    "MolecularSystem",
    "MuellerBrown",
    "ObservableSet",
    "OpenMMSystem",
    "PointEstimates",
    "ProductTorusProposal",
    "Projection",
    "Region",
    "Registry",
    "ReverseKL",
    "RunConfig",
    "StateGroup",
    "StateMixtureProposal",
    "StateTable",
    "Surface",
    "System",
    "SystemConfig",
    "SystemProtocol",
    "TemperatureSampler",
    "TorsionMap",
    "TorusDoubleWells",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "TrajectoryWriter",
    "UniformBox",
    "UniformTorus",
    "ZMatrix",
    "ZProposal",
    "__version__",
    "ais_sample",
    "alanine_dipeptide",
    "backbone_contact_pairs",
    "backmap",
    "backmap_to_file",
    "benchmark_energy",
    "benchmark_flow_backends",
    "benchmark_training",
    "beta_from_temperature",
    "build_flow",
    "build_map",
    "build_model",
    "build_peptide",
    "build_proposal",
    "build_system",
    "cg_model_arrays",
    "chirality_signs",
    "default_groups",
    "default_start",
    "estimate_free_energy",
    "file_kind",
    "find_chiral_centers",
    "fit_free_energy_model",
    "fit_state_mixture",
    "format_energy_table",
    "format_flow_table",
    "format_training_table",
    "free_energy_arrays",
    "free_energy_surface",
    "grid_centers",
    "grid_points",
    "group_populations",
    "halves_groups",
    "held_out_scores",
    "histogram_free_energy",
    "joint_ess",
    "joint_ess_parts",
    "kl_divergence",
    "load_cg_model",
    "load_model",
    "load_trajectory",
    "make_analytic",
    "make_context",
    "minimize_keeping_cg",
    "pareto_k",
    "peptide_torsion_map",
    "peptide_torsions",
    "pilot_proposal",
    "plot_free_energy",
    "plot_projections",
    "predicts_within_noise",
    "prepare_pdb",
    "project_free_energy",
    "ramachandran_groups",
    "read_cg_frames",
    "read_cg_input",
    "region_populations",
    "resolve_dims",
    "resolve_torsions",
    "rmse_after_shift",
    "run_cycle",
    "sample_joint",
    "save_cg_model",
    "save_free_energy",
    "save_model",
    "save_state_table",
    "shifted_difference",
    "simulate",
    "state_mixture_proposal",
    "state_populations",
    "torsion_map_for",
    "train",
    "worst_chi2",
    "write_cg_frames",
]
