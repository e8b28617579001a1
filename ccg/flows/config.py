"""`FlowConfig`: the architecture of the conditional flow and how its base is initialized.

The single source of every flow default: `build_flow` and the `[flow]` table of a run
configuration take their defaults from here (`ConditionalFlow` itself has none).
"""

from __future__ import annotations

from dataclasses import dataclass

from ccg.errors import ConfigError
from ccg.flows.base import FLOW_BACKENDS


@dataclass
class FlowConfig:
    """Architecture of the conditional flow (`[flow]` table; see `ccg.flows.build_flow`)."""

    backend: str = "nflows"
    """Coupling layers from "nflows" or "normflows" (`ccg.flows.FLOW_BACKENDS`)."""
    n_layers: int = 4
    """Coupling layers (even: every dim is transformed in half of them)."""
    hidden: int = 128
    """Hidden width of the conditioner networks."""
    n_blocks: int = 2
    """Residual blocks per conditioner."""
    n_bins: int = 8
    """Rational-quadratic spline bins."""
    temperature_scaling: bool = True
    """Widen linear dims like a harmonic system, by sqrt(T / T_ref)."""
    tail_bound: float = 5.0
    """Spline interval half-width on linear dims, in standardized units (identity beyond)."""
    spline: str = "ccg"
    """nflows backend: "ccg", the branch-free spline of `ccg.flows.spline` (no host sync, so
    the step compiles and captures whole), or "nflows", nflows' own function (the reference;
    equal to 1e-12). The normflows backend has its own splines and ignores this."""
    scale_after_layers: bool = True
    """Apply the sqrt(T / T_ref) widening after the coupling layers instead of in the base, so
    the splines act in units of each temperature's harmonic width (`ccg.flows.base`)."""
    concentrate_circular: bool = True
    """Stiff single-minimum circular dims (peptide ω, chiral half-range torsions) get a
    wrapped-Cauchy base of their harmonic width instead of a uniform one
    (`ccg.training.base_init.circular_concentration`); free rotors stay uniform."""
    circular_modes: bool = False
    """Stiff circular dims with a second minimum behind a barrier (a peptide ω's cis state,
    found by `ccg.training.base_modes.second_minima`) get a second base component there,
    weighted by its harmonic population at each temperature (needs `concentrate_circular` and
    `linear_stiff_torsions = false`)."""
    linear_stiff_torsions: bool = True
    """Torsion and bead maps: model the torsions that are stiff with a single minimum at the
    reference structure (a ±120° turn costs > 4 k_BT both ways: peptide ω, ring torsions, the
    chiral CB and HA torsions) as real coordinates with a Gaussian base of their harmonic
    width, like the improper-style ones, instead of on the circle. On the circle a narrow
    peak can be pushed against a circular spline's fixed point at ±π and stay there, far
    from its minimum, and a wrapped-Cauchy base's tails open rings."""
    correlated_base: bool = False
    """Correlate bonds / angles / impropers by the harmonic covariance at the reference
    structure instead of a diagonal base."""
    conditional_affine: bool = False
    """End the flow with a shift and width per dim computed from the context (z, T) alone
    (`ccg.flows.conditional_affine`): each coordinate's location and width then follow z
    directly, besides through the coupling splines."""

    def validate(self) -> FlowConfig:
        """Raise `ConfigError` for a value that cannot be used; returns self."""
        if self.backend not in FLOW_BACKENDS:
            raise ConfigError(f'Unknown flow backend "{self.backend}". Must be one of '
                              f"{FLOW_BACKENDS.names()}.")
        for name in ("n_layers", "hidden", "n_blocks", "n_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"[flow] {name} must be a positive integer; got {value!r}.")
        if self.n_layers % 2:
            raise ConfigError(f"[flow] n_layers must be even (each dim is transformed in half "
                              f"the layers); got {self.n_layers}.")
        for name in ("temperature_scaling", "scale_after_layers", "concentrate_circular",
                     "circular_modes", "linear_stiff_torsions", "correlated_base",
                     "conditional_affine"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"[flow] {name} must be true or false; got "
                                  f"{getattr(self, name)!r}.")
        if isinstance(self.tail_bound, bool) or not isinstance(self.tail_bound, int | float) \
                or not self.tail_bound > 0:
            raise ConfigError(f"[flow] tail_bound must be > 0; got {self.tail_bound!r}.")
        if self.spline not in ("ccg", "nflows"):
            raise ConfigError(f'[flow] spline must be "ccg" or "nflows"; got "{self.spline}".')
        if self.circular_modes and self.linear_stiff_torsions:
            raise ConfigError("[flow] circular_modes puts a second base component on the stiff "
                              "torsions of the circle, which linear_stiff_torsions takes off it: "
                              "set linear_stiff_torsions = false to use circular_modes.")
        return self
