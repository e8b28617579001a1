"""Assembling a training run from a `RunConfig`: system, map, flow, proposal; `ccg train`.

`build_model(config)` is the single place where a configuration becomes a
`BackmappingModel`; `train(config, out_dir)` runs the trainer and writes `model.pt`,
`metrics.json` and `training.png` into `out_dir`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.model import BackmappingModel
from ccg.train.base_modes import second_minima
from ccg.train.config import RunConfig

# Typical widths at 300 K of the fast internal coordinates (harmonic estimate sqrt(kT / k) for
# amber-like force constants); the flow's base scales them by sqrt(T / 300 K).
LOSS_RISE_WARNING = 2.0
"""nats: `ccg train` warns when the final 200-step mean loss is this far above the run's best."""

_WIDTH_300K = {"bond": 0.0035, "angle": 0.07, "improper": 0.2, "torsion": 1.0, "coord": 1.0}


def build_system(config: RunConfig):
    """The system named by config.system."""
    from ccg.systems import OpenMMSystem, alanine_dipeptide, make_analytic

    sc = config.system
    if sc.pdb is not None:
        return OpenMMSystem.from_pdb(sc.pdb, tuple(sc.forcefield), **sc.options)
    if sc.name == "alanine-dipeptide":
        return alanine_dipeptide()
    return make_analytic(sc.name, **sc.options)


def build_map(config: RunConfig, system):
    """The CG map named by config.map.cg, for `system`."""
    from ccg.mapping import AtomSubsetMap, CoordinateSplitMap, TorsionMap

    cg = config.map.cg
    if cg == "split":
        return CoordinateSplitMap(system.dim, system.cg_dim)
    ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    if cg == "phi-psi":
        return TorsionMap.phi_psi(system.topology, ref)
    selection = "heavy" if cg == "heavy-atoms" else "backbone"
    return AtomSubsetMap(system.topology, selection, ref)


def base_scale(cg_map, t_ref: float, system=None) -> torch.Tensor:
    """Per-dimension base widths [n_r] of the flow at t_ref (K).

    Defaults by kind (harmonic estimates for amber-like force constants, scaled by
    sqrt(T_ref / 300 K)). Analytic systems: the exact conditional widths of r | z. With a
    molecular `system` that has reference positions, the widths of bonds, angles and improper
    torsions are refined to the harmonic widths 1 / sqrt(beta d2U/dr_i2) at the reference
    structure (clamped to 1/4..4 times the default).
    """
    factor = math.sqrt(t_ref / 300.0)
    stiff = torch.tensor([kind in ("bond", "angle", "improper") for kind in cg_map.r_kinds])
    widths = torch.tensor(
        [_WIDTH_300K[kind] * (factor if kind in ("bond", "angle", "improper") else 1.0)
         for kind in cg_map.r_kinds],
        dtype=torch.float64,
    )
    if _is_analytic(system):
        return _conditional_moments(system, t_ref)[1]
    if getattr(system, "reference_positions", None) is None:
        return widths
    curvature = reference_hessian(cg_map, system).diagonal()
    beta = 1.0 / (KB_KJMOL_PER_K * t_ref)
    harmonic = 1.0 / torch.sqrt(beta * curvature.clamp_min(1e-12))
    refined = torch.minimum(torch.maximum(harmonic, widths / 4), widths * 4)
    return torch.where(stiff & (curvature > 0), refined, widths)


def harmonic_scale_tril(cg_map, system, t_ref: float, linear: torch.Tensor):
    """Cholesky factor [n_lin, n_lin] of the harmonic covariance (beta H_ll)^-1 of the linear
    r dims at the reference structure (z and the circular dims held fixed), or None when the
    system has no reference structure or H_ll is not positive definite there."""
    if _is_analytic(system) or getattr(system, "reference_positions", None) is None:
        return None
    idx = torch.nonzero(linear).flatten()
    hessian = reference_hessian(cg_map, system)[idx][:, idx]
    beta = 1.0 / (KB_KJMOL_PER_K * t_ref)
    factor, info = torch.linalg.cholesky_ex(beta * hessian)
    if int(info) != 0:
        return None
    # (beta H)^-1 = (F F^T)^-1 = F^-T F^-1; its lower Cholesky factor is the flip of F^-T.
    inv_t = torch.linalg.solve_triangular(factor, torch.eye(len(idx), dtype=factor.dtype),
                                          upper=False).T
    covariance = inv_t @ inv_t.T
    tril, info = torch.linalg.cholesky_ex(covariance)
    return None if int(info) != 0 else tril


