"""The `ConditionalFlow` interface: the backmapping density q(r | z, T).

A flow is a bijection u -> r from a base space to the coordinates r (shape [B, dim]) that
complete the CG coordinates z to an atomistic configuration, conditioned on a context row per
sample (shape [B, context_dim]; by convention the last column is log(T / T_ref), see
`ccg.flows.context`). Dims flagged `circular` are torsions on [-π, π) (periodic); the others
are "linear" and are standardized as u = (r - loc) / scale before the flow acts on them.

Base distribution (drawn in the context's dtype, on the module's device):

- circular dims: a wrapped Cauchy centred where the initial (identity) flow maps to the
  reference torsion `loc`, with
  concentration ρ_d = `circular_concentration[d]` at T_ref, density
  (1 - ρ²) / (2π (1 + ρ² - 2ρ cos u)); ρ = 0 (the default) is the uniform density 1 / (2π).
  Its half-width γ = -log ρ widens like sqrt(T / T_ref) with `temperature_scaling`. It is drawn
  exactly by the Möbius map u = 2 atan(c tan(v / 2)), c = (1 - ρ) / (1 + ρ), of a uniform v,
  so stiff but periodic torsions (a peptide ω, a chiral half-range torsion) start near their
  harmonic width instead of spread over the whole circle. A dim listed in `circular_modes`
  (a torsion with a second minimum, such as a peptide ω's cis state) has a second component
  of the same width at `offset` from the first, with a temperature-dependent weight
  (`ccg.flows.circular_base`);
- linear dims: N(0, s²) in standardized units, where s = sqrt(T / T_ref) = exp(ctx[:, -1] / 2)
  when `temperature_scaling=True` (so that the whole family widens like a harmonic system when
  heated), else s = 1. With `scale_after_layers=True` the base is N(0, 1) and the factor s
  multiplies the linear dims after the layers instead (in `Standardize`): the same family at
  initialization, but the splines then work in units of each temperature's harmonic width, so
  their interval covers the same number of widths at every T.

The internal direction is private: users call `sample`, `log_prob` and `sample_and_log_prob`.
`_forward(u, context)` maps base -> data and `_inverse(r, context)` data -> base; both return the
log|det| of the map they apply, shape [B].
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ccg._checks import check_finite, check_shape, check_tensor
from ccg.flows.circular_base import CircularModes, mobius
from ccg.flows.conditional_affine import ConditionalAffine
from ccg.flows.standardize import Standardize, wrap_angle
from ccg.registry import Registry

PI = math.pi
LOG_2PI = math.log(2.0 * math.pi)

FLOW_BACKENDS: Registry = Registry("flow backend")
"""Flow implementations by backend name ("nflows", "normflows"): `ConditionalFlow` subclasses,
each registered next to its class."""


def _as_vector(value: object, dim: int, name: str, dtype: torch.dtype) -> torch.Tensor:
    """Convert a sequence or tensor to a 1-D tensor of length `dim` (raises on mismatch)."""
    t = torch.as_tensor(value, dtype=dtype).detach().clone().cpu()
    if t.ndim != 1 or t.shape[0] != dim:
        raise ValueError(
            f"Expected {name} of shape [{dim}] (one entry per r dim); got {list(t.shape)}."
        )
    return t


class ConditionalFlow(nn.Module, abc.ABC):
    """Conditional density q(r | context) over mixed circular/linear coordinates.

    Args:
        dim: number of coordinates n_r.
        context_dim: width of one context row (>= 1; the last column is log(T / T_ref)).
        circular: BoolTensor or sequence [dim]; True for torsions on [-π, π).
        loc: reference value per dim [dim] (for example the energy-minimized structure's r).
        scale: typical width per dim at T_ref [dim] (> 0 on linear dims; ignored on circular).
        n_layers: number of coupling layers (even, so every dim is transformed in half of them).
        hidden: hidden width of the conditioner networks.
        n_blocks: residual blocks per conditioner.
        n_bins: spline bins.
        temperature_scaling: scale the base width of linear dims by exp(ctx[:, -1] / 2).
        scale_after_layers: with `temperature_scaling`, apply that factor to the linear dims
            after the layers (base N(0, 1)) instead of in the base.
        tail_bound: spline interval half-width on linear dims, in standardized units.
        spline: "ccg" (the branch-free `ccg.flows.spline.rq_spline`) or "nflows" (nflows'
            reference function); the nflows backend's choice, the same map to 1e-12.
        scale_tril: optional [n_lin, n_lin] lower-triangular factor correlating the linear dims
            at T_ref (replaces diag(scale); n_lin = number of non-circular dims, in order).
        circular_concentration: optional [dim] wrapped-Cauchy concentrations ρ in [0, 1) of the
            base on circular dims at T_ref (ignored on linear dims; default all 0: uniform).
        circular_modes: optional rows (dim, offset rad, energy_kt, log_ratio): a second
            base component on that circular dim, weight sigmoid(-energy_kt T_ref / T +
            log_ratio) (see `ccg.flows.circular_base.CircularModes`).
        conditional_affine: end the layers with a `ConditionalAffine` (a shift and width per
            dim from the context alone, identity at initialization); default False, as in
            flows saved before it existed.

    The architecture arguments have no defaults here: `build_flow` takes them from
    `FlowConfig`, the one source of every default. Subclasses set `backend`, implement
    `_build_layers` (base -> data order), may override `_unit`, and join `FLOW_BACKENDS`.
    """

    backend: ClassVar[str] = ""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        circular: torch.Tensor | Sequence[bool],
        loc: torch.Tensor | Sequence[float],
        scale: torch.Tensor | Sequence[float],
        *,
        n_layers: int,
        hidden: int,
        n_blocks: int,
        n_bins: int,
        temperature_scaling: bool,
        tail_bound: float,
        scale_after_layers: bool,
        spline: str = "ccg",
        scale_tril: torch.Tensor | Sequence[Sequence[float]] | None = None,
        circular_concentration: torch.Tensor | Sequence[float] | None = None,
        circular_modes: Sequence[Sequence[float]] | None = None,
        conditional_affine: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in [
            ("dim", dim, 1),
            ("context_dim", context_dim, 1),
            ("n_layers", n_layers, 2),
            ("hidden", hidden, 1),
            ("n_blocks", n_blocks, 1),
            ("n_bins", n_bins, 2),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Expected {name} as an integer >= {low}; got {value!r}.")
        if n_layers % 2:
            raise ValueError(
                f"Expected an even n_layers (each dim is transformed in half the layers); "
                f"got {n_layers}. Use {n_layers + 1}."
            )
        if not (math.isfinite(tail_bound) and tail_bound > 0):
            raise ValueError(f"Expected tail_bound > 0 (standardized units); got {tail_bound}.")
        dtype = torch.get_default_dtype()
        circ = _as_vector(circular, dim, "circular", torch.bool)
        loc_t = _as_vector(loc, dim, "loc", dtype)
        scale_t = _as_vector(scale, dim, "scale", dtype)
        if not bool(torch.isfinite(loc_t).all()):
            raise ValueError(f"Expected finite loc; got {loc_t.tolist()}.")
        bad = ~circ & ~(torch.isfinite(scale_t) & (scale_t > 0))
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten().tolist()
            raise ValueError(
                f"Expected scale > 0 (finite) on linear dims; got {scale_t[bad].tolist()} at "
                f"dims {idx}. Use the typical fluctuation at T_ref (e.g. 0.003 nm for bonds)."
            )
        scale_t = torch.where(circ, torch.ones_like(scale_t), scale_t)
        rho = torch.zeros(dim, dtype=dtype)
        if circular_concentration is not None:
            rho = _as_vector(circular_concentration, dim, "circular_concentration", dtype)
            if not bool(((rho >= 0) & (rho < 1)).all()):
                raise ValueError(
                    f"Expected circular_concentration in [0, 1) (0: uniform); got {rho.tolist()}."
                )
            rho = torch.where(circ, rho, torch.zeros_like(rho))
        self.register_buffer("circular_concentration", rho, persistent=False)  # in config()
        self.modes = CircularModes(dim, circular_modes, circ, dtype)  # in config()
        self.dim = dim
        self.context_dim = context_dim
        self.n_layers = n_layers
        self.hidden = hidden
        self.n_blocks = n_blocks
        self.n_bins = n_bins
        if spline not in ("ccg", "nflows"):
            raise ValueError(f'Expected spline "ccg" or "nflows"; got {spline!r}.')
        self.spline = spline
        self.temperature_scaling = bool(temperature_scaling)
        self.scale_after_layers = bool(scale_after_layers)
        self.tail_bound = float(tail_bound)
        self.unit = self._unit()
        self.standardize = Standardize(
            circ, loc_t, scale_t, unit=self.unit, scale_tril=scale_tril,
            temperature_scaled=self.temperature_scaling and self.scale_after_layers)
        layers = self._build_layers()
        self.conditional_affine = bool(conditional_affine)
        if self.conditional_affine:
            layers.append(ConditionalAffine(circ, context_dim, hidden, n_blocks))
        self.layers = nn.ModuleList(layers)
        # The base peak on circular dims sits where the layers at initialization (identity
        # splines, fixed circular shifts) take it to 0, i.e. to loc after `Standardize`.
        with torch.no_grad():
            probe = torch.zeros(1, dim, dtype=dtype)
            for layer in self.layers:
                probe, _ = layer(probe, torch.zeros(1, context_dim, dtype=dtype))
        centre = torch.where(circ, wrap_angle(-probe[0]), torch.zeros_like(probe[0]))
        self.register_buffer("_circular_centre", centre, persistent=False)

    # --- backend hooks -------------------------------------------------------------------
    def _unit(self) -> float:
        """Internal flow units per standardized unit on linear dims."""
        return 1.0

    @abc.abstractmethod
    def _build_layers(self) -> list[nn.Module]:
        """Transforms in base -> data order, each with forward/inverse(x, context)."""

    # --- properties and config -----------------------------------------------------------
    @property
    def circular(self) -> torch.Tensor:
        """BoolTensor [dim], True on circular dims."""
        return self.standardize.circular

    @property
    def loc(self) -> torch.Tensor:
        """Reference values [dim] (r units)."""
        return self.standardize.loc

    @property
    def scale(self) -> torch.Tensor:
        """Widths at T_ref [dim] (r units; 1 on circular dims)."""
        return self.standardize.scale

    def config(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments: `build_flow(**flow.config())` rebuilds it."""
        return {
            "backend": self.backend,
            "dim": self.dim,
            "context_dim": self.context_dim,
            "circular": [bool(c) for c in self.circular.tolist()],
            "loc": [float(v) for v in self.loc.tolist()],
            "scale": [float(v) for v in self.scale.tolist()],
            "n_layers": self.n_layers,
            "hidden": self.hidden,
            "n_blocks": self.n_blocks,
            "n_bins": self.n_bins,
            "spline": self.spline,
            "temperature_scaling": self.temperature_scaling,
            "scale_after_layers": self.scale_after_layers,
            "tail_bound": self.tail_bound,
            "scale_tril": (self.standardize.scale_tril.tolist()
                           if self.standardize.correlated else None),
            "circular_concentration": ([float(v) for v in self.circular_concentration.tolist()]
                                       if bool((self.circular_concentration > 0).any()) else None),
            "circular_modes": self.modes.rows or None,
            "conditional_affine": self.conditional_affine,
        }

    # --- base distribution ---------------------------------------------------------------
    def _base_std(self, context: torch.Tensor) -> torch.Tensor:
        """Base std of linear dims in internal units, shape [B, 1]."""
        std = torch.full_like(context[:, :1], self.unit)
        if self.temperature_scaling and not self.scale_after_layers:
            std = std * torch.exp(0.5 * context[:, -1:])
        return std

    def _concentration(self, context: torch.Tensor) -> torch.Tensor:
        """Wrapped-Cauchy concentration ρ(T) [B, dim] of the circular base: ρ_ref^sqrt(T/T_ref)
        with `temperature_scaling` (the half-width -log ρ grows like sqrt(T)), else ρ_ref."""
        rho = self.circular_concentration.to(context.dtype)[None, :]
        if not self.temperature_scaling:
            return rho.expand(context.shape[0], -1)
        return torch.pow(rho, torch.exp(0.5 * context[:, -1:]))

    def _base_sample(
        self, context: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Draw u [B, dim] in the context's dtype and device."""
        shape = (context.shape[0], self.dim)
        kw = {"dtype": context.dtype, "device": context.device, "generator": generator}
        gauss = torch.randn(shape, **kw) * self._base_std(context)
        uniform = torch.rand(shape, **kw) * (2.0 * PI) - PI
        rho = self._concentration(context)
        # Möbius map of the circle: uniform -> wrapped Cauchy(0, rho); the identity at rho = 0
        centre = self._circular_centre.to(context.dtype)
        if self.modes.active:
            centre = centre + self.modes.pick(context, self.temperature_scaling, generator)
        circ = wrap_angle(mobius(uniform, rho) + centre)
        return torch.where(self.circular, circ, gauss)

    def _base_log_prob(self, u: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """log base density of u [B, dim] -> [B]."""
        std = self._base_std(context)
        lin = -0.5 * (u / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI
        circ = self.modes.log_prob(u, self._circular_centre.to(u.dtype),
                                   self._concentration(context), context,
                                   self.temperature_scaling)
        per_dim = torch.where(self.circular, circ, lin)
        return per_dim.sum(dim=1)

    # --- private bijection ---------------------------------------------------------------
    def _forward(self, u: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: u [B, dim] -> r [B, dim], log|dr/du| [B]."""
        x = u
        logdet = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        for layer in self.layers:
            x, ld = layer(x, context)
            logdet = logdet + ld
        r, ld = self.standardize(x, context)
        return r, logdet + ld

    def _inverse(self, r: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base: r [B, dim] -> u [B, dim], log|du/dr| [B]."""
        x, logdet = self.standardize.inverse(r, context)
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x, context)
            logdet = logdet + ld
        return x, logdet

    def _sample(
        self, context: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = self._base_sample(context, generator)
        r, logdet = self._forward(u, context)
        return r, self._base_log_prob(u, context) - logdet

    def _log_prob(self, r: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        u, logdet = self._inverse(r, context)
        return self._base_log_prob(u, context) + logdet

    # --- the base space, for samplers that move there (ccg.free_energy.ais) ---------------
    def base_sample(self, context: torch.Tensor, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw base points u [B, dim] (circular dims in [-π, π)), one per context row."""
        self._check_context(context)
        return self._base_sample(context, generator)

    def base_log_prob(self, u: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """log base density of u [B, dim] -> [B] (differentiable in u)."""
        return self._base_log_prob(u, context)

    def transform(self, u: torch.Tensor, context: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: (r [B, dim], log|dr/du| [B]); log q(r) = base_log_prob(u) - logdet."""
        return self._forward(u, context)

    def base_scale(self, context: torch.Tensor) -> torch.Tensor:
        """A natural step length per base dim [B, dim]: the base std on linear dims, the
        wrapped Cauchy's half-width -log ρ(T) (at most 1 rad; 1 for a uniform dim) on
        circular dims."""
        linear = self._base_std(context).expand(-1, self.dim)
        rho = self._concentration(context)
        half_width = torch.clamp(-torch.log(torch.clamp(rho, min=1e-12)), max=1.0)
        return torch.where(self.circular, half_width, linear)

    def compile_transforms(self, **options) -> None:
        """`torch.compile` the base <-> data maps (`_forward`, `_inverse`: the bulk of
        sampling and density evaluation) in place; `options` go to `torch.compile`. With the
        nflows backend and `spline="ccg"` each map is one graph (no graph break)."""
        self._forward = torch.compile(type(self)._forward.__get__(self), **options)
        self._inverse = torch.compile(type(self)._inverse.__get__(self), **options)

    # --- public API ----------------------------------------------------------------------
    def _check_like_module(self, x: torch.Tensor, name: str) -> None:
        ref = self.standardize.loc
        if x.dtype != ref.dtype:
            raise TypeError(
                f"Expected {name} of dtype {ref.dtype} (the flow's dtype); got {x.dtype}. "
                f"Convert one of them: flow.double() / flow.float() or {name}.to(dtype)."
            )
        if x.device != ref.device:
            raise ValueError(
                f"Expected {name} on device {ref.device} (the flow's device); got {x.device}. "
                f"Move one of them with .to(device)."
            )

    def _check_context(self, context: torch.Tensor) -> None:
        check_tensor(context, "context")
        check_shape(
            context,
            (self.context_dim,),
            "context",
            "CG features, then log(T / T_ref) last; build it with ccg.flows.make_context",
        )
        self._check_like_module(context, "context")
        check_finite(context, "context")

    def sample(
        self, context: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one r per context row, with its log-density.

        Args:
            context: [B, context_dim], last column log(T / T_ref); float32 or float64 (the
                flow's dtype), on the flow's device.
            generator: optional torch.Generator (on the flow's device) for reproducibility.

        Returns:
            r [B, dim] (circular dims in [-π, π), linear dims in r units) and log q(r | context)
            [B]. Both are reparameterized: differentiable with respect to the flow parameters.
        """
        self._check_context(context)
        return self._sample(context, generator)

    def sample_and_log_prob(
        self, context: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Alias of `sample`: (r [B, dim], log q [B])."""
        return self.sample(context, generator=generator)

    def log_prob(self, r: torch.Tensor, context: torch.Tensor, *,
                 validate: bool = True) -> torch.Tensor:
        """log q(r | context), shape [B].

        Args:
            r: [B, dim]; circular dims in rad on [-π, π], linear dims in r units.
            context: [B, context_dim], one row per r row.
            validate: check the inputs and mask rows outside the support (below). `False`
                skips both (no host sync), for callers that pass the flow's own samples with
                their own context (`ccg.training.losses.path_log_q`).

        Rows outside the support (a circular entry outside [-π, π], or a NaN/inf entry) get
        -inf, never a finite value from a wrapped or clipped input; wrap torsions first with
        `ccg.flows.base.wrap_angle` if they come from an unwrapped source.
        """
        if not validate:
            return self._log_prob(r, context)
        self._check_context(context)
        check_shape(r, (self.dim,), "r", "internal coordinates")
        self._check_like_module(r, "r")
        if r.shape[0] != context.shape[0]:
            raise ValueError(
                f"Expected one context row per r row; got r with {r.shape[0]} rows and context "
                f"with {context.shape[0]}. Broadcast the context explicitly, e.g. "
                f"context.expand({r.shape[0]}, -1)."
            )
        outside = ~torch.isfinite(r) | (self.circular & (r.abs() > PI))
        bad = outside.any(dim=1)
        if bool(bad.any()):
            r = torch.where(bad[:, None], self.loc.expand_as(r), r)
            lp = self._log_prob(r, context)
            return lp.masked_fill(bad, float("-inf"))
        return self._log_prob(r, context)
