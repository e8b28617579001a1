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

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


DEFAULT_ENERGY_CUT = 100.0
"""Default softening threshold, in k_BT above the reference structure's energy."""


class EnergyCut:
    """The energy regularization of the reverse-KL losses: beta U is softened by `linlog_cut`
    once it exceeds the reference structure's beta U_ref by `cut` (k_BT).

    Measured from U_ref (the system's energy-minimized reference structure; 0 for systems
    without one), so the threshold means the same at every temperature and for any constant
    offset of the force field. Below it the reduced energy is returned unchanged. A physical
    configuration with n fast coordinates has beta (U - U_min) of about n/2 +- sqrt(n/2)
    (harmonic), so a cut under n/2 + 6 sqrt(n/2) warns: it would soften physical energies.
    The default, 100 k_BT, is far above alanine dipeptide's physical range (n = 58: at most
    ~52 above U_ref at 300-600 K) and below its clashes, whose gradients (up to 1e5 in
    gradient norm with a cut at 1000) otherwise destabilize the first thousand steps.

    Args:
        system: the system (its `reference_positions` and `energy` give U_ref).
        cut: threshold in k_BT above U_ref (> 0).
        n_fast: number of coordinates the flow samples (for the warning).
    """

    def __init__(self, system, cut: float = DEFAULT_ENERGY_CUT, n_fast: int | None = None):
        if not (isinstance(cut, int | float) and math.isfinite(cut) and cut > 0):
            raise ValueError(f"Expected energy_cut > 0 (k_BT above the reference structure's "
                             f"energy); got {cut!r}.")
        self.cut = float(cut)
        self.u_ref_kjmol = reference_energy(system)
        if n_fast is not None and self.cut < n_fast / 2 + 6 * math.sqrt(n_fast / 2):
            warnings.warn(
                f"energy_cut = {cut} k_BT is within the physical range of {n_fast} fast "
                f"coordinates (about {n_fast / 2:.0f} +- {math.sqrt(n_fast / 2):.0f} k_BT above "
                f"the minimum); raise it to at least {n_fast / 2 + 6 * math.sqrt(n_fast / 2):.0f} "
                "so physical energies stay untouched.", stacklevel=2)

    def __call__(self, reduced_energy: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Softened beta U [B] from beta U [B] and beta [B] (1 / kJ/mol)."""
        offset = beta * self.u_ref_kjmol
        return linlog_cut(reduced_energy - offset, self.cut) + offset


def reference_energy(system) -> float:
    """U (kJ/mol) of the system's reference structure; 0.0 if it has none (analytic systems,
    whose minima are at 0)."""
    positions = getattr(system, "reference_positions", None)
    if positions is None:
        return 0.0
    x = torch.as_tensor(positions, dtype=torch.float64).reshape(1, *system.event_shape)
    if isinstance(system, torch.nn.Module):  # on the system's device (a model moved to CUDA)
        tensor = next(iter(system.buffers()), next(iter(system.parameters()), None))
        x = x.to(tensor.device) if tensor is not None else x
    with torch.no_grad():
        energy = float(system.energy(x)[0])
    if not math.isfinite(energy):
        raise ValueError(f"The reference structure's energy is {energy}; minimize it first.")
    return energy


AUTO_CUT_SHARE = 0.5
"""`raised_energy_cut` raises the cut when more than this share of the first samples is above
it (alanine dipeptide, which trains well with the default cut, starts with 26 % above it)."""
AUTO_CUT_FACTOR = 10.0
"""... to this multiple of their median excess energy."""


@torch.no_grad()
def raised_energy_cut(model: BackmappingModel, z: torch.Tensor, temperature_k: torch.Tensor,
                      cut: float, *, generator: torch.Generator | None = None
                      ) -> tuple[float, float, float]:
    """The energy cut to train with, from samples of the untrained flow.

    Above the cut the loss sees beta U only through `linlog_cut`, which grows like the log of
    the energy, while the flow's entropy grows with the log-width of each of its n_r
    coordinates: if most samples start above the cut, widening lowers the loss and training
    drifts away (measured: Ace-W-Nme with cut 100, three quarters of its first samples above
    it, never left that regime; with 1000 it trained). So when more than `AUTO_CUT_SHARE` of
    these samples lie above `cut`, the cut is raised to `AUTO_CUT_FACTOR` times their median
    excess energy beta (U - U_ref): the bulk of the samples then sees exact energies and only
    clashes, many orders of magnitude higher, are softened.

    Args:
        model: the untrained model.
        z: CG points [B, cg_dim] and temperature_k [B] (K): one training batch.
        cut: the configured cut (k_BT above U_ref).

    Returns:
        (cut to use, share of the samples above the configured cut, their median excess in
        k_BT; non-finite samples count as above).
    """
    samples = model.sample(z, temperature_k, generator=generator)
    excess = samples.beta * (samples.energy_kjmol - reference_energy(model.system))
    excess = torch.where(samples.finite, excess, torch.full_like(excess, math.inf))
    share = float((excess > cut).double().mean())
    median = float(excess.median())
    if share > AUTO_CUT_SHARE and math.isfinite(median):
        return max(cut, AUTO_CUT_FACTOR * median), share, median
    return cut, share, median


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
    """Mean of `values` over `finite` rows, without a host sync (0 when no row is finite: the
    trainer does not apply such a step and stops the run; see `Trainer.flush`)."""
    n = finite.sum().clamp_min(1)
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


@contextmanager
def frozen_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, ops on `module`'s parameters record no gradient for them (inputs that
    require grad still get theirs); the parameters' flags are restored on exit."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def path_log_q(model: BackmappingModel, samples: FlowSamples) -> torch.Tensor:
    """log q(r | z, T) [B] with the value of `samples.log_q` and only its path gradient.

    The gradient reaches the parameters only through the sample r = f_theta(u): log q is
    re-evaluated by the inverse pass with the parameters frozen. The dropped term, the score
    E_q[d log q_theta(r) / d theta] at fixed r, has zero mean, so the reverse-KL gradient stays
    unbiased; its variance vanishes as q approaches p ("sticking the landing", Roeder et al.
    2017; Vaitl et al. 2022). Costs one inverse pass and its backward.
    """
    context = model.context(samples.z, samples.temperature_k)
    with frozen_parameters(model.flow):
        log_q = model.flow.log_prob(samples.r, context, validate=False)
    return log_q + (samples.log_q - log_q).detach()


class ReverseKL:
    """Data-free reverse KL between q(r | z, T) and p(r | z, T) ∝ exp(-beta U(X(z, r))) |J|.

    Its per-(z, T) expectation is the variational upper bound on beta F(z, T); the gap to the
    exact beta F is KL(q || p).

    Args:
        model: the backmapping model (system, map, flow).
        energy_cut: beta U more than this (k_BT) above the reference structure's is softened
            in the loss (`EnergyCut`; not in the reported log-weights).
        path_gradient: differentiate log q only along the sample path (`path_log_q`): the same
            loss value and expected gradient, with less gradient noise near convergence, for
            one extra inverse pass per step.
        forward_weight: add this times a self-normalized importance-sampling estimate of the
            forward KL(p || q) per (z, T) group, -Σ_i w̄_i log q_theta(r_i) with the samples
            and the normalized weights w̄ held fixed: it raises q where the weights say p has
            more mass than q (the tails reverse KL leaves thin). One extra inverse pass.
        renyi_alpha: 1 (default) is the reverse KL. Below 1, each (z, T) group's samples are
            weighted by w̄_i ∝ w_i^(1 - alpha) (normalized in the group, held fixed): the
            reparameterized gradient of the Rényi bound -log mean_i(w_i^(1 - alpha)) / (1 - alpha)
            (Li & Turner 2016), which leans on the samples where p has more mass than q (the
            thin tails that cost ESS). No extra pass.
        group_size: rows per (z, T) group (consecutive rows), for the weights' normalization.
        sampler: what draws the samples, called like the model (default: the model itself;
            for data-parallel training its `DistributedDataParallel` wrapper).
    """

    def __init__(self, model: BackmappingModel, *, energy_cut: float = DEFAULT_ENERGY_CUT,
                 path_gradient: bool = False, forward_weight: float = 0.0,
                 renyi_alpha: float = 1.0, group_size: int = 1,
                 sampler: torch.nn.Module | None = None):
        if not (math.isfinite(forward_weight) and forward_weight >= 0):
            raise ValueError(f"Expected forward_weight >= 0; got {forward_weight}.")
        if not (math.isfinite(renyi_alpha) and 0.0 <= renyi_alpha <= 1.0):
            raise ValueError(f"Expected renyi_alpha in [0, 1]; got {renyi_alpha}.")
        needs_groups = forward_weight > 0 or renyi_alpha < 1.0
        if needs_groups and group_size < 2:
            raise ValueError(
                f"forward_weight and renyi_alpha < 1 need groups of >= 2 samples per (z, T) to "
                f"normalize the weights; got group_size {group_size} (set samples_per_z >= 2).")
        self.model = model
        self.sampler = model if sampler is None else sampler
        self.energy_cut = EnergyCut(model.system, energy_cut, n_fast=model.cg_map.n_r)
        self.path_gradient = bool(path_gradient)
        self.forward_weight = float(forward_weight)
        self.renyi_alpha = float(renyi_alpha)
        self.group_size = int(group_size)

    def __call__(self, z: torch.Tensor, temperature_k, generator=None) -> LossOutput:
        """z [B, cg_dim], temperature_k [B] or a number (K); one flow sample per row."""
        samples = self.sampler(z, temperature_k, generator=generator)
        reduced = samples.beta * samples.energy_kjmol
        log_q = path_log_q(self.model, samples) if self.path_gradient else samples.log_q
        per_sample = self.energy_cut(reduced, samples.beta) - samples.log_jac + log_q
        if self.renyi_alpha < 1.0:
            w_bar, ok = self._group_weights(samples, 1.0 - self.renyi_alpha)
            per_sample = torch.where(ok, self.group_size * w_bar * per_sample, per_sample)
        if self.forward_weight > 0:
            per_sample = per_sample + self.forward_weight * self._forward_term(samples)
        return _output(samples, per_sample)

    def _group_weights(self, samples: FlowSamples, power: float = 1.0):
        """Normalized weights w̄ ∝ w^power within each group [B] (fixed; 0 for excluded rows)
        and the mask of rows with a finite weight."""
        k = self.group_size
        if samples.r.shape[0] % k:
            raise ValueError(f"Expected a batch of whole groups of {k} rows; got "
                             f"{samples.r.shape[0]} rows.")
        log_w = samples.log_weights.detach()
        ok = samples.finite & torch.isfinite(log_w)
        log_w = torch.where(ok, power * log_w, torch.full_like(log_w, -torch.inf))
        w_bar = torch.softmax(log_w.reshape(-1, k), dim=1).reshape(-1)
        return torch.nan_to_num(w_bar, nan=0.0), ok  # nan: a group with no finite weight

    def _forward_term(self, samples: FlowSamples) -> torch.Tensor:
        """Per-sample -K w̄_i log q_theta(r_i) [B] (samples and w̄ fixed; 0 where w̄ = 0)."""
        k = self.group_size
        w_bar, ok = self._group_weights(samples)
        r = torch.where(ok[:, None], samples.r.detach(), torch.zeros_like(samples.r))
        context = self.model.context(samples.z, samples.temperature_k)
        log_q = self.model.flow.log_prob(r, context)
        return torch.where(w_bar > 0, -k * w_bar * log_q, torch.zeros_like(log_q))


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

    def __init__(self, model: BackmappingModel, cg_flow, *,
                 energy_cut: float = DEFAULT_ENERGY_CUT):
        if cg_flow.dim != model.cg_dim or cg_flow.context_dim != 1:
            raise ValueError(
                f"Expected a CG flow with dim {model.cg_dim} and context_dim 1; got dim "
                f"{cg_flow.dim}, context_dim {cg_flow.context_dim}."
            )
        self.model = model
        self.cg_flow = cg_flow
        self.energy_cut = EnergyCut(model.system, energy_cut, n_fast=model.cg_map.n_r)

    def __call__(self, temperature_k: torch.Tensor, generator=None) -> LossOutput:
        """temperature_k [B] in K: one (z, r) sample per row."""
        check_temperature(temperature_k)
        empty = torch.empty(temperature_k.shape[0], 0, dtype=temperature_k.dtype)
        context = make_context(empty.to(temperature_k.device), temperature_k, self.model.t_ref)
        z, log_p_z = self.cg_flow.sample(context, generator=generator)
        samples = self.model.sample(z, temperature_k, generator=generator)
        reduced = samples.beta * samples.energy_kjmol
        per_sample = (
            self.energy_cut(reduced, samples.beta) - samples.log_jac + samples.log_q + log_p_z
        )
        return _output(samples, per_sample, extra_log_q=log_p_z)
