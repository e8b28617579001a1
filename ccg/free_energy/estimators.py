"""Pointwise free-energy estimators by importance sampling through the trained flow.

For each CG point z and temperature T, K samples r_k ~ q(r | z, T) give log-weights
log w_k = -u_k - log q(r_k | z, T), u = beta U(X(z, r)) - log|J(z, r)|, and (DESIGN.md):

    beta F(z)          = -log mean_k w_k              (standard error by the delta method)
    ESS                = (sum w)^2 / (K sum w^2)      in (0, 1]
    bound              = mean_k [u_k + log q_k]       (variational upper bound on beta F)
    <U>_z, Var_z(U)    self-normalized weighted moments        (= d(beta F)/d beta, -d2/d beta2)
    grad_z F           = < grad_z U - k_B T grad_z log|J| >_z   (r held fixed)
    d(beta grad F)/d beta = <grad_z U> - Cov_z(U, grad_z u)     (thermal response)
    <dU/d lambda>_z    = <U_term>_z for lambda scaling one force-field term

Samples are drawn in chunks so memory stays bounded for many points.
Shapes: z [M, cg_dim]; every per-point output [M] (or [M, cg_dim] for forces).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch
from tqdm.auto import tqdm

from ccg._checks import check_finite, check_shape, check_temperature
from ccg.constants import KB_KJMOL_PER_K


@dataclass
class PointEstimates:
    """Per-point importance-sampling estimates (all torch.float64 tensors on the CPU).

    Attributes:
        beta_f: beta F(z) [M] (dimensionless; F in kJ/mol = beta_f * k_B T).
        beta_f_err: its standard error [M] (delta method).
        ess: normalized effective sample size [M] in (0, 1].
        bound: variational bound E_q[u + log q] [M] (>= beta F up to noise).
        mean_energy_kjmol: <U>_z [M]; mean_energy_err: its standard error [M].
        energy_var: Var_z(U) [M] in (kJ/mol)^2; energy_var_err: its standard error [M].
        mean_force: grad_z F [M, cg_dim] in kJ/mol per CG unit (or None); mean_force_err.
        thermal_response: d(beta grad F)/d beta [M, cg_dim] in kJ/mol per unit (or None),
            thermal_response_err.
        term_means: {term: <U_term>_z [M]} for the requested force-field terms.
        n_samples: K; n_nonfinite: [M] samples excluded (zero weight) per point.
    """

    beta_f: torch.Tensor
    beta_f_err: torch.Tensor
    ess: torch.Tensor
    bound: torch.Tensor
    mean_energy_kjmol: torch.Tensor
    mean_energy_err: torch.Tensor
    energy_var: torch.Tensor
    energy_var_err: torch.Tensor
    n_samples: int
    n_nonfinite: torch.Tensor
    mean_force: torch.Tensor | None = None
    mean_force_err: torch.Tensor | None = None
    thermal_response: torch.Tensor | None = None
    thermal_response_err: torch.Tensor | None = None
    term_means: dict | None = None

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _weighted_stats(log_w: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalized mean and its delta-method standard error.

    log_w [M, K]; values [M, K, ...] -> (mean [M, ...], err [M, ...]).
    """
    w = torch.softmax(log_w, dim=1)
    extra = (1,) * (values.ndim - 2)
    w = w.reshape(*w.shape, *extra)
    safe = torch.where(w > 0, values, torch.zeros_like(values))
    mean = (w * safe).sum(1)
    err = torch.sqrt((w**2 * (safe - mean.unsqueeze(1)) ** 2).sum(1))
    return mean, err


def _sample_chunk(model, z, temperature, *, need_grad: bool, terms, generator):
    """Sample one chunk; returns per-sample tensors (float64, detached)."""
    with torch.no_grad():
        s = model.sample(z, temperature, generator=generator)
    out = {
        "log_w": s.log_weights.double(),
        "bound": (s.reduced_energy + s.log_q).double(),
        "energy": s.energy_kjmol.double(),
        "finite": s.finite,
    }
    if terms:
        term_energies = model.system.energy_terms(torch.where(
            s.finite[:, None, None], s.x, torch.zeros_like(s.x)))
        for name in terms:
            out[f"term:{name}"] = term_energies[name].detach().double()
    if need_grad:
        zg = s.z.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            x, log_jac = model.cg_map.merge(zg, s.r.detach())
            energy = model.system.energy(x, validate=False)
            (grad_u,) = torch.autograd.grad(energy.sum(), zg, retain_graph=True)
            if log_jac.requires_grad:
                (grad_logj,) = torch.autograd.grad(log_jac.sum(), zg, allow_unused=True)
            else:  # a Jacobian that does not depend on z (linear maps)
                grad_logj = None
            grad_logj = torch.zeros_like(zg) if grad_logj is None else grad_logj
        out["grad_u"] = grad_u.double()
        out["grad_logj"] = grad_logj.double()
    return out


