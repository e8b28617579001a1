"""Training configuration: dataclasses read from TOML, validated before any work starts.

A config file has up to four tables, each optional::

    [system]            # what U(x) is
    name = "alanine-dipeptide"

    [map]               # the CG map
    cg = "phi-psi"

    [flow]              # the conditional flow q(r | z, T)
    n_layers = 4

    [train]             # the optimization
    t_min = 300.0
    t_max = 600.0
    minutes = 20

Unknown tables or keys are errors that list the valid names.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccg._checks import check_field_types
from ccg.errors import ConfigError
from ccg.flows.config import FlowConfig
from ccg.mapping.base import CG_MAPS
from ccg.mapping.peptide import check_torsion_specs
from ccg.training import product_proposal  # noqa: F401  (registers "product" and "adaptive")
from ccg.training.proposals import T_SAMPLING, Z_PROPOSALS
from ccg.training.system_config import DEFAULT_SYSTEM, SystemConfig

__all__ = ["DEFAULT_SYSTEM", "ConfigError", "FlowConfig", "MapConfig", "RunConfig",
           "SystemConfig", "TrainConfig"]


COMPILE_MODES = ("none", "flow", "energy", "all")
"""What `[train] compile` can ask for."""

DEFAULT_MINUTES = 20.0
"""The training budget of a configuration that gives neither steps nor minutes."""

@dataclass
class MapConfig:
    """The CG map (`[map]`): a registered name (`ccg.mapping.CG_MAPS`)."""

    cg: str = "phi-psi"
    """phi-psi, backbone-torsions or torsions (torsions), heavy-atoms, backbone or ca (beads),
    split (analytic systems)."""
    cg_frames: str | None = None
    """Bead maps: a trajectory of CG (or atomistic) frames used as the z proposal."""
    torsions: list[str] | None = None
    """cg = "torsions": the torsions, e.g. ["phi2", "psi2", "chi1:3", "2:-C-N-CA-C"] (syntax:
    `ccg.mapping.peptide`)."""
    contacts: bool = False
    """Torsion maps: give the flow's conditioners the soft contacts of the backbone heavy atoms
    at z as well as (cos z, sin z) (`ccg.mapping.torsion.backbone_contact_pairs`)."""

    def validate(self) -> MapConfig:
        check_field_types(self, "map")
        if self.cg not in CG_MAPS:
            raise ConfigError(f'Unknown CG map "{self.cg}". Must be one of {CG_MAPS.names()}.')
        takes = CG_MAPS.info(self.cg).get("options", ())
        if self.torsions is not None and "torsions" not in takes:
            raise ConfigError(f'[map] torsions is for cg = "torsions"; got cg = "{self.cg}". '
                              "Fix: set --cg torsions, or drop --torsions.")
        if "torsions" in takes:
            if self.torsions is None:
                raise ConfigError('[map] cg = "torsions" needs the list [map] torsions = '
                                  '["phi2", "psi2", ...] (ccg train --torsions phi2 psi2).')
            check_torsion_specs(self.torsions)
        if self.cg_frames is not None and not Path(self.cg_frames).is_file():
            raise ConfigError(f"[map] cg_frames file not found: {self.cg_frames}")
        return self


@dataclass
class TrainConfig:
    """Optimization settings. Temperatures in K, times in minutes."""

    t_min: float = 300.0
    t_max: float = 600.0
    t_ref: float | None = None
    """Reference temperature of the flow's base widths (default: t_min)."""
    t_sampling: str = "beta"
    """How training temperatures are drawn: uniform in 'beta', in 'log' T, or 'uniform' in T."""
    t_values: list[float] | None = None
    """Train only at these temperatures (K, within [t_min, t_max]) instead of a continuum."""
    anneal_fraction: float = 0.0
    """Fraction of the run over which the lower temperature bound is annealed from t_max."""
    z_proposal: str = "adaptive"
    """A registered z proposal (`ccg.training.proposals.Z_PROPOSALS`). Torsion maps:
    "adaptive" (concentrated where the flow's own running estimates of F are low, 30 %
    uniform: the joint grid of AdaptiveTorusProposal up to 3 torsions, the per-torsion
    histograms of ProductTorusProposal beyond), "product" (per-torsion adaptive histograms,
    any number of torsions), "residue-pairs" (one 2-D histogram per residue's (phi, psi),
    other torsions 1-D) or "uniform" on the torus.
    Bead and analytic maps draw from their CG frames / box either way."""
    z_sharpness: float = 0.5
    """Adaptive proposal: z ~ exp(-z_sharpness * beta F(z, T)) at each pair's own T; below 1
    it flattens the Boltzmann factor so the whole populated region gets training points."""
    z_cooperative: float = 0.0
    """"product" / "residue-pairs" proposals: the share of z drawn with one histogram cell
    shared by every block (every residue's (phi, psi) in the same cell: helices, strands), so
    that joint states the per-block histograms make rare (all-helix: the product of the
    residues' helix shares) still get training points. 0: off."""
    n_z: int = 64
    """Distinct (z, T) pairs per step."""
    samples_per_z: int = 16
    """Flow samples per (z, T); the batch is n_z * samples_per_z."""
    steps: int | None = None
    """Optimization steps (the run stops at `steps` or `minutes`, whichever comes first)."""
    minutes: float | None = None
    """Wall-time budget of the optimization in minutes (with neither `steps` nor `minutes`,
    `validate` sets it to 20)."""
    lr: float = 1e-3
    """Peak learning rate of the cosine schedule (stable at this value together with
    `grad_clip_relative`)."""
    lr_final: float = 1e-5
    """Learning rate at the end of the cosine schedule."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 100.0
    """Largest gradient norm used (larger ones are scaled down to it)."""
    grad_clip_relative: float | None = 2.0
    """Also clip at this multiple of the median gradient norm of the last 100 steps (from
    step 20 on): one outlier batch then moves Adam no further than a typical one."""
    grad_skip_relative: float | None = None
    """Skip the update (counted in `skipped_steps`) when the gradient norm exceeds this
    multiple of the median of the last 100 steps: a batch dominated by one extreme sample
    then moves nothing, where a clipped one still steers Adam along that sample's direction."""
    path_gradient: bool = False
    """Reverse KL: differentiate log q only along the sample path
    (`ccg.training.losses.path_log_q`): the same expected gradient, with less noise near the
    optimum, for one extra inverse pass. Far from p its own variance is large: meant for
    fine-tuning a trained flow, not for training from initialization."""
    forward_weight: float = 0.0
    """Add this times an importance-weighted forward KL(p || q) per (z, T) to the reverse KL
    (ccg.training.losses.ReverseKL): mass-covering, against the thin tails of reverse KL; one
    extra inverse pass per step."""
    renyi_alpha: float = 1.0
    """1: the reverse KL. Below 1, the Rényi bound of order alpha: each (z, T) group's samples
    weighted by w^(1 - alpha), normalized (ccg.training.losses.ReverseKL); mass-covering towards
    alpha = 0, at no extra cost per step."""
    init: str | None = None
    """Start from the flow weights of this model file (a `model.pt` written by `ccg train`)
    instead of a fresh initialization: fine-tuning with other `[train]` settings (loss,
    learning rate, temperatures, z proposal) and a fresh optimizer, schedule and proposal.
    The file's `[system]`, `[map]` and `[flow]` tables and reference temperature must be this
    run's (`ccg.training.run.read_initial_model`); with `energy_cut_auto` the run keeps the
    energy cut the file was trained with. A relative path is read from the working folder."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the flow's parameters with this decay per step
    (e.g. 0.999: a horizon of ~1000 steps) and save it as the model instead of the last
    iterate; the checkpoint keeps both, so a resumed run continues the average."""
    energy_cut: float = 100.0
    """beta U more than this (k_BT) above the reference structure's beta U_ref is softened
    (linear-then-log) in the loss; physical energies are far below it (see EnergyCut)."""
    energy_cut_auto: bool = True
    """Before training, sample one batch of the untrained flow; if most of it lies above
    energy_cut, raise the cut to 10x the batch's median excess energy
    (`ccg.training.losses.raised_energy_cut`): starting mostly above the cut, where the loss
    sees only the log of the energy, the flow widens instead of learning."""
    max_nonfinite_fraction: float = 0.1
    """Abort when the running (20-step) fraction of non-finite samples exceeds this."""
    checkpoint_every: int = 200
    """Steps between checkpoints (checkpoint.pt, written atomically)."""
    checkpoint_minutes: float = 2.0
    """Also write a checkpoint when this much wall time has passed since the last one."""
    seed: int = 0
    """Seed of every random draw of the run."""
    compile: str = "none"
    """"flow": `torch.compile` the flow's transforms (`ConditionalFlow.compile_transforms`);
    "energy": the system's energy (`System.compile_energy`; worth it for peptides in implicit
    solvent on the CPU, where the energy is a large part of a step); "all": both; "none":
    eager. The first step pays the compilation, and so does each new batch shape."""
    device: str = "auto"
    """Where to train: "auto" (the GPU when there is one), "cpu" or "cuda[:N]"."""
    dtype: str = "float32"
    """Training precision: "float32" or "float64"."""

    def validate(self) -> TrainConfig:
        check_field_types(self, "train")
        for name in ("t_min", "t_max"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(
                    f"[train] {name} must be a temperature > 0 K; got {value!r}. "
                    "Temperatures are absolute, in kelvin."
                )
        if self.t_min > self.t_max:
            raise ConfigError(
                f"[train] t_min ({self.t_min} K) is above t_max ({self.t_max} K); swap them."
            )
        if self.t_values is not None:
            bad = [v for v in self.t_values
                   if not isinstance(v, int | float) or not self.t_min <= v <= self.t_max]
            if bad or not self.t_values:
                raise ConfigError(
                    f"[train] t_values must be a non-empty list of temperatures in [t_min, t_max]"
                    f" = [{self.t_min}, {self.t_max}] K; got {self.t_values!r}.")
        if self.z_proposal not in Z_PROPOSALS:
            raise ConfigError(f'[train] z_proposal must be one of {Z_PROPOSALS.names()}; got '
                              f'"{self.z_proposal}".')
        if isinstance(self.z_cooperative, bool) or not isinstance(
                self.z_cooperative, int | float) or not 0 <= self.z_cooperative < 1:
            raise ConfigError(f"[train] z_cooperative must be in [0, 1) (the share of z drawn "
                              f"with one cell shared by every block); got "
                              f"{self.z_cooperative!r}.")
        if self.z_cooperative and self.z_proposal not in ("product", "residue-pairs"):
            raise ConfigError(f'[train] z_cooperative works with z_proposal = "product" or '
                              f'"residue-pairs"; got z_proposal = "{self.z_proposal}". Set '
                              f'one of them, or z_cooperative = 0.')
        if not isinstance(self.z_sharpness, int | float) or not 0 < self.z_sharpness <= 1:
            raise ConfigError(f"[train] z_sharpness must be in (0, 1] (1: Boltzmann at each T); "
                              f"got {self.z_sharpness!r}.")
        if self.t_ref is not None and self.t_ref <= 0:
            raise ConfigError(f"[train] t_ref must be > 0 K; got {self.t_ref!r}.")
        if self.t_sampling not in T_SAMPLING:
            raise ConfigError(
                f'[train] t_sampling "{self.t_sampling}" unknown. '
                f"Must be one of {list(T_SAMPLING)}."
            )
        if not 0.0 <= self.anneal_fraction <= 1.0:
            raise ConfigError(
                f"[train] anneal_fraction must be in [0, 1]; got {self.anneal_fraction}."
            )
        for name in ("n_z", "samples_per_z", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"[train] {name} must be a positive integer; got {value!r}.")
        if self.steps is None and self.minutes is None:
            self.minutes = DEFAULT_MINUTES  # stored with the run, so its budget is on record
        if not isinstance(self.forward_weight, int | float) or not self.forward_weight >= 0:
            raise ConfigError(f"[train] forward_weight must be >= 0; got {self.forward_weight!r}.")
        if self.grad_skip_relative is not None and not (
                isinstance(self.grad_skip_relative, int | float) and self.grad_skip_relative > 1):
            raise ConfigError(f"[train] grad_skip_relative must be > 1 (a multiple of the median "
                              f"gradient norm) or absent; got {self.grad_skip_relative!r}.")
        if self.init is not None and not self.init.strip():
            raise ConfigError("[train] init must be the path of a model.pt to start from, or "
                              "absent; got an empty string.")
        if self.ema_decay is not None and not (
                isinstance(self.ema_decay, int | float) and 0 < self.ema_decay < 1):
            raise ConfigError(f"[train] ema_decay must be in (0, 1) (e.g. 0.999) or absent; "
                              f"got {self.ema_decay!r}.")
        if not (isinstance(self.renyi_alpha, int | float) and 0 <= self.renyi_alpha <= 1):
            raise ConfigError(f"[train] renyi_alpha must be in [0, 1] (1: reverse KL); got "
                              f"{self.renyi_alpha!r}.")
        if self.samples_per_z < 2 and (self.renyi_alpha < 1 or self.forward_weight > 0):
            raise ConfigError("[train] renyi_alpha < 1 and forward_weight > 0 normalize weights "
                              f"per (z, T): set samples_per_z >= 2 (got {self.samples_per_z}).")
        if self.grad_clip_relative is not None and not (
                isinstance(self.grad_clip_relative, int | float) and self.grad_clip_relative >= 1):
            raise ConfigError(f"[train] grad_clip_relative must be >= 1 (a multiple of the "
                              f"median gradient norm) or absent; got {self.grad_clip_relative!r}.")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"[train] steps must be >= 1; got {self.steps}.")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"[train] minutes must be > 0; got {self.minutes}.")
        if not self.checkpoint_minutes > 0:
            raise ConfigError(f"[train] checkpoint_minutes must be > 0; got "
                              f"{self.checkpoint_minutes}.")
        if not isinstance(self.energy_cut, int | float) or not self.energy_cut > 0:
            raise ConfigError(f"[train] energy_cut must be > 0 (k_BT above the reference "
                              f"structure's energy); got {self.energy_cut!r}.")
        if self.lr <= 0 or self.lr_final <= 0:
            raise ConfigError("[train] lr and lr_final must be > 0.")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f'[train] compile must be one of {list(COMPILE_MODES)}; got '
                              f'"{self.compile}".')
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f'[train] dtype must be "float32" or "float64"; got "{self.dtype}".')
        if not self.device.startswith(("auto", "cpu", "cuda")):
            raise ConfigError(f'[train] device must be "auto", "cpu" or "cuda[:N]"; got '
                              f'"{self.device}".')
        return self

    @property
    def reference_temperature(self) -> float:
        return float(self.t_ref if self.t_ref is not None else self.t_min)