def circular_concentration(cg_map, system, t_ref: float, circular: torch.Tensor,
                           *, rotor_kt: float = 4.0, max_rho: float = 0.95):
    """Wrapped-Cauchy concentrations [n_r] of the flow's base on circular dims (0 elsewhere),
    or None for systems without a reference structure.

    A circular dim whose rotation by ±2π/3 at the reference structure costs more than
    `rotor_kt` k_B T_ref both ways is stiff with a single minimum (a peptide ω, a chiral
    half-range torsion): its base gets ρ = exp(-σ), σ = 1 / sqrt(β ∂²U/∂r²) its harmonic width,
    so the flow starts near the right width instead of spread over the circle. Free rotors
    (methyl groups: a 2π/3 turn is a symmetry) keep the uniform base (ρ = 0).
    """
    if _is_analytic(system) or getattr(system, "reference_positions", None) is None:
        return None
    idx = torch.nonzero(circular).flatten()
    rho = torch.zeros(len(circular), dtype=torch.float64)
    if len(idx) == 0:
        return rho
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    x_ref = x_ref.reshape(1, *system.event_shape)
    with torch.no_grad():
        z0, r0, _ = cg_map.split(x_ref)
        turns = torch.tensor([2 * math.pi / 3, -2 * math.pi / 3], dtype=torch.float64)
        r = r0.repeat(2 * len(idx), 1)
        rows = torch.arange(2 * len(idx))
        dims = idx.repeat_interleave(2)
        r[rows, dims] = torch.remainder(r[rows, dims] + turns.repeat(len(idx)) + math.pi,
                                        2 * math.pi) - math.pi
        x, _ = cg_map.merge(z0.expand(len(r), -1), r)
        u0 = system.energy(x_ref)[0]
        cost = (system.energy(x) - u0).reshape(len(idx), 2)
    beta = 1.0 / (KB_KJMOL_PER_K * t_ref)
    stiff = torch.nan_to_num(cost, nan=torch.inf).min(1).values * beta > rotor_kt
    curvature = reference_hessian(cg_map, system).diagonal()[idx]
    sigma = 1.0 / torch.sqrt(beta * curvature.clamp_min(1e-12))
    value = torch.exp(-sigma).clamp(max=max_rho)
    rho[idx] = torch.where(stiff & (curvature > 0), value, torch.zeros_like(value))
    return rho


def _is_analytic(system) -> bool:
    return hasattr(system, "sample_conditional") and hasattr(system, "cg_bounds")


def _conditional_moments(system, t_ref: float, n_z: int = 16, n: int = 256):
    """Analytic systems: mean and standard deviation [n_r] of r at t_ref, pooled over a line
    of z across the training box (exact conditional samples; seeded, so deterministic)."""
    low, high = (torch.as_tensor(b, dtype=torch.float64) for b in system.cg_bounds)
    frac = torch.linspace(0.0, 1.0, n_z, dtype=torch.float64)[:, None]
    z = (low + frac * (high - low)).repeat_interleave(n, dim=0)
    gen = torch.Generator().manual_seed(0)
    r = system.sample_conditional(z, t_ref, generator=gen)
    return r.mean(dim=0), r.std(dim=0).clamp_min(1e-6)


def reference_hessian(cg_map, system) -> torch.Tensor:
    """Hessian d2U/dr2 [n_r, n_r] (kJ/mol per r unit^2) at the system's reference structure,
    with z held at the reference's CG coordinates."""
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    x_ref = x_ref.reshape(1, *system.event_shape)
    with torch.no_grad():
        z0, r0, _ = cg_map.split(x_ref)

    def energy_of_r(r: torch.Tensor) -> torch.Tensor:
        x, _ = cg_map.merge(z0, r[None])
        return system.energy(x)[0]

    return torch.autograd.functional.hessian(energy_of_r, r0[0]).detach()


def stiff_torsions(cg_map, system, t_ref: float) -> list[tuple[int, ...]]:
    """Atom quadruples of the circular (not chiral) r torsions of a `TorsionMap` that are stiff
    with a single minimum at the reference structure: those `circular_concentration` gives a
    concentrated base (a ±2π/3 turn costs more than 4 k_B T_ref both ways), e.g. peptide ω."""
    rho = circular_concentration(cg_map, system, t_ref, cg_map.r_circular)
    if rho is None:
        return []
    layout = cg_map.layout
    first_torsion = layout.n_bonds + layout.n_angles
    rows = layout._r_index[torch.nonzero(rho > 0).flatten() - first_torsion]
    return [cg_map.zmatrix.rows[int(t)] for t in rows]


