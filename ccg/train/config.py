"""Training configuration: dataclasses read from TOML, validated before any work starts.

A config file has up to four tables, each optional::

    [system]            # what U(x) is
    name = "alanine-dipeptide"

    [map]               # the CG map
    cg = "phi-psi"

    [flow]              # the conditional flow q(r | z, T)
    n_layers = 8

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

SYSTEM_NAMES = ("alanine-dipeptide", "harmonic", "double-well", "mueller-brown")
CG_NAMES = ("phi-psi", "heavy-atoms", "backbone", "split")
T_SAMPLING = ("beta", "log", "uniform")


class ConfigError(ValueError):
    """A training configuration that cannot be used (raised before any work starts)."""


@dataclass
class SystemConfig:
    """The target system. `name` is a bundled system, or use `pdb` + `forcefield`."""

    name: str = "alanine-dipeptide"
    pdb: str | None = None
    forcefield: list[str] = field(default_factory=lambda: ["amber99sbildn.xml"])
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.pdb is None and self.name not in SYSTEM_NAMES:
            raise ConfigError(
                f'Unknown system "{self.name}". Must be one of {list(SYSTEM_NAMES)}, '
                "or give [system] pdb = 'file.pdb' with forcefield = [...]."
            )
        if self.pdb is not None and not Path(self.pdb).is_file():
            raise ConfigError(f"[system] pdb file not found: {self.pdb}")


@dataclass
class MapConfig:
    """The CG map: 'phi-psi' (torsions), 'heavy-atoms' or 'backbone' (beads), 'split'."""

    cg: str = "phi-psi"
    cg_frames: str | None = None
    """Bead maps: a trajectory of CG (or atomistic) frames used as the z proposal."""

    def validate(self) -> None:
        if self.cg not in CG_NAMES:
            raise ConfigError(f'Unknown CG map "{self.cg}". Must be one of {list(CG_NAMES)}.')
        if self.cg_frames is not None and not Path(self.cg_frames).is_file():
            raise ConfigError(f"[map] cg_frames file not found: {self.cg_frames}")


@dataclass
class FlowConfig:
    """Architecture of the conditional flow (see ccg.flows.build_flow)."""

    backend: str = "nflows"
    n_layers: int = 4
    """Coupling layers (even). 4 beat 8 and 2 at equal wall time on alanine dipeptide: 8 gives
    half the steps per minute and trained slower per step (experiments/ala2_train)."""
    hidden: int = 128
    n_blocks: int = 2
    n_bins: int = 8
    temperature_scaling: bool = True
    tail_bound: float = 5.0
    scale_after_layers: bool = True
    """Widen linear dims by sqrt(T / T_ref) after the coupling layers instead of in the base,
    so the splines act in units of each temperature's harmonic width (ccg.flows.base). With
    linear_stiff_torsions it trained stably and raised alanine dipeptide's 600 K median ESS
    from 0.40 to 0.64-0.72 in 20 minutes (three runs, two seeds); with ω on the circle three of
    six runs had collapsed (experiments/ala2_train)."""
    concentrate_circular: bool = True
    """Stiff single-minimum circular dims (peptide ω, chiral half-range torsions) get a
    wrapped-Cauchy base of their harmonic width instead of a uniform one (see
    ccg.train.run.circular_concentration); free rotors stay uniform."""
    circular_modes: bool = False
    """Stiff circular dims with a second minimum behind a barrier (a peptide ω's cis state,
    found by `ccg.train.base_modes.second_minima`) get a second base component there, weighted
    by its harmonic population at each temperature (needs `concentrate_circular`)."""
    linear_stiff_torsions: bool = True
    """Torsion maps: model the torsions that are stiff with a single minimum at the reference
    structure (a ±120° turn costs > 4 k_BT both ways: the peptide ω, the chiral CB and HA
    torsions) as real coordinates with a Gaussian base of their harmonic width, like the
    improper-style ones, instead of on the circle (ccg.train.run.build_model). On the circle a
    narrow peak can be pushed against a spline's fixed point at ±π by one bad step and stay
    there, tens of degrees off its minimum: two 20-minute alanine runs of seed 0 did so (loss
    +4 and +7 nats, ω 40° off trans) while their ESS looked fine; with this, two seeds trained
    without a jump and with a fifth of the gradient norms (experiments/ala2_train)."""
    correlated_base: bool = False
    """Correlate bonds/angles/impropers by the harmonic covariance at the reference structure
    (off by default: it did not measurably help a 20-minute alanine dipeptide run)."""

    def validate(self) -> None:
        for name in ("n_layers", "hidden", "n_blocks", "n_bins"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"[flow] {name} must be a positive integer; got {value!r}.")
        if self.circular_modes and self.linear_stiff_torsions:
            raise ConfigError("[flow] circular_modes puts a second base component on the stiff "
                              "torsions of the circle, which linear_stiff_torsions takes off it: "
                              "set linear_stiff_torsions = false to use circular_modes.")


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
    """Torsion maps: "adaptive" (concentrated where the flow's own running estimates of F are
    low, 30 % uniform; see AdaptiveTorusProposal) or "uniform" on the torus. Bead and analytic
    maps ignore it (CG frames / the box)."""
    z_sharpness: float = 0.5
    """Adaptive proposal: z ~ exp(-z_sharpness * beta F(z, T)) at each pair's own T; below 1
    it flattens the Boltzmann factor so the whole populated region gets training points."""
    n_z: int = 64
    """Distinct (z, T) pairs per step."""
    samples_per_z: int = 16
    """Flow samples per (z, T); the batch is n_z * samples_per_z."""
    steps: int | None = None
    minutes: float | None = None
    lr: float = 1e-3
    """Peak learning rate of the cosine schedule. Safe at 1e-3 with `grad_clip_relative`:
    without it, the 4-layer flow went unstable at 1e-3 in one 20-minute alanine run and one of
    three screens (gradient norms 20 -> 80-180 for the rest of the run)."""
    lr_final: float = 1e-5
    weight_decay: float = 0.0
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
    """Reverse KL: differentiate log q only along the sample path (ccg.train.losses.path_log_q):
    the same expected gradient, with less noise near the optimum, for one extra inverse pass
    (1.9x the step). Off: from initialization it diverged on alanine dipeptide, where far from
    p its own variance is large; meant for fine-tuning a trained flow."""
    forward_weight: float = 0.0
    """Add this times an importance-weighted forward KL(p || q) per (z, T) to the reverse KL
    (ccg.train.losses.ReverseKL): mass-covering, against the thin tails of reverse KL; one
    extra inverse pass per step."""
    renyi_alpha: float = 1.0
    """1: the reverse KL. Below 1, the Rényi bound of order alpha: each (z, T) group's samples
    weighted by w^(1 - alpha), normalized (ccg.train.losses.ReverseKL); mass-covering towards
    alpha = 0, at no extra cost per step."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the flow's parameters with this decay per step
    (e.g. 0.999: a horizon of ~1000 steps) and save it as the model instead of the last
    iterate; the checkpoint keeps both, so a resumed run continues the average."""
    energy_cut: float = 100.0
    """beta U more than this (k_BT) above the reference structure's beta U_ref is softened
    (linear-then-log) in the loss; physical energies are far below it (see EnergyCut)."""
    max_nonfinite_fraction: float = 0.1
    """Abort when the running (20-step) fraction of non-finite samples exceeds this."""
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    def validate(self) -> None:
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
        if self.z_proposal not in ("uniform", "adaptive"):
            raise ConfigError(f'[train] z_proposal must be "uniform" or "adaptive"; got '
                              f'"{self.z_proposal}".')
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
            raise ConfigError("[train] give steps, minutes, or both (the run stops at the first).")
        if not isinstance(self.forward_weight, int | float) or not self.forward_weight >= 0:
            raise ConfigError(f"[train] forward_weight must be >= 0; got {self.forward_weight!r}.")
        if self.grad_skip_relative is not None and not (
                isinstance(self.grad_skip_relative, int | float) and self.grad_skip_relative > 1):
            raise ConfigError(f"[train] grad_skip_relative must be > 1 (a multiple of the median "
                              f"gradient norm) or absent; got {self.grad_skip_relative!r}.")
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
        if not isinstance(self.energy_cut, int | float) or not self.energy_cut > 0:
            raise ConfigError(f"[train] energy_cut must be > 0 (k_BT above the reference "
                              f"structure's energy); got {self.energy_cut!r}.")
        if self.lr <= 0 or self.lr_final <= 0:
            raise ConfigError("[train] lr and lr_final must be > 0.")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f'[train] dtype must be "float32" or "float64"; got "{self.dtype}".')
        if not self.device.startswith(("cpu", "cuda")):
            raise ConfigError(f'[train] device must be "cpu" or "cuda[:N]"; got "{self.device}".')

    @property
    def reference_temperature(self) -> float:
        return float(self.t_ref if self.t_ref is not None else self.t_min)


@dataclass
class RunConfig:
    """A whole training run: system, map, flow, train."""

    system: SystemConfig = field(default_factory=SystemConfig)
    map: MapConfig = field(default_factory=MapConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        self.system.validate()
        self.map.validate()
        self.flow.validate()
        self.train.validate()
        molecular = self.system.pdb is not None or self.system.name == "alanine-dipeptide"
        if molecular and self.map.cg == "split":
            raise ConfigError(
                'CG map "split" is for analytic systems; use "phi-psi" or "heavy-atoms".'
            )
        if not molecular and self.map.cg != "split":
            raise ConfigError(
                f'Analytic system "{self.system.name}" takes [map] cg = "split" '
                f'(z = the first coordinates); got "{self.map.cg}".'
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
