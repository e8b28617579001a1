"""Annealed importance sampling (AIS) of r at fixed z: flow samples moved toward p(r | z, T).

A flow sample r ~ q(r | z, T) has the importance weight w = exp(-u(z, r)) / q(r | z, T)
(u = beta U - log|J|). Where q misses part of p(r | z) ∝ exp(-u) the weights are heavy-tailed:
the per-z ESS is low, and log-mean-exp estimates of beta F are biased high at any affordable
number of samples. AIS (Neal 2001) carries each sample through K densities between the flow
and the target. It works in the flow's base space u (r = g(u | z, T), `ConditionalFlow.transform`),
where the flow's log weight is

    lw(u) = -u(z, g(u)) + log|dg/du| - log base(u)       (= log w of the sample r = g(u)),

and the stages are

    pi_k(u) ∝ base(u) exp(beta_k lw(u)),   beta_k = k / K,   k = 0 .. K:

pi_0 is the base (the flow itself), pi_K ∝ exp(-u(z, g(u))) |dg/du| is p(r | z) written in u.
Each stage k = 1 .. K adds (beta_k - beta_{k-1}) lw(u) at the current point to the sample's log
weight, then moves u by one MALA step that leaves pi_k invariant. The result

    log W = sum_{k=1..K} (beta_k - beta_{k-1}) lw(u_{k-1})

is an importance weight of the final r for p(r | z) with E[W] = exp(-beta F(z, T)) (the same
normalization as w) for every K and step size, so W replaces w wherever a flow weight is used
(joint samples, `ccg.free_energy.joint`). K = 0 is plain importance sampling. Cost: one energy
and force evaluation per sample and stage, on top of the first.

MALA in base space: u' = u + (eps^2 / 2) s^2 grad log pi_k(u) + eps s xi, xi ~ N(0, 1), wrapped
on circular dims, with a per-dim scale s from the base (`ConditionalFlow.base_scale`) and the
Metropolis-Hastings ratio of the two Gaussian proposal densities (on circular dims the
minimal-image difference: the steps stay far below pi, so the other images carry < e^-50). The
step eps adapts between stages toward an acceptance rate of 0.6 from the batch's mean (a device
tensor: no host sync); that makes stage k's kernel depend on the other samples, a bias of order
1 / batch (as in adaptive sequential Monte Carlo). A row whose energy is not finite at the start
keeps weight 0 (log W = -inf); a move to a non-finite energy is rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from ccg.flows.standardize import wrap_angle
from ccg.model import BackmappingModel, FlowSamples

TARGET_ACCEPT = 0.6
"""Acceptance rate the MALA step size adapts toward."""
ADAPT_RATE = 1.0
"""log eps changes by ADAPT_RATE (acceptance - TARGET_ACCEPT) per stage."""


@dataclass
class AISSamples:
    """Samples after AIS, one per (z, T) row.

    Attributes:
        samples: the final `FlowSamples` (r, x, energies; their `log_q` is the flow's density of
            the final r in base space, log base(u) - log|dg/du|, not the density r was drawn from).
        log_w: AIS log weights [B] (-inf: weight 0), normalized like `FlowSamples.log_weights`.
        acceptance: mean MALA acceptance per stage [K].
        step_size: eps per stage [K] (units of `base_scale`).
    """

    samples: FlowSamples
    log_w: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor


def _check_flow(flow) -> None:
    missing = [n for n in ("base_sample", "base_log_prob", "transform", "base_scale")
               if not callable(getattr(flow, n, None))]
    if missing:
        raise TypeError(f"AIS moves samples in the flow's base space and needs a "
                        f"ccg.flows.ConditionalFlow; {type(flow).__name__} lacks {missing}.")


def _minimal_image(d: torch.Tensor, circular: torch.Tensor) -> torch.Tensor:
    return torch.where(circular, wrap_angle(d), d)


class _Stage:
    """The parts of log pi_k at base points u [B, dim] for fixed (z, T):
    a = log base(u), b = -u(z, g(u)) + log|dg/du| (so lw = b - a), their gradients, and the
    final-point samples."""

    def __init__(self, model: BackmappingModel, z: torch.Tensor, temperature: torch.Tensor):
        self.model, self.z, self.temperature = model, z, temperature
        self.context = model.context(z, temperature)
        self.circular = model.flow.circular.to(z.device)

    def __call__(self, u: torch.Tensor):
        flow = self.model.flow
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            a = flow.base_log_prob(u, self.context)
            r, logdet = flow.transform(u, self.context)
            s = self.model.evaluate(self.z, self.temperature, r, a - logdet)
            b = torch.where(s.finite, -s.reduced_energy + logdet, -torch.inf)
            # a is finite everywhere; b only where the sample is: mask before summing
            b_sum = torch.where(s.finite, b, torch.zeros_like(b)).sum()
            grad_a, = torch.autograd.grad(a.sum(), u, retain_graph=True)
            grad_b, = torch.autograd.grad(b_sum, u)
        grad_b = torch.where(s.finite[:, None], grad_b, torch.zeros_like(grad_b))
        return a.detach(), b.detach(), grad_a, grad_b, _detach(s)


def _detach(s: FlowSamples) -> FlowSamples:
    return FlowSamples(**{f.name: getattr(s, f.name).detach() for f in fields(FlowSamples)})


def ais_sample(model: BackmappingModel, z: torch.Tensor, temperature_k, *, n_steps: int = 16,
               step_size: float = 0.5, generator: torch.Generator | None = None) -> AISSamples:
    """One AIS sample per row of z: a flow sample moved through `n_steps` MALA stages.

    Args:
        model: a `BackmappingModel` whose flow is a `ccg.flows.ConditionalFlow`.
        z: CG coordinates [B, cg_dim] (repeat rows for several samples per z).
        temperature_k: a number or [B], in K.
        n_steps: K, the number of intermediate stages (>= 0; 0: plain importance sampling,
            identical to `model.sample`).
        step_size: initial eps (> 0), in units of the base's scale; it adapts per stage.
        generator: torch random generator on the model's device (None: torch's default).

    Returns:
        `AISSamples` (final samples, log weights [B], acceptance and step size per stage).
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"Expected n_steps as an integer >= 0; got {n_steps!r}.")
    if not (isinstance(step_size, int | float) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"Expected step_size as a positive number; got {step_size!r}.")
    _check_flow(model.flow)
    z, temperature = model.prepare(z, temperature_k)
    stage = _Stage(model, z, temperature)
    flow = model.flow
    with torch.no_grad():
        u = flow.base_sample(stage.context, generator=generator)
        scale = flow.base_scale(stage.context)
    a, b, grad_a, grad_b, samples = stage(u)
    if n_steps == 0:
        empty = torch.zeros(0, dtype=u.dtype, device=u.device)
        return AISSamples(samples, samples.log_weights, empty, empty)
    log_w = torch.zeros_like(a)
    eps = torch.tensor(float(step_size), dtype=u.dtype, device=u.device)
    acceptance, steps = [], []
    for k in range(1, n_steps + 1):
        beta_prev, beta = (k - 1) / n_steps, k / n_steps
        log_w = log_w + (beta - beta_prev) * (b - a)
        # MALA on log pi_k = (1 - beta) a + beta b
        sigma = eps * scale
        drift = 0.5 * sigma * sigma
        grad = (1 - beta) * grad_a + beta * grad_b
        mean_fwd = u + drift * grad
        noise = torch.randn(u.shape, dtype=u.dtype, device=u.device, generator=generator)
        proposal = mean_fwd + sigma * noise
        proposal = torch.where(stage.circular, wrap_angle(proposal), proposal)
        a_new, b_new, grad_a_new, grad_b_new, s_new = stage(proposal)
        grad_new = (1 - beta) * grad_a_new + beta * grad_b_new
        mean_back = proposal + drift * grad_new
        log_fwd = -0.5 * ((_minimal_image(proposal - mean_fwd, stage.circular) / sigma) ** 2
                          ).sum(1)
        log_back = -0.5 * ((_minimal_image(u - mean_back, stage.circular) / sigma) ** 2).sum(1)
        log_ratio = ((1 - beta) * a_new + beta * b_new) - ((1 - beta) * a + beta * b) \
            + log_back - log_fwd
        uniform = torch.rand(log_ratio.shape, dtype=u.dtype, device=u.device,
                             generator=generator)
        accept = s_new.finite & (torch.log(uniform) < log_ratio)  # NaN ratio: rejected
        keep = accept[:, None]
        u = torch.where(keep, proposal, u)
        a = torch.where(accept, a_new, a)
        b = torch.where(accept, b_new, b)
        grad_a = torch.where(keep, grad_a_new, grad_a)
        grad_b = torch.where(keep, grad_b_new, grad_b)
        samples = _select(accept, s_new, samples)
        rate = accept.to(u.dtype).mean()
        acceptance.append(rate)
        steps.append(eps)
        eps = eps * torch.exp(ADAPT_RATE * (rate - TARGET_ACCEPT))
    return AISSamples(samples, log_w, torch.stack(acceptance), torch.stack(steps))


def _select(accept: torch.Tensor, new: FlowSamples, old: FlowSamples) -> FlowSamples:
    """Rows of `new` where accept [B] is True, of `old` elsewhere."""
    out = {}
    for f in fields(FlowSamples):
        n, o = getattr(new, f.name), getattr(old, f.name)
        out[f.name] = torch.where(accept.reshape(-1, *([1] * (n.dim() - 1))), n, o)
    return FlowSamples(**out)