def build_model(config: RunConfig) -> BackmappingModel:
    """System + map + a freshly initialized flow, as configured."""
    from ccg.flows import build_flow
    from ccg.mapping import TorsionMap

    config.validate()
    system = build_system(config)
    cg_map = build_map(config, system)
    t_ref = config.train.reference_temperature
    fc = config.flow
    linear_stiff = fc.linear_stiff_torsions and isinstance(cg_map, TorsionMap)
    if linear_stiff:  # the peptide omegas: unwrapped around the reference by the map
        quads = stiff_torsions(cg_map, system, t_ref)
        if quads:
            named = dict(zip(cg_map.torsion_names, cg_map.torsion_atoms, strict=True))
            cg_map = TorsionMap(system.topology, named, system.reference_positions,
                                zmatrix=cg_map.zmatrix, stiff_torsions=quads)
    # Chirality-constrained torsions live on [-pi, pi) like the free ones: the flow keeps them
    # inside it, so every sample has the reference chirality (both ends are the planar,
    # high-energy configuration). With linear_stiff_torsions they are real coordinates instead,
    # ~20 harmonic widths from either end; a sample beyond one would have the mirror
    # chirality and is excluded as non-finite (BackmappingModel.sample).
    circular = cg_map.r_circular | cg_map.r_chiral
    loc = cg_map.r_reference
    if _is_analytic(system):
        loc = _conditional_moments(system, t_ref)[0]
    scale = base_scale(cg_map, t_ref, system)
    if linear_stiff:  # the stiff chiral torsions: real coordinates t' with a Gaussian base
        rho = circular_concentration(cg_map, system, t_ref, circular)
        linear = cg_map.r_chiral & (rho > 0)
        scale = torch.where(linear, -torch.log(rho.clamp_min(1e-12)), scale)
        circular = circular & ~linear
    tril = harmonic_scale_tril(cg_map, system, t_ref, ~circular) if fc.correlated_base else None
    rho = circular_concentration(cg_map, system, t_ref, circular) if fc.concentrate_circular \
        else None
    modes = None
    if rho is not None and fc.circular_modes:
        found = second_minima(cg_map, system, t_ref, rho > 0, circular)
        modes = [[m.dim, m.offset, m.energy_kt, m.log_ratio] for m in found] or None
    flow = build_flow(
        cg_map.n_r, cg_map.cg_feature_dim + 1, circular, loc, scale,
        backend=fc.backend, n_layers=fc.n_layers, hidden=fc.hidden, n_blocks=fc.n_blocks,
        n_bins=fc.n_bins, temperature_scaling=fc.temperature_scaling, tail_bound=fc.tail_bound,
        scale_tril=tril, circular_concentration=rho, circular_modes=modes,
        scale_after_layers=fc.scale_after_layers,
    )
    return BackmappingModel(system, cg_map, flow, t_ref=t_ref,
                            t_range=(config.train.t_min, config.train.t_max))


def build_proposal(config: RunConfig, model: BackmappingModel):
    """The z proposal rho(z) for this map."""
    from ccg.train.proposals import AdaptiveTorusProposal, FrameProposal, UniformBox, UniformTorus

    cg = config.map.cg
    if cg == "phi-psi":
        if config.train.z_proposal == "adaptive":
            return AdaptiveTorusProposal(model.cg_dim, config.train.t_min, config.train.t_max,
                                         sharpness=config.train.z_sharpness)
        return UniformTorus(model.cg_dim)
    if cg == "split":
        low, high = model.system.cg_bounds
        return UniformBox(low, high)
    if config.map.cg_frames is None:
        from ccg.train.md_proposal import langevin_cg_frames

        print(f"bead map without --cg-frames: proposing CG frames from a 200 ps OpenMM Langevin "
              f"run at {config.train.t_max} K (force field only; see ccg.train.md_proposal)")
        return FrameProposal(langevin_cg_frames(model.system, model.cg_map, config.train.t_max,
                                                seed=config.train.seed))
    from ccg.io.trajectories import read_cg_frames

    return FrameProposal(read_cg_frames(config.map.cg_frames, model.cg_map, model.system))


