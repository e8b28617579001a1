"""Analytic test systems with exact (or quadrature-exact) conditional free energies.

Configurations are x = (z, r), shape [B, dim]: the CG coordinate is z = x[:, :cg_dim] and the
fast coordinates are r = x[:, cg_dim:]. Coordinates are dimensionless lengths, energies kJ/mol,
temperatures K, β = 1 / (k_B T). The free energy is absolute, nothing dropped:

    F(z, T) = −k_B T log ∫ exp(−β U(z, r)) dr      (Lebesgue measure in the dimensionless r).

Its derivatives, all exact here (the split is the identity, so log|J| = 0):

    ∂(βF)/∂β = ⟨U⟩_z,   ∂²(βF)/∂β² = −Var_z(U),   ∇_z F = ⟨∇_z U⟩_z,
    ∂(β ∇_z F)/∂β = ∇_z ∂(βF)/∂β = ∇_z⟨U⟩_z = ⟨∇_z U⟩_z − β Cov_z(U, ∇_z U)

(differentiate ⟨U⟩_z = ∫ U e^{−βU} dr / ∫ e^{−βU} dr under the integral; ∇_z U at fixed r).
Systems with one fast coordinate also get every observable by quadrature (`quadrature`).
"""

from __future__ import annotations

import math

import torch

from ccg._checks import check_finite, check_shape, check_temperature
from ccg.constants import KB_KJMOL_PER_K
from ccg.systems import _quadrature as quad
from ccg.systems._quadrature import ConditionalObservables
from ccg.systems.base import System
from ccg.systems.registry import SYSTEM_KINDS, SYSTEMS

__all__ = [
    "AnalyticSystem",
    "ConditionalObservables",
    "DoubleWell2D",
    "HarmonicFastModes",
    "MuellerBrown",
    "analytic_names",
    "make_analytic",
]

_MAX_REJECTION_ROUNDS = 1000


