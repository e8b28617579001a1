"""The backmapping model: a system, a CG map and a conditional flow q(r | z, T), bundled.

`BackmappingModel` is what training optimizes, what a model file stores, and what the
estimators, `ccg backmap` and the cycle use. It owns the one place where the pieces meet:

    context = [cg_features(z), log(T / T_ref)]
    r, log q(r | z, T) = flow.sample(context)
    x, log|J(z, r)|    = cg_map.merge(z, r)
    u = beta U(x) - log|J|,   log w = -u - log q

Shapes: z [B, cg_dim], r [B, n_r], x [B, *event_shape], energies and log-weights [B].
Units: kJ/mol, K, nm, rad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ccg._checks import check_finite, check_shape, check_temperature
from ccg.constants import KB_KJMOL_PER_K
from ccg.flows.context import make_context
from ccg.protocols import CGMapProtocol, FlowProtocol, SystemProtocol, check_protocol


@dataclass
class FlowSamples:
    """One flow sample per (z, T) row. All tensors have leading axis B.

    Attributes:
        z: CG coordinates [B, cg_dim].
        temperature_k: [B] in K.
        r: completing coordinates [B, n_r].
        x: atomistic configurations [B, *event_shape] (nm).
        log_q: log q(r | z, T) [B].
        log_jac: log|J(z, r)| of (z, r) -> x [B].
        energy_kjmol: U(x) [B] (NaN where the configuration is not finite).
        finite: [B] bool, True where x, log_q, log_jac and U are all finite.
    """

    z: torch.Tensor
    temperature_k: torch.Tensor
    r: torch.Tensor
    x: torch.Tensor
    log_q: torch.Tensor
    log_jac: torch.Tensor
    energy_kjmol: torch.Tensor
    finite: torch.Tensor

    @property
    def beta(self) -> torch.Tensor:
        """beta = 1/(k_B T) in mol/kJ, [B]."""
        return 1.0 / (KB_KJMOL_PER_K * self.temperature_k)

    @property
    def reduced_energy(self) -> torch.Tensor:
        """u = beta U - log|J| [B] (dimensionless); NaN rows are not finite."""
        return self.beta * self.energy_kjmol - self.log_jac

    @property
    def log_weights(self) -> torch.Tensor:
        """log w = -u - log q [B]; -inf where the sample is not finite."""
        log_w = -self.reduced_energy - self.log_q
        return torch.where(self.finite, log_w, torch.full_like(log_w, -torch.inf))


def safe_energy(system: SystemProtocol, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U(x) [B] differentiable on finite rows, and the mask of finite rows [B].

    Rows whose coordinates or energy are not finite (overlapping atoms in float32, a NaN from
    the flow) get energy NaN and no gradient: non-finite coordinates are replaced by zeros
    before the energy, and a gradient hook zeroes the rows whose energy is not finite (their
    backward pass would carry 0 · inf = NaN). One energy evaluation and no host sync; the rows
    are independent, so a bad row cannot spoil another's gradient. Callers count and exclude
    them.
    """
    flat = x.reshape(x.shape[0], -1)
    finite_x = torch.isfinite(flat).all(dim=1)
    x_used = torch.where(finite_x[:, None], flat, torch.zeros_like(flat)).reshape(x.shape)
    energy = system.energy(x_used, validate=False)
    finite = finite_x & torch.isfinite(energy)
    if x_used.requires_grad:
        rows = finite.reshape(-1, *([1] * (x.dim() - 1)))
        x_used.register_hook(lambda grad: torch.where(rows, grad, torch.zeros_like(grad)))
    return torch.where(finite, energy, torch.full_like(energy, torch.nan)), finite