def train(config: RunConfig, out_dir: str | Path, *, resume: bool = False,
          progress: bool = True) -> tuple[BackmappingModel, dict]:
    """Run a whole training as configured; write model.pt, metrics.json, training.png."""
    from ccg.io.model_file import save_model
    from ccg.train.losses import ReverseKL
    from ccg.train.plots import plot_training
    from ccg.train.trainer import Trainer

    config.validate()
    torch.manual_seed(config.train.seed)
    model = build_model(config)
    _report_modes(model)
    proposal = build_proposal(config, model)
    loss = ReverseKL(model, energy_cut=config.train.energy_cut,
                     path_gradient=config.train.path_gradient,
                     forward_weight=config.train.forward_weight,
                     renyi_alpha=config.train.renyi_alpha,
                     group_size=config.train.samples_per_z)
    trainer = Trainer(model, loss, proposal, config.train, out_dir, progress=progress)
    start = time.perf_counter()
    trainer.run(resume=resume)
    out = Path(out_dir)
    summary = {
        "steps": trainer.step,
        "train_time_s": trainer.elapsed_s,
        "nonfinite_samples": trainer.nonfinite_total,
        "final_loss": trainer.metrics["loss"][-1] if trainer.metrics["loss"] else None,
        "final_ess": trainer.metrics["ess"][-1] if trainer.metrics["ess"] else None,
        "kT_ref_kjmol": KB_KJMOL_PER_K * model.t_ref,
        "ema_decay": config.train.ema_decay,
    }
    summary["loss_rise_from_best"], summary["best_loss_step"] = trainer.loss_rise()
    trainer.apply_average()
    model.flow.eval()
    save_model(out / "model.pt", model, metrics=summary, run_config=config.to_dict())
    plot_training(trainer.metrics, trainer.band_ess, out / "training.png",
                  t_range=model.t_range)
    summary["wall_s"] = time.perf_counter() - start
    return model, summary


def _report_modes(model: BackmappingModel) -> None:
    """One line per second base minimum: where, how high, how populated at t_min and t_max
    (the base's own weights, `CircularModes.log_odds`)."""
    modes, flow = model.flow.modes, model.flow
    if not modes.active:
        return
    context = torch.zeros(2, flow.context_dim, dtype=modes.offset.dtype,
                          device=modes.offset.device)
    context[:, -1] = torch.log(torch.tensor(model.t_range) / model.t_ref)
    shares = torch.sigmoid(modes.log_odds(context, flow.temperature_scaling))
    for dim, offset, energy_kt, _ in modes.rows:
        where = ", ".join(f"{100 * float(share):.2g} % at {t:.0f} K"
                          for share, t in zip(shares[:, dim], model.t_range, strict=True))
        print(f"second minimum of r dim {dim} ({model.cg_map.r_kinds[dim]}): "
              f"{math.degrees(offset):+.0f} deg, {energy_kt * KB_KJMOL_PER_K * model.t_ref:.1f} "
              f"kJ/mol above the reference; base weight {where}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from --config (if any) overridden by the command-line flags."""
    config = RunConfig.from_toml(args.config) if args.config else RunConfig()
    overrides = {
        ("system", "name"): args.system, ("map", "cg"): args.cg,
        ("map", "cg_frames"): args.cg_frames, ("train", "minutes"): args.minutes,
        ("train", "steps"): args.steps, ("train", "t_min"): args.t_min,
        ("train", "t_max"): args.t_max, ("train", "t_values"): args.t_values,
        ("train", "n_z"): args.n_z, ("train", "z_proposal"): args.z_proposal,
        ("train", "samples_per_z"): args.samples_per_z, ("train", "lr"): args.lr,
        ("flow", "backend"): args.backend, ("train", "seed"): args.seed,
        ("train", "device"): args.device, ("train", "dtype"): args.dtype,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    if args.system and args.system != "alanine-dipeptide" and not args.cg:
        config.map.cg = "split"
    if config.train.steps is None and config.train.minutes is None:
        config.train.minutes = 20.0
    return config.validate()


def train_command(args: argparse.Namespace) -> int:
    """`ccg train`: validate everything first, then train and report where outputs are."""
    config = config_from_args(args)
    out = Path(args.out)
    t = config.train
    budget = f"{t.minutes} min" if t.minutes is not None else f"{t.steps} steps"
    print(f"training {config.system.name} (cg = {config.map.cg}) over T in "
          f"[{t.t_min}, {t.t_max}] K for {budget}, batch {t.n_z} x {t.samples_per_z}, "
          f"on {t.device} -> {out}/")
    _, summary = train(config, out, resume=args.resume, progress=not args.no_progress)
    print(f"done: {summary['steps']} steps in {summary['train_time_s']:.0f} s, final loss "
          f"{summary['final_loss']:.3f}, per-z ESS {summary['final_ess']:.2f}, "
          f"{summary['nonfinite_samples']} non-finite samples excluded")
    if summary["loss_rise_from_best"] > LOSS_RISE_WARNING:
        print(f"warning: the loss ended {summary['loss_rise_from_best']:.1f} nats above its best "
              f"(200-step means; best up to step {summary['best_loss_step']}). The flow has "
              "probably jumped into a wrong state and stayed there, which the ESS cannot show: "
              "look at its samples, and train again with another --seed.")
    print(f"model:   {out / 'model.pt'}")
    print(f"metrics: {out / 'metrics.json'}")
    print(f"plot:    {out / 'training.png'}")
    return 0