@SYSTEM_KINDS.register("analytic")
class AnalyticSystem(System):
    """A system U(x), x = (z, r) of shape [B, dim], with known conditional free energies.

    Subclasses set `cg_dim` and `event_shape = (dim,)`, implement `_energy`, and either override
    `_observables` / `_free_energy` with closed forms or set `r_range` (quadrature window of a
    single fast coordinate, with `r_points` grid points). `z_range` / `z_points` give the grid on
    which `sample` draws z from exp(−βF(z)) when no exact sampler is available.
    """

    cg_dim: int = 1
    r_range: tuple[float, float] | None = None
    r_points: int = 1001
    z_range: tuple[float, float] | None = None
    z_points: int = 2001
    cg_bounds: tuple[list[float], list[float]] = ([-3.0], [3.0])
    """Box (low, high) per CG dimension where training proposes z (covers F < ~10 k_B T)."""
    name: str = ""
    _kwargs: dict

    def config(self) -> dict:
        """JSON-serializable description; `AnalyticSystem.from_config(cfg)` rebuilds it."""
        return {"kind": "analytic", "name": self.name, "kwargs": dict(self._kwargs)}

    @classmethod
    def from_config(cls, cfg: dict) -> AnalyticSystem:
        """Rebuild from `config()` output."""
        return make_analytic(cfg["name"], **cfg.get("kwargs", {}))

    @property
    def n_r(self) -> int:
        """Number of fast coordinates, dim − cg_dim."""
        return self.dim - self.cg_dim

    # ---- public, validated ---------------------------------------------------------------

    def coarse_grain(self, x: torch.Tensor) -> torch.Tensor:
        """The CG coordinates z = x[:, :cg_dim] of configurations x [B, dim]; shape [B, cg_dim]."""
        check_shape(x, self.event_shape, "x")
        return x[:, : self.cg_dim]

    def observables(
        self, z: torch.Tensor, temperature_k: torch.Tensor | float
    ) -> ConditionalObservables:
        """F, ⟨U⟩_z, Var_z(U), ∇_z F and ∂(β∇_z F)/∂β at once (closed form where available).

        Args:
            z: CG coordinates [B, cg_dim], float32 or float64, finite.
            temperature_k: T in K, a number or a tensor [B] (or with one element), all > 0.

        Returns:
            ConditionalObservables with fields of z's dtype on z's device (see its docstring
            for shapes and units).
        """
        z64, beta = self._prepare(z, temperature_k)
        return self._observables(z64, beta).to(z.dtype)

    def free_energy(self, z: torch.Tensor, temperature_k: torch.Tensor | float) -> torch.Tensor:
        """Absolute F(z, T) = −k_B T log ∫ exp(−βU(z, r)) dr in kJ/mol, shape [B]."""
        z64, beta = self._prepare(z, temperature_k)
        return self._free_energy(z64, beta).to(z.dtype)

    def mean_energy(self, z: torch.Tensor, temperature_k: torch.Tensor | float) -> torch.Tensor:
        """⟨U⟩_z = ∂(βF)/∂β in kJ/mol, shape [B]."""
        return self.observables(z, temperature_k).mean_energy

    def energy_variance(self, z: torch.Tensor, temperature_k: torch.Tensor | float) -> torch.Tensor:
        """Var_z(U) = −∂²(βF)/∂β² in (kJ/mol)², shape [B]."""
        return self.observables(z, temperature_k).energy_variance

    def mean_force(self, z: torch.Tensor, temperature_k: torch.Tensor | float) -> torch.Tensor:
        """∇_z F = ⟨∇_z U⟩_z in kJ/mol per unit z, shape [B, cg_dim]."""
        return self.observables(z, temperature_k).mean_force

    def thermal_response(
        self, z: torch.Tensor, temperature_k: torch.Tensor | float
    ) -> torch.Tensor:
        """∂(β∇_z F)/∂β = ∇_z⟨U⟩_z = ⟨∇_z U⟩_z − β Cov_z(U, ∇_z U); kJ/mol per z, [B, cg_dim]."""
        return self.observables(z, temperature_k).thermal_response

    def quadrature(
        self, z: torch.Tensor, temperature_k: torch.Tensor | float
    ) -> ConditionalObservables:
        """The observables by trapezoid quadrature over the single fast coordinate.

        Same arguments and returns as `observables`; the window is `r_range` with `r_points`
        points, and a ValueError is raised if it truncates the Boltzmann factor (> e^-30 at an
        edge). Agrees with the closed forms to ~1e-12 relative for the default windows.
        """
        z64, beta = self._prepare(z, temperature_k)
        return self._quadrature(z64, beta).to(z.dtype)

    def sample_conditional(
        self,
        z: torch.Tensor,
        temperature_k: torch.Tensor | float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw r ~ p(r | z, T) ∝ exp(−βU(z, r)), one per row of z; shape [B, n_r], z's dtype.

        Exact for closed-form systems; for quadrature systems, drawn from the piecewise-linear
        interpolant of the density on the `r_range` grid (error O(h²), h the grid spacing).
        """
        z64, beta = self._prepare(z, temperature_k)
        return self._sample_conditional(z64, beta, generator).to(z.dtype)

    def sample(
        self,
        n: int,
        temperature_k: torch.Tensor | float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw x ~ p(x | T) ∝ exp(−βU(x)); float64 [n, dim].

        z is drawn from exp(−βF(z)) (exactly, or on the `z_range` grid as in
        `sample_conditional`), then r from p(r | z, T). `temperature_k` is a number or a tensor
        [n]; the device is the temperature tensor's, else the generator's, else the CPU.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected n as a positive int; got {n!r}.")
        if isinstance(temperature_k, torch.Tensor):
            device = temperature_k.device
        else:
            device = generator.device if generator is not None else torch.device("cpu")
        beta = self._beta(temperature_k, n, device)
        z = self._sample_marginal(beta, generator)
        return torch.cat([z, self._sample_conditional(z, beta, generator)], dim=1)

    # ---- validation helpers --------------------------------------------------------------

    def _prepare(
        self, z: torch.Tensor, temperature_k: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(z, (self.cg_dim,), "z", "CG coordinates")
        if not z.is_floating_point():
            raise TypeError(f"Expected z as float32 or float64; got {z.dtype}. Use z.double().")
        check_finite(z, "z")
        return z.to(torch.float64), self._beta(temperature_k, z.shape[0], z.device)

    @staticmethod
    def _beta(
        temperature_k: torch.Tensor | float, batch: int, device: torch.device
    ) -> torch.Tensor:
        """β = 1/(k_B T) as float64 [batch] on `device`, after validating T."""
        check_temperature(temperature_k)
        if isinstance(temperature_k, torch.Tensor):
            if temperature_k.numel() != 1 and tuple(temperature_k.shape) != (batch,):
                raise ValueError(
                    f"Expected temperature_k as a number or a tensor of shape [{batch}] (one per "
                    f"row); got shape {list(temperature_k.shape)}."
                )
            t = temperature_k.to(device=device, dtype=torch.float64).reshape(-1)
            t = t.expand(batch) if t.numel() == 1 else t
        else:
            t = torch.full((batch,), float(temperature_k), dtype=torch.float64, device=device)
        return 1.0 / (KB_KJMOL_PER_K * t)

    # ---- private computation (z float64 [B, cg_dim], beta float64 [B]) -------------------

    def _require_quadrature(self, what: str) -> tuple[float, float]:
        if self.n_r != 1 or self.r_range is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no {what}: quadrature needs exactly one fast "
                f"coordinate and an r_range (this system has n_r = {self.n_r}, "
                f"r_range = {self.r_range})."
            )
        return self.r_range

    def _quadrature(self, z: torch.Tensor, beta: torch.Tensor) -> ConditionalObservables:
        lo, hi = self._require_quadrature("quadrature path")
        return quad.observables(self._energy, z, beta, lo, hi, self.r_points)

    def _observables(self, z: torch.Tensor, beta: torch.Tensor) -> ConditionalObservables:
        return self._quadrature(z, beta)

    def _free_energy(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        lo, hi = self._require_quadrature("quadrature path")
        return -quad.log_partition(self._energy, z, beta, lo, hi, self.r_points) / beta

    def _sample_conditional(
        self, z: torch.Tensor, beta: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        lo, hi = self._require_quadrature("conditional sampler")
        r = quad.sample_conditional(self._energy, z, beta, lo, hi, self.r_points, generator)
        return r[:, None]

    def _sample_marginal(
        self, beta: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        if self.cg_dim != 1 or self.z_range is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no marginal sampler: it needs cg_dim == 1 and a "
                f"z_range (got cg_dim = {self.cg_dim}, z_range = {self.z_range})."
            )
        lo, hi = self.z_range
        return quad.sample_marginal(self._free_energy, beta, lo, hi, self.z_points, generator)


@SYSTEMS.register("harmonic", kind="analytic", default_map="split")
class HarmonicFastModes(AnalyticSystem):
    """x = (z, y), z ∈ R, y ∈ R^d: U = k_slow z²/2 + k_perp(z)|y|²/2, k_perp = k_fast e^{a sin z}.

    Closed forms (β = 1/(k_B T), d = n_fast, a = coupling):

        F = k_slow z²/2 + (d / 2β) log(β k_perp(z) / 2π),
        ⟨U⟩ = k_slow z²/2 + d/(2β),   Var U = d/(2β²),
        ∇F = k_slow z + (d / 2β) a cos z,   ∂(β∇F)/∂β = ∇⟨U⟩ = k_slow z.

    The mean force has an entropic, temperature-proportional part from the z-dependent stiffness
    that the thermal response lacks (equipartition makes ⟨U⟩ − U_slow = d k_B T/2 independent of
    z); an estimator of ⟨∇U⟩ − β Cov(U, ∇U) must cancel it exactly. Defaults (k_slow 2.5 kJ/mol,
    k_fast 25 kJ/mol, a = 1, d = 2) put z within ~1 and y within ~0.3 at 300 K (k_B T ≈ 2.5),
    the entropic force ~k_B T. The marginal exp(−βF) ∝ e^{−βk_slow z²/2} e^{−(d a/2) sin z} is
    sampled exactly by rejection from the Gaussian (acceptance ≥ e^{−d|a|}).
    """

    name = "harmonic"

    def __init__(
        self,
        n_fast: int = 2,
        k_slow: float = 2.5,
        k_fast: float = 25.0,
        coupling: float = 1.0,
    ) -> None:
        if isinstance(n_fast, bool) or not isinstance(n_fast, int) or n_fast < 1:
            raise ValueError(f"Expected n_fast as a positive int; got {n_fast!r}.")
        for name, v in (("k_slow", k_slow), ("k_fast", k_fast)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"Expected {name} > 0 (kJ/mol, finite); got {v}.")
        if not math.isfinite(coupling):
            raise ValueError(f"Expected a finite coupling; got {coupling}.")
        self.n_fast, self.k_slow, self.k_fast = n_fast, float(k_slow), float(k_fast)
        self.coupling = float(coupling)
        self.event_shape = (1 + n_fast,)
        self._kwargs = {"n_fast": n_fast, "k_slow": self.k_slow, "k_fast": self.k_fast,
                        "coupling": self.coupling}
        if n_fast == 1:  # quadrature window: edge β U ≥ 60 up to 3000 K
            k_min = self.k_fast * math.exp(-abs(self.coupling))
            half = math.sqrt(120.0 * KB_KJMOL_PER_K * 3000.0 / k_min)
            self.r_range = (-half, half)

    def k_perp(self, z: torch.Tensor) -> torch.Tensor:
        """Fast-mode stiffness k_fast e^{a sin z} in kJ/mol; any shape, as z."""
        return self.k_fast * torch.exp(self.coupling * torch.sin(z))

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        z, y = x[:, 0], x[:, 1:]
        return 0.5 * self.k_slow * z**2 + 0.5 * self.k_perp(z) * (y**2).sum(1)

    def _free_energy(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        z1 = z[:, 0]
        d = self.n_fast
        return 0.5 * self.k_slow * z1**2 + d / (2 * beta) * torch.log(
            beta * self.k_perp(z1) / (2 * math.pi)
        )

    def _observables(self, z: torch.Tensor, beta: torch.Tensor) -> ConditionalObservables:
        z1, d = z[:, 0], self.n_fast
        slow_force = self.k_slow * z1
        return ConditionalObservables(
            free_energy=self._free_energy(z, beta),
            mean_energy=0.5 * self.k_slow * z1**2 + d / (2 * beta),
            energy_variance=d / (2 * beta**2),
            mean_force=(slow_force + d / (2 * beta) * self.coupling * torch.cos(z1))[:, None],
            thermal_response=slow_force[:, None],
        )

    def _sample_conditional(
        self, z: torch.Tensor, beta: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        eps = torch.randn(
            z.shape[0], self.n_fast, dtype=torch.float64, device=z.device, generator=generator
        )
        return eps / torch.sqrt(beta * self.k_perp(z[:, 0]))[:, None]

    def _sample_marginal(
        self, beta: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        half_da = 0.5 * self.n_fast * self.coupling
        out = torch.empty_like(beta)
        todo = torch.ones_like(beta, dtype=torch.bool)
        for _ in range(_MAX_REJECTION_ROUNDS):
            m = int(todo.sum())
            if m == 0:
                return out[:, None]
            kw = {"dtype": torch.float64, "device": beta.device, "generator": generator}
            prop = torch.randn(m, **kw) / torch.sqrt(beta[todo] * self.k_slow)
            log_acc = -half_da * torch.sin(prop) - abs(half_da)
            acc = torch.log(torch.rand(m, **kw)) < log_acc
            idx = torch.nonzero(todo).squeeze(1)[acc]
            out[idx] = prop[acc]
            todo[idx] = False
        raise RuntimeError(
            f"Rejection sampling of z did not finish in {_MAX_REJECTION_ROUNDS} rounds "
            f"(acceptance ≥ e^-{2 * abs(half_da):.1f}); reduce n_fast * |coupling|."
        )


@SYSTEMS.register("double-well", kind="analytic", default_map="split")
class DoubleWell2D(AnalyticSystem):
    """U = x1⁴/4 − 3 x1² + x1 + x2²/2 (kJ/mol), z = x1, r = x2.

    The wells sit near x1 = −2.5 and +2.4 (U1 = −11.5 and −6.6 kJ/mol), the barrier at 0.17
    (U1 = 0.08): 11.6 kJ/mol ≈ 4.6 k_B T at 300 K out of the deep well, 6.7 out of the shallow
    one. x2 decouples, so in closed form

        F = U1(z) − (k_B T/2) log(2π k_B T),  ⟨U⟩ = U1 + k_B T/2,  Var U = (k_B T)²/2,
        ∇F = ∂(β∇F)/∂β = U1'(z) = z³ − 6z + 1;

    `quadrature` computes the same over x2 in [−40, 40] (valid up to ~2000 K).
    """

    r_range = (-40.0, 40.0)
    z_range = (-8.0, 8.0)
    z_points = 3201

    cg_bounds = ([-3.5], [3.5])
    name = "double-well"

    def __init__(self) -> None:
        self.event_shape = (2,)
        self._kwargs = {}

    @staticmethod
    def slow_energy(z: torch.Tensor) -> torch.Tensor:
        """U1(z) = z⁴/4 − 3z² + z in kJ/mol; any shape, as z."""
        return 0.25 * z**4 - 3.0 * z**2 + z

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.slow_energy(x[:, 0]) + 0.5 * x[:, 1] ** 2

    def _free_energy(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.slow_energy(z[:, 0]) - 0.5 / beta * torch.log(2 * math.pi / beta)

    def _observables(self, z: torch.Tensor, beta: torch.Tensor) -> ConditionalObservables:
        z1 = z[:, 0]
        force = (z1**3 - 6.0 * z1 + 1.0)[:, None]
        return ConditionalObservables(
            free_energy=self._free_energy(z, beta),
            mean_energy=self.slow_energy(z1) + 0.5 / beta,
            energy_variance=0.5 / beta**2,
            mean_force=force,
            thermal_response=force.clone(),
        )

    def _sample_conditional(
        self, z: torch.Tensor, beta: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        eps = torch.randn(z.shape[0], 1, dtype=torch.float64, device=z.device, generator=generator)
        return eps / torch.sqrt(beta)[:, None]


@SYSTEMS.register("mueller-brown", kind="analytic", default_map="split")
class MuellerBrown(AnalyticSystem):
    """The Müller–Brown potential times `energy_scale` (kJ/mol); z = x, r = y.

    U = s Σ_i A_i exp(a_i (x−x0_i)² + b_i (x−x0_i)(y−y0_i) + c_i (y−y0_i)²) with the standard
    parameters. The default s = 0.1 gives minima of −14.7, −10.8 and −8.1 kJ/mol and a lowest
    barrier out of the deepest well of ~10.6 kJ/mol: ≈ 4.3 k_B T at 300 K and 2.1 at 600 K.

    F is by trapezoid quadrature over y in `r_range` = [−3, 5] with 1001 points (h = 0.008,
    ≲ 1/10 of the narrowest conditional width at 300 K; the rule converges exponentially, and
    401 to 8001 points agree to 1e-14 in F and 1e-12 in the forces from 100 to 1500 K). The
    positive fourth term grows like exp(0.7 y²) along every line x = const, so the window's
    edges lie > 10⁴ kJ/mol above the conditional minimum for all x in [−4.5, 2.5]: F, ⟨U⟩,
    Var U and the forces agree with adaptive quadrature to ~1e-12 relative. `z_range`
    [−4.5, 2.5] bounds the marginal (its ends ≥ 200 k_B T above the minimum of F up to 1000 K).
    Samples are drawn on these grids (see `AnalyticSystem.sample_conditional`).
    """

    A = (-200.0, -100.0, -170.0, 15.0)
    a = (-1.0, -1.0, -6.5, 0.7)
    b = (0.0, 0.0, 11.0, 0.6)
    c = (-10.0, -10.0, -6.5, 0.7)
    x0 = (1.0, 0.0, -0.5, -1.0)
    y0 = (0.0, 0.5, 1.5, 1.0)
    r_range = (-3.0, 5.0)
    z_range = (-4.5, 2.5)
    z_points = 1401
    cg_bounds = ([-1.6], [1.2])
    name = "mueller-brown"

    def __init__(self, energy_scale: float = 0.1) -> None:
        if not (math.isfinite(energy_scale) and energy_scale > 0):
            raise ValueError(f"Expected energy_scale > 0 (kJ/mol, finite); got {energy_scale}.")
        self.energy_scale = float(energy_scale)
        self.event_shape = (2,)
        self._kwargs = {"energy_scale": self.energy_scale}

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        p = {k: torch.tensor(getattr(self, k), dtype=x.dtype, device=x.device) for k in "Aabc"}
        dx = x[:, :1] - torch.tensor(self.x0, dtype=x.dtype, device=x.device)
        dy = x[:, 1:] - torch.tensor(self.y0, dtype=x.dtype, device=x.device)
        expo = p["a"] * dx**2 + p["b"] * dx * dy + p["c"] * dy**2
        return self.energy_scale * (p["A"] * torch.exp(expo)).sum(1)


def make_analytic(name: str, **kwargs: object) -> AnalyticSystem:
    """Build an analytic system by its registered name ("harmonic", "double-well",
    "mueller-brown"; see `SYSTEMS`)."""
    names = analytic_names()
    if name not in names:
        raise ValueError(f'Unknown analytic system "{name}". Must be one of {names}.')
    return SYSTEMS[name](**kwargs)


def analytic_names() -> list[str]:
    """The registered analytic systems (`SYSTEMS` entries of kind "analytic")."""
    return [name for name in SYSTEMS if SYSTEMS.info(name)["kind"] == "analytic"]