def estimate_free_energy(
    model,
    z: torch.Tensor,
    temperature_k: float,
    *,
    n_samples: int = 256,
    mean_force: bool = False,
    terms: tuple[str, ...] = (),
    chunk_size: int = 16384,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> PointEstimates:
    """Importance-sampling estimates at CG points z and one temperature.

    Args:
        model: a trained `BackmappingModel`.
        z: CG points [M, cg_dim] (rad for torsions, nm for beads).
        temperature_k: T in K (> 0); a warning if outside the model's training range.
        n_samples: K samples per point.
        mean_force: also estimate grad_z F and the thermal response (costs a backward pass).
        terms: force-field term names (system.term_names) whose <U_term>_z to estimate.
        chunk_size: samples per batch (memory bound).
    """
    check_shape(z, (model.cg_dim,), "z", "cg_dim")
    check_finite(z, "z")
    check_temperature(temperature_k)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"Expected n_samples as an integer >= 2; got {n_samples!r}.")
    t_min, t_max = model.t_range
    temperature = float(temperature_k)
    if not t_min <= temperature <= t_max:
        warnings.warn(
            f"T = {temperature} K is outside the model's training range [{t_min}, {t_max}] K; "
            "the estimates are extrapolations (watch the ESS).",
            stacklevel=2,
        )
    unknown = [t for t in terms if t not in getattr(model.system, "term_names", [])]
    if unknown:
        raise ValueError(
            f"Unknown energy term(s) {unknown}. The system has "
            f"{list(getattr(model.system, 'term_names', []))}."
        )
    beta = 1.0 / (KB_KJMOL_PER_K * temperature)
    n_points, k = z.shape[0], n_samples
    points_per_chunk = max(1, chunk_size // k)
    parts: dict[str, list] = {}

    starts = range(0, n_points, points_per_chunk)
    for start in tqdm(starts, disable=not progress, desc="free energy", unit="chunk"):
        zc = z[start:start + points_per_chunk]
        rows = zc.repeat_interleave(k, dim=0)
        chunk = _sample_chunk(model, rows, temperature, need_grad=mean_force, terms=terms,
                              generator=generator)
        for key, value in chunk.items():
            parts.setdefault(key, []).append(value.reshape(zc.shape[0], k, *value.shape[1:]))
    data = {key: torch.cat(v) for key, v in parts.items()}
    log_w, finite = data["log_w"], data["finite"]
    log_mean_w = torch.logsumexp(log_w, 1) - math.log(k)
    ess = torch.exp(2 * torch.logsumexp(log_w, 1) - torch.logsumexp(2 * log_w, 1)) / k
    ess = torch.nan_to_num(ess, nan=0.0)
    beta_f_err = torch.sqrt(torch.clamp(1.0 / ess.clamp_min(1e-300) - 1.0, min=0.0) / k)
    bound = torch.where(finite, data["bound"], torch.full_like(data["bound"], torch.inf)).mean(1)
    energy = data["energy"]
    mean_u, mean_u_err = _weighted_stats(log_w, energy)
    second, second_err = _weighted_stats(log_w, (energy - mean_u[:, None]) ** 2)
    result = PointEstimates(
        beta_f=-log_mean_w, beta_f_err=beta_f_err, ess=ess, bound=bound,
        mean_energy_kjmol=mean_u, mean_energy_err=mean_u_err, energy_var=second,
        energy_var_err=second_err,
        n_samples=k, n_nonfinite=(~finite).sum(1),
    )
    if mean_force:
        grad_u, grad_logj = data["grad_u"], data["grad_logj"]
        force_samples = grad_u - grad_logj / beta
        result.mean_force, result.mean_force_err = _weighted_stats(log_w, force_samples)
        # thermal response: <grad U> - Cov(U, beta grad U - grad log J)
        # The weighted mean of grad U_k - (U_k - <U>)(g_k - <g>) is <grad U> - Cov(U, g).
        grad_red = beta * grad_u - grad_logj
        mean_gr, _ = _weighted_stats(log_w, grad_red)
        centered_u = (energy - mean_u[:, None]).unsqueeze(-1)
        resp_samples = grad_u - centered_u * (grad_red - mean_gr.unsqueeze(1))
        result.thermal_response, result.thermal_response_err = _weighted_stats(log_w, resp_samples)
    if terms:
        result.term_means = {t: _weighted_stats(log_w, data[f"term:{t}"])[0] for t in terms}
    return result