RESUMABLE_CHANGES = frozenset({
    ("train", "minutes"), ("train", "steps"), ("train", "checkpoint_every"),
    ("train", "checkpoint_minutes"), ("train", "max_nonfinite_fraction"), ("train", "device"),
    ("train", "compile"),
})
"""(table, key) pairs that may differ between a run and its resumption."""


@dataclass
class RunConfig:
    """A whole training run: system, map, flow, train."""

    system: SystemConfig = field(default_factory=SystemConfig)
    map: MapConfig = field(default_factory=MapConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Validate every table and how they fit together; returns self."""
        self.system.validate()
        self.map.validate()
        self.flow.validate()
        self.train.validate()
        system_kind, map_kind = self.system.kind, CG_MAPS.info(self.map.cg)["systems"]
        if system_kind == "molecular" and map_kind != "molecular":
            raise ConfigError(
                f'CG map "{self.map.cg}" is for analytic systems; use "phi-psi" or '
                '"heavy-atoms".'
            )
        if system_kind == "analytic" and map_kind != "analytic":
            raise ConfigError(
                f'Analytic system "{self.system.label}" takes [map] cg = "split" '
                f'(z = the first coordinates); got "{self.map.cg}".'
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The configuration as nested plain data (tables of keys), as TOML would give it."""
        return dataclasses.asdict(self)

    def check_resumable(self, stored: dict[str, Any]) -> None:
        """Raise ConfigError unless a run configured as `stored` (`to_dict()` output, saved
        with its checkpoint) may be continued with this configuration.

        Only the budget, the checkpointing and the device may change on resume: `[train]`
        minutes and steps (so the length of the learning-rate schedule, which follows them),
        checkpoint_every, checkpoint_minutes, max_nonfinite_fraction, device (on another
        kind of device the random stream is reseeded) and compile. The system, CG map,
        flow, temperatures and everything else must be the same; the message lists each
        difference.
        """
        current = self.to_dict()
        differences = []
        for table in sorted(set(current) | set(stored)):
            ours, theirs = current.get(table, {}), stored.get(table, {})
            for key in sorted(set(ours) | set(theirs)):
                if (table, key) in RESUMABLE_CHANGES or ours.get(key) == theirs.get(key):
                    continue
                differences.append(f"[{table}] {key}: {theirs.get(key)!r} in the run, "
                                   f"{ours.get(key)!r} now")
        if differences:
            raise ConfigError(
                "--resume continues a run only with its own configuration; these differ: "
                + "; ".join(differences) + ". Only [train] minutes, steps, checkpoint_every, "
                "checkpoint_minutes, max_nonfinite_fraction, device and compile may change on "
                "resume. "
                "Use the run's settings, or start a new run in another --out folder."
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        sections = {
            "system": SystemConfig,
            "map": MapConfig,
            "flow": FlowConfig,
            "train": TrainConfig,
        }
        unknown = set(data) - set(sections)
        if unknown:
            raise ConfigError(
                f"Unknown config table(s) {sorted(unknown)}. Valid tables: {sorted(sections)}."
            )
        parts = {}
        for name, kind in sections.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"[{name}] must be a table; got {type(values).__name__}.")
            valid = {f.name for f in dataclasses.fields(kind)}
            bad = set(values) - valid
            if bad:
                raise ConfigError(
                    f"Unknown key(s) {sorted(bad)} in [{name}]. Valid keys: {sorted(valid)}."
                )
            parts[name] = kind(**values)
        return cls(**parts)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"Config file {path} is not valid TOML: {err}") from None
        return cls.from_dict(data)
