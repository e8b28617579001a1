"""Training objectives as objects, configured when built.

All losses return a `LossOutput`: the scalar to minimize plus the per-sample diagnostics
(log-weights, energies, the finite mask) the trainer reports. Non-finite samples are excluded
from the mean and counted, never replaced by zeros.

- `ReverseKL`: data-free, E_{z, T} E_{r ~ q}[beta U(X(z, r)) - log|J| + log q(r | z, T)].
- `ForwardKL`: with samples x ~ p(x | T): E[-log q(r(x) | z(x), T)].
- `JointReverseKL`: z drawn from a normalized CG density p_phi(z | T) trained together with q
  (seed 002): E_{z ~ p_phi, r ~ q}[beta U - log|J| + log q + log p_phi(z | T)]; at the optimum
  p_phi(z | T) is proportional to exp(-beta F(z, T)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ccg._checks import check_temperature
from ccg.flows.context import make_context
from ccg.model import BackmappingModel, FlowSamples


def linlog_cut(reduced_energy: torch.Tensor, cut: float) -> torch.Tensor:
    """Soften reduced energies above `cut`: u -> cut + log(1 + u - cut) for u > cut.

    Identity below the cut (physical energies are untouched); keeps gradients finite and small
    for overlapping atoms. Shape-preserving.
    """
    excess = torch.clamp(reduced_energy - cut, min=0.0)
    return torch.where(reduced_energy > cut, cut + torch.log1p(excess), reduced_energy)


@dataclass
class LossOutput:
    """Result of one loss evaluation.

    Attributes:
        loss: scalar to minimize (mean over finite samples).
        log_w: per-sample log importance weights [B] (-inf where excluded), detached.
        energy_kjmol: [B] detached (NaN where excluded).
        temperature_k: [B].
        finite: [B] bool.
    """

    loss: torch.Tensor
    log_w: torch.Tensor
    energy_kjmol: torch.Tensor
    temperature_k: torch.Tensor
    finite: torch.Tensor

    @property
    def n_nonfinite(self) -> int:
        return int((~self.finite).sum())


def _masked_mean(values: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    n = finite.sum()
    if int(n) == 0:
        raise FloatingPointError(
            "Every sample of the batch had a non-finite energy, log-density or Jacobian. "
            "Lower the learning rate, use float64, or check the system's energy at its reference "
            "structure."
        )
    return torch.where(finite, values, torch.zeros_like(values)).sum() / n


def _output(samples: FlowSamples, per_sample: torch.Tensor, extra_log_q=None) -> LossOutput:
    finite = samples.finite & torch.isfinite(per_sample)
    log_w = samples.log_weights.detach()
    if extra_log_q is not None:
        log_w = log_w - extra_log_q.detach()
    log_w = torch.where(finite, log_w, torch.full_like(log_w, -torch.inf))
    return LossOutput(
        loss=_masked_mean(per_sample, finite),
        log_w=log_w,
        energy_kjmol=samples.energy_kjmol.detach(),
        temperature_k=samples.temperature_k.detach(),
        finite=finite,
    )


class ReverseKL:
    """Data-free reverse KL between q(r | z, T) and p(r | z, T) ∝ exp(-beta U(X(z, r))) |J|.

    Its per-(z, T) expectation is the variational upper bound on beta F(z, T); the gap to the
    exact beta F is KL(q || p).

    Args:
        model: the backmapping model (system, map, flow).
        energy_cut: reduced energies above this are softened by `linlog_cut` in the loss (not
            in the reported log-weights).
    """

    def __init__(self, model: BackmappingModel, *, energy_cut: float = 1.0e3):
        self.model = model
        self.energy_cut = float(energy_cut)

    def __call__(self, z: torch.Tensor, temperature_k, generator=None) -> LossOutput:
        """z [B, cg_dim], temperature_k [B] or a number (K); one flow sample per row."""
        samples = self.model.sample(z, temperature_k, generator=generator)
        reduced = samples.beta * samples.energy_kjmol
        per_sample = linlog_cut(reduced, self.energy_cut) - samples.log_jac + samples.log_q
        return _output(samples, per_sample)


class ForwardKL:
    """Maximum likelihood of q on samples x ~ p(x | T): mean of -log q(r(x) | z(x), T)."""

    def __init__(self, model: BackmappingModel):
        self.model = model

    def __call__(self, x: torch.Tensor, temperature_k) -> LossOutput:
        """x [B, *event_shape] (nm), temperature_k [B] or a number (K)."""
        log_q = self.model.log_prob_x(x, temperature_k)
        finite = torch.isfinite(log_q)
        temperature = torch.as_tensor(temperature_k, dtype=log_q.dtype).expand(log_q.shape)
        nan = torch.full_like(log_q, torch.nan)
        return LossOutput(
            loss=_masked_mean(-log_q, finite),
            log_w=nan.detach(),
            energy_kjmol=nan.detach(),
            temperature_k=temperature,
            finite=finite,
        )


class JointReverseKL:
    """Reverse KL of the joint p_phi(z | T) q(r | z, T) against p(x | T) (seed 002).

    Args:
        model: the backmapping model.
        cg_flow: a `ConditionalFlow` over z with context_dim 1 (the temperature feature
            log(T / T_ref)), circular where the map's z is.
        energy_cut: as in `ReverseKL`.
    """

    def __init__(self, model: BackmappingModel, cg_flow, *, energy_cut: float = 1.0e3):
        if cg_flow.dim != model.cg_dim or cg_flow.context_dim != 1:
            raise ValueError(
                f"Expected a CG flow with dim {model.cg_dim} and context_dim 1; got dim "
                f"{cg_flow.dim}, context_dim {cg_flow.context_dim}."
            )
        self.model = model
        self.cg_flow = cg_flow
        self.energy_cut = float(energy_cut)

    def __call__(self, temperature_k: torch.Tensor, generator=None) -> LossOutput:
        """temperature_k [B] in K: one (z, r) sample per row."""
        check_temperature(temperature_k)
        empty = torch.empty(temperature_k.shape[0], 0, dtype=temperature_k.dtype)
        context = make_context(empty.to(temperature_k.device), temperature_k, self.model.t_ref)
        z, log_p_z = self.cg_flow.sample(context, generator=generator)
        samples = self.model.sample(z, temperature_k, generator=generator)
        reduced = samples.beta * samples.energy_kjmol
        per_sample = (
            linlog_cut(reduced, self.energy_cut) - samples.log_jac + samples.log_q + log_p_z
        )
        return _output(samples, per_sample, extra_log_q=log_p_z)
