"""A whole training run: `train(config, out_dir)` builds the model, trains it and writes
`model.pt`, `metrics.json` and `training.png` (and `structure.pdb` for a sequence or a PDB)."""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ccg.constants import KB_KJMOL_PER_K
from ccg.errors import ConfigError, ModelFileError
from ccg.io.atomic import atomic_write_text
from ccg.io.model_file import read_model_file, save_model, stored_flow_state
from ccg.model import BackmappingModel
from ccg.training import distributed
from ccg.training.build import build_model, build_proposal
from ccg.training.config import RunConfig
from ccg.training.losses import ReverseKL, raised_energy_cut
from ccg.training.plots import plot_training
from ccg.training.proposals import TemperatureSampler
from ccg.training.trainer import Trainer, read_checkpoint

logger = logging.getLogger(__name__)

STRUCTURE_FILE = "structure.pdb"
"""A run from a sequence or a PDB writes the structure it used (built / minimized, every
hydrogen: the system's reference structure) under this name next to model.pt."""

_DDP_OPTIONS = inspect.signature(DistributedDataParallel).parameters
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_OPTIONS
                   else {"broadcast_buffers": False})
"""DDP without syncing the (constant) buffers before every forward, in this torch's terms."""


def train(config: RunConfig, out_dir: str | Path, *, resume: bool = False,
          progress: bool = True) -> tuple[BackmappingModel, dict]:
    """Train a backmapping flow as configured, data-free, and write its outputs.

    Args:
        config: the run (validated here, before any work).
        out_dir: output folder (created): `model.pt` (the trained model), `checkpoint.pt`,
            `metrics.json`, `training.png` and, for a `[system]` sequence or pdb,
            `structure.pdb` (the structure used: built or prepared, minimized, every hydrogen).
        resume: continue from `out_dir/checkpoint.pt`; the configuration must be the run's
            own except for the budget (`RunConfig.check_resumable`).
        progress: show a progress bar (stderr).

    Returns:
        The trained `BackmappingModel` (eval mode) and a summary dict (steps, times, final
        loss and ESS, non-finite samples, `loss_rise_from_best` in nats).

    Raises:
        ConfigError: an invalid configuration, or one that does not fit the checkpoint.
        Interrupted: SIGINT / SIGTERM; the checkpoint holds the last finished step.
    """
    config.validate()
    ranks, device = distributed.setup(config.train.device)
    out = Path(out_dir)
    if resume:  # before any work
        check_resume(config, out)
    initial = read_initial_model(config) if config.train.init is not None else None
    torch.manual_seed(config.train.seed)
    model = build_model(config)
    if initial is not None:
        load_initial_weights(model, initial, config.train.init)
    logger.info("CG map %s: %d coordinates (%s); the flow samples %d more", config.map.cg,
                model.cg_dim, ", ".join(model.cg_map.cg_names), model.cg_map.n_r)
    report_modes(model)
    proposal = build_proposal(config, model)
    energy_cut = initial_energy_cut(model, proposal, config, initial=initial)
    dtype = torch.float64 if config.train.dtype == "float64" else torch.float32
    model.flow.to(device=device, dtype=dtype)
    model.cg_map.to(device=device)
    sampler = None
    if ranks.distributed:  # gradients all-reduced by PyTorch's DDP (buffers are constants)
        sampler = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, **_NO_BUFFER_SYNC)
    loss = ReverseKL(model, energy_cut=energy_cut,
                     path_gradient=config.train.path_gradient,
                     forward_weight=config.train.forward_weight,
                     renyi_alpha=config.train.renyi_alpha,
                     group_size=config.train.samples_per_z, sampler=sampler)
    trainer = Trainer(model, loss, proposal, config.train, out, progress=progress,
                      metadata={"run_config": config.to_dict()}, device=device)
    start = time.perf_counter()
    trainer.run(resume=resume)
    summary = {
        "steps": trainer.step,
        "train_time_s": trainer.elapsed_s,
        "nonfinite_samples": trainer.nonfinite_total,
        "final_loss": trainer.metrics["loss"][-1] if trainer.metrics["loss"] else None,
        "final_ess": trainer.metrics["ess"][-1] if trainer.metrics["ess"] else None,
        "kT_ref_kjmol": KB_KJMOL_PER_K * model.t_ref,
        "ema_decay": config.train.ema_decay,
        "energy_cut_kt": energy_cut,
    }
    if hasattr(proposal, "n_capped"):  # the product proposals' outlier estimates
        summary["proposal_capped"] = proposal.n_capped
    summary["loss_rise_from_best"], summary["best_loss_step"] = trainer.loss_rise()
    trainer.apply_average()
    model.flow.eval()
    if ranks.main:  # one model file, one plot
        save_model(out / "model.pt", model, metrics=summary, run_config=config.to_dict())
        if config.system.pdb is not None or config.system.sequence is not None:
            atomic_write_text(out / STRUCTURE_FILE, model.system.pdb)
        plot_training(trainer.metrics, trainer.band_ess, out / "training.png",
                      t_range=model.t_range)
    summary["wall_s"] = time.perf_counter() - start
    return model, summary