class BackmappingModel(torch.nn.Module):
    """System + CG map + conditional flow, with the temperature convention of the context.

    Args:
        system: the target U(x) in kJ/mol (a `ccg.systems.System`, or anything with the
            interface of `ccg.protocols.SystemProtocol`).
        cg_map: the CG map (`ccg.mapping.CGMap` or `CGMapProtocol`); its event_shape matches
            the system's.
        flow: the conditional flow (`ccg.flows.ConditionalFlow` or `FlowProtocol`) with
            dim == cg_map.n_r and context_dim == cg_map.cg_feature_dim + 1.
        t_ref: reference temperature (K) of the context's log(T / T_ref) feature.
        t_range: (t_min, t_max) in K the flow was (or will be) trained over.
    """

    def __init__(self, system: SystemProtocol, cg_map: CGMapProtocol, flow: FlowProtocol, *,
                 t_ref: float, t_range: tuple[float, float]):
        super().__init__()
        check_protocol(system, SystemProtocol, "system")
        check_protocol(cg_map, CGMapProtocol, "cg_map")
        check_protocol(flow, FlowProtocol, "flow")
        if tuple(cg_map.event_shape) != tuple(system.event_shape):
            raise ValueError(
                f"The CG map expects configurations of shape {tuple(cg_map.event_shape)}, the "
                f"system has {tuple(system.event_shape)}. Build the map from the same topology."
            )
        if flow.dim != cg_map.n_r or flow.context_dim != cg_map.cg_feature_dim + 1:
            raise ValueError(
                f"Expected a flow with dim {cg_map.n_r} and context_dim "
                f"{cg_map.cg_feature_dim + 1} for this map; got dim {flow.dim}, "
                f"context_dim {flow.context_dim}. Build it with ccg.training.build_model."
            )
        check_temperature(t_ref, "t_ref")
        check_temperature(t_range[0], "t_min")
        check_temperature(t_range[1], "t_max")
        self.system = system
        self.cg_map = cg_map
        self.flow = flow
        self.t_ref = float(t_ref)
        self.t_range = (float(t_range[0]), float(t_range[1]))
        self.metrics: dict = {}
        """Training summary (steps, times, final loss, ...) as stored in its model file."""
        self.run_config: dict = {}
        """The `RunConfig` it was trained with (`RunConfig.to_dict()`), as stored."""

    @property
    def cg_dim(self) -> int:
        return self.cg_map.cg_dim

    def prepare(self, z: torch.Tensor, temperature_k) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated z [B, cg_dim] and T [B] on the flow's dtype and device (T from a number
        or [B])."""
        check_shape(z, (self.cg_map.cg_dim,), "z", "cg_dim")
        check_finite(z, "z")
        check_temperature(temperature_k)
        param = next(self.flow.parameters())
        z = z.to(device=param.device, dtype=param.dtype)
        temperature = torch.as_tensor(temperature_k, dtype=z.dtype, device=z.device)
        temperature = temperature.expand(z.shape[0]) if temperature.ndim == 0 else temperature
        if temperature.shape != (z.shape[0],):
            raise ValueError(
                f"Expected temperature_k as a number or a tensor of shape [{z.shape[0]}]; "
                f"got shape {list(temperature.shape)}."
            )
        return z, temperature

    def context(self, z: torch.Tensor, temperature_k: torch.Tensor) -> torch.Tensor:
        """Flow context [B, cg_feature_dim + 1] for validated z [B, cg_dim], T [B]."""
        return make_context(self.cg_map.cg_features(z), temperature_k, self.t_ref)

    def sample(
        self,
        z: torch.Tensor,
        temperature_k: torch.Tensor | float,
        *,
        generator: torch.Generator | None = None,
    ) -> FlowSamples:
        """Draw one r ~ q(r | z, T) per row, place the atoms and evaluate the energy.

        Differentiable (reparameterized) with respect to the flow parameters.

        Args:
            z: CG coordinates [B, cg_dim] (repeat rows for several samples per z).
            temperature_k: a number or [B], in K.
        """
        z, temperature = self.prepare(z, temperature_k)
        r, log_q = self.flow.sample(self.context(z, temperature), generator=generator)
        return self.evaluate(z, temperature, r, log_q)

    def evaluate(self, z: torch.Tensor, temperature: torch.Tensor, r: torch.Tensor,
                 log_q: torch.Tensor) -> FlowSamples:
        """Place the atoms of given (z, r), evaluate the energy and flag the finite rows.

        Args:
            z, temperature: [B, cg_dim] and [B] as returned by `prepare` (not re-validated).
            r: completing coordinates [B, n_r]; log_q: their log q(r | z, T) [B].

        Differentiable in r (and z) on finite rows; `sample` is `prepare`, the flow, then this.
        """
        x, log_jac = self.cg_map.merge(z, r)
        energy, finite = safe_energy(self.system, x)
        finite = finite & torch.isfinite(log_q) & torch.isfinite(log_jac)
        chiral = self.cg_map.r_chiral.to(r.device)  # a half-range t' outside [-pi, pi] is
        finite = finite & ((r.abs() <= math.pi) | ~chiral).all(dim=1)  # the mirror image
        return FlowSamples(z, temperature, r, x, log_q, log_jac, energy, finite)

    def forward(self, z: torch.Tensor, temperature_k: torch.Tensor | float, *,
                generator: torch.Generator | None = None) -> FlowSamples:
        """`sample` (the module's call, so that a `DistributedDataParallel` wrapper of the
        model all-reduces the gradients of what it samples)."""
        return self.sample(z, temperature_k, generator=generator)

    def log_prob_x(self, x: torch.Tensor, temperature_k: torch.Tensor | float) -> torch.Tensor:
        """log q(r(x) | z(x), T) [B] of given configurations, in the split coordinates."""
        z, r, _ = self.cg_map.split(x)
        z, temperature = self.prepare(z, temperature_k)
        return self.flow.log_prob(r.to(z), self.context(z, temperature))
