"""`CycleConfig`: the settings of the cycle (`ccg.run_cycle`, `ccg cycle`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ccg.errors import ConfigError

CYCLE_RESUMABLE_CHANGES = frozenset({"iterations", "minutes", "chi2_max", "ess_target"})
"""CycleConfig fields that may differ between a cycle and its resumption."""


@dataclass
class CycleConfig:
    """Settings of `run_cycle`. Temperatures in K, times in minutes."""

    temperatures: list[float] = field(default_factory=lambda: [300.0, 400.0, 500.0, 600.0])
    """Where observables are estimated (and F_theta is sampled), K."""
    iterations: int | None = None
    """At most this many iterations (default: as many as `minutes` allows; 6 without a time
    budget)."""
    minutes: float | None = None
    """Time budget of the iterations (the next one is not started when it would exceed it)."""
    points_per_temperature: int = 192
    """CG points estimated per temperature and iteration."""
    samples_per_point: int = 128
    """Flow samples per point for the importance-sampling estimates."""
    explore_fraction: float = 0.5
    """Share of the points from the exploration proposal; the rest come from F_theta."""
    explore_sharpness: float = 0.5
    """Once F_theta exists, exploration points are resampled towards
    exp(-explore_sharpness beta F_theta): flatter than Boltzmann (below 1), so the whole
    populated region gets points, not only the deepest basin (0: plain exploration)."""
    explore_uniform: float = 0.3
    """Share of the exploration points taken straight from the exploration proposal (so no
    region is abandoned where F_theta is wrong)."""
    finetune_steps: int = 300
    """Reverse-KL steps of the flow per iteration, on the iteration's points."""
    finetune_lr: float = 2e-4
    """Learning rate of the fine-tuning (cosine to a tenth of it)."""
    n_z: int = 64
    """Fine-tuning: distinct (z, T) per step."""
    samples_per_z: int = 16
    """Fine-tuning: flow samples per (z, T)."""
    train_only_at_estimation_temperatures: bool = False
    """Fine-tune the flow at `temperatures` only (temperature-transfer studies)."""
    langevin_steps: int = 2000
    """CG Langevin steps per walker when F_theta proposes points."""
    langevin_walkers: int = 32
    """CG Langevin walkers per temperature."""
    fit_steps: int = 1500
    """F_theta fit steps in the first iteration (half of it in later ones, warm-started)."""
    chi2_max: float = 1.5
    """Convergence: the largest held-out reduced chi-square (values, mean forces, <U>_z) at
    every temperature: F_theta predicts estimates it was not fitted to within their noise."""
    ess_target: float = 0.5
    """Convergence: the median ESS on those points must reach this too."""
    hidden: int = 64
    """Width of each F_theta ensemble member's MLP."""
    n_layers: int = 3
    """Hidden layers of each member."""
    n_members: int = 4
    """Ensemble members (their spread is F_theta's uncertainty)."""
    seed: int = 0
    """Seed of every random draw of the cycle (and of F_theta's initial weights)."""

    def check_resumable(self, stored: dict) -> None:
        """ConfigError naming each difference unless a cycle configured as `stored` may go on
        with this configuration: only iterations, minutes, chi2_max and ess_target may
        change."""
        current = dataclasses.asdict(self)
        differences = [f"{key}: {stored.get(key)!r} in the run, {value!r} now"
                       for key, value in current.items()
                       if key not in CYCLE_RESUMABLE_CHANGES and stored.get(key) != value]
        if differences:
            raise ConfigError("--resume continues a cycle only with its own settings; these "
                              "differ: " + "; ".join(differences) + ". Only iterations, "
                              "minutes, chi2-max and ess-target may change on resume.")

    def validate(self) -> CycleConfig:
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ValueError(f"Expected estimation temperatures > 0 K; got {self.temperatures}.")
        for name in ("iterations", "points_per_temperature", "samples_per_point",
                     "finetune_steps", "n_z", "samples_per_z", "langevin_steps",
                     "langevin_walkers", "fit_steps"):
            value = getattr(self, name)
            if name == "iterations" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} as a positive integer; got {value!r}.")
        if self.samples_per_point < 2:
            raise ValueError("samples_per_point must be >= 2 (ESS and errors need two samples).")
        for name in ("explore_fraction", "explore_uniform"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}.")
        if not self.explore_sharpness >= 0:
            raise ValueError(f"explore_sharpness must be >= 0; got {self.explore_sharpness}.")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0; got {self.minutes}.")
        if not self.chi2_max > 0:
            raise ValueError(f"chi2_max must be > 0; got {self.chi2_max}.")
        return self

    @property
    def max_iterations(self) -> int | float:
        """`iterations`, else unlimited with a time budget, else 6."""
        if self.iterations is not None:
            return self.iterations
        return math.inf if self.minutes is not None else 6