def initial_energy_cut(model: BackmappingModel, proposal, config: RunConfig, *,
                       initial: dict | None = None) -> float:
    """`[train] energy_cut`, raised by `raised_energy_cut` when most of one batch of the
    untrained flow lies above it (`[train] energy_cut_auto`). Measured on the CPU with its own
    generator (seeded by `[train] seed`), so a resumed run, on any device, gets the same cut.
    A run started from a model file (`initial`, `[train] init`) keeps the cut that file was
    trained with (its metrics' `energy_cut_kt`), when that is higher: a trained flow lies
    below any cut, and a lower one than its training's would soften the physical energies of
    its tail."""
    t = config.train
    if not t.energy_cut_auto:
        return t.energy_cut
    stored = (initial or {}).get("metrics", {}).get("energy_cut_kt")
    if isinstance(stored, int | float) and math.isfinite(stored) and stored > t.energy_cut:
        logger.info("energy_cut %.0f k_BT, as %s was trained with", stored, t.init)
        return float(stored)
    generator = torch.Generator().manual_seed(t.seed)
    sampler = TemperatureSampler(t.t_min, t.t_max, t.t_sampling, values=t.t_values)
    temps = sampler.sample(t.n_z, generator, torch.float32, "cpu")
    z = proposal.sample(t.n_z, generator, torch.float32, "cpu", temperature_k=temps)
    cut, share, median = raised_energy_cut(
        model, z.repeat_interleave(t.samples_per_z, 0),
        temps.repeat_interleave(t.samples_per_z), t.energy_cut, generator=generator)
    if cut != t.energy_cut:
        logger.warning(
            "energy_cut raised from %g to %.0f k_BT: %.0f %% of the untrained flow's samples "
            "start above %g (median %.0f k_BT above the reference structure), where the "
            "softened energy would let the flow widen instead of learn. Set [train] "
            "energy_cut_auto = false to keep %g.", t.energy_cut, cut, 100 * share,
            t.energy_cut, median, t.energy_cut)
    return cut


INIT_TABLES = ("system", "map", "flow")
"""The run-configuration tables a model file must share with a run that starts from it."""


def read_initial_model(config: RunConfig) -> dict:
    """The payload of `[train] init` (`ccg.io.model_file.read_model_file`), checked against
    `config` before any work: the same `[system]`, `[map]` and `[flow]` tables (as stored with
    the file's run) and reference temperature. Raises ConfigError naming each difference."""
    path = Path(config.train.init)
    try:
        payload = read_model_file(path)
    except FileNotFoundError:
        raise ConfigError(f"[train] init (--init): no model file at {path}. Give the path of a "
                          "model.pt written by ccg train.") from None
    except (ModelFileError, OSError, ValueError) as err:
        raise ConfigError(f"[train] init (--init): {path} is not a ccg model file ({err}).") \
            from None
    ours, stored = config.to_dict(), payload.get("run_config") or {}
    differences = [f"[{table}] {key}: {stored[table][key]!r} in the file, {value!r} now"
                   for table in INIT_TABLES if isinstance(stored.get(table), dict)
                   for key, value in ours[table].items()
                   if key in stored[table] and stored[table][key] != value]
    t_ref = config.train.reference_temperature
    if not math.isclose(float(payload["t_ref"]), t_ref):
        differences.append(f"reference temperature: {payload['t_ref']} K in the file, {t_ref} K "
                           "now (set [train] t_ref, or t_min)")
    if differences:
        raise ConfigError(f"[train] init (--init): {path} was trained for another model; these "
                          "differ: " + "; ".join(differences) + ". Use the file's [system], "
                          "[map] and [flow] settings (its run configuration: ccg info "
                          f"{path}), or start without --init.")
    return payload


def _first_difference(stored, built, where: str = "") -> str | None:
    """Where two JSON-like configurations first differ (a key path and the two values), or
    None; numbers within 1e-6 count as equal (a rebuilt and re-minimized reference structure
    may differ in the last digits)."""
    if isinstance(stored, dict) and isinstance(built, dict):
        for key in sorted(set(stored) | set(built), key=str):
            path = f"{where} / {key}" if where else str(key)
            if key not in stored or key not in built:
                return f"{path} ({'only in the file' if key in stored else 'only now'})"
            found = _first_difference(stored[key], built[key], path)
            if found is not None:
                return found
        return None
    if isinstance(stored, list) and isinstance(built, list):
        if len(stored) != len(built):
            return f"{where} (length {len(stored)} in the file, {len(built)} now)"
        return next((f for f in (_first_difference(a, b, f"{where}[{i}]")
                                 for i, (a, b) in enumerate(zip(stored, built, strict=True)))
                     if f is not None), None)
    numbers = (int, float)
    if (isinstance(stored, numbers) and isinstance(built, numbers)
            and not isinstance(stored, bool) and not isinstance(built, bool)):
        return None if math.isclose(stored, built, rel_tol=1e-6, abs_tol=1e-6) else (
            f"{where} ({stored!r} in the file, {built!r} now)")
    same = stored == built and isinstance(stored, bool) == isinstance(built, bool)
    return None if same else f"{where} ({stored!r} in the file, {built!r} now)"


def load_initial_weights(model: BackmappingModel, payload: dict, path: str) -> None:
    """Put the flow weights of a `read_initial_model` payload into `model`'s flow, after
    checking that the file's CG map and flow are the ones built for this run (the same
    configurations, as the file stores them), which also covers files without a run
    configuration."""
    for name, built in (("CG map", model.cg_map.config()), ("flow", model.flow.config())):
        where = _first_difference(payload["map" if name == "CG map" else "flow"],
                                  json.loads(json.dumps(built)))
        if where is not None:
            raise ConfigError(f"[train] init (--init): the {name} in {path} is not the one this "
                              f"run builds (they differ at {where}). Use the file's [map] and "
                              "[flow] settings, or start without --init.")
    state = stored_flow_state(payload, model.flow)
    current = model.flow.state_dict()
    try:
        model.flow.load_state_dict({k: v.to(current[k].dtype) if k in current else v
                                    for k, v in state.items()})
    except RuntimeError as err:
        raise ConfigError(f"[train] init (--init): the weights in {path} do not fit this "
                          f"run's flow ({err}).") from None
    logger.info("flow weights from %s (trained %s steps)", path,
                payload.get("metrics", {}).get("steps", "?"))


def check_resume(config: RunConfig, out_dir: str | Path) -> None:
    """Raise unless `out_dir` holds a checkpoint this configuration may continue
    (`RunConfig.check_resumable` against the configuration stored with it)."""
    stored = read_checkpoint(Path(out_dir) / "checkpoint.pt").get("metadata", {})
    if stored.get("run_config") is not None:
        config.check_resumable(stored["run_config"])


def report_modes(model: BackmappingModel) -> None:
    """Log one line per second base minimum: where, how high, how populated at t_min and t_max
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
        logger.info("second minimum of r dim %d (%s): %+.0f deg, %.1f kJ/mol above the "
                    "reference; base weight %s", dim, model.cg_map.r_kinds[dim],
                    math.degrees(offset), energy_kt * KB_KJMOL_PER_K * model.t_ref, where)
