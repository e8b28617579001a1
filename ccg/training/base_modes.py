"""Second minima of stiff torsions (a peptide ω's cis state) for the flow's circular base.

A stiff circular dim gets a wrapped-Cauchy base around its reference value
(`ccg.training.base_init.circular_concentration`). Some such torsions have a second minimum behind a
high barrier: the cis state of a peptide bond lies ~12 kJ/mol above trans in amber99sb-ildn
(alanine dipeptide's C-terminal ω), so it holds ~0.7 % of the conditional density at 300 K but
~8 % at 600 K. A flow whose base puts (almost) nothing there cannot learn that state by reverse
KL: it draws a cis sample a few times in ten thousand, each with a huge importance weight,
which is what limits the per-(z, T) ESS at high temperature.

`second_minima` finds such states at the reference structure, with z held fixed: each stiff
dim is turned by π and all r are relaxed (L-BFGS in harmonic units); a relaxation that stays
more than `min_separation` away from the reference value is a second minimum. Its free energy
over the reference minimum, in the harmonic approximation of both wells,

    log [p(mode 2) / p(mode 1)] = -beta ΔU + Δ log|J| - ½ Δ log det H,

(H: the Hessian of U in r over linear and stiff circular dims; J: the Jacobian of X(z, r))
gives the mixture weight of a second wrapped-Cauchy component at each temperature
(`ConditionalFlow`, argument `circular_modes`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ccg.constants import beta_from_temperature
from ccg.training.base_init import hessian_at, reference_hessian


class SecondMode(NamedTuple):
    """A second minimum of r dim `dim`: `offset` (rad) from the reference value, `energy_kt`
    = ΔU / (k_B T_ref), `log_ratio` = Δ log|J| - ½ Δ log det H (the temperature-independent
    part of the log population ratio); ΔU in kJ/mol is `energy_kjmol`."""

    dim: int
    offset: float
    energy_kt: float
    log_ratio: float
    energy_kjmol: float


def _relax(cg_map, system, z0: torch.Tensor, r_start: torch.Tensor, unit: torch.Tensor,
           iterations: int) -> torch.Tensor:
    """Minimize Σ U(X(z0, r)) over all of r [n, n_r] from r_start (steps in `unit` [n_r])."""
    v = torch.zeros_like(r_start, requires_grad=True)
    optimizer = torch.optim.LBFGS([v], max_iter=iterations, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12, history_size=50)

    def closure():
        optimizer.zero_grad()
        r = r_start + v * unit
        x, _ = cg_map.merge(z0.expand(len(r), -1), r)
        energy = system.energy(x).sum()
        energy.backward()
        return energy

    optimizer.step(closure)
    with torch.no_grad():
        return r_start + v * unit


def _hessian_terms(cg_map, system, z0: torch.Tensor, r: torch.Tensor, keep: torch.Tensor):
    """(U [kJ/mol], log|J|, log det H over the `keep` dims or NaN if not positive definite)."""

    hessian = hessian_at(cg_map, system.energy, z0, r[None])
    idx = torch.nonzero(keep).flatten()
    chol, info = torch.linalg.cholesky_ex(hessian[idx][:, idx])
    logdet = 2 * torch.log(torch.diagonal(chol)).sum() if int(info) == 0 else torch.tensor(math.nan)
    with torch.no_grad():
        x, log_j = cg_map.merge(z0, r[None])
        energy = system.energy(x)[0]
    return float(energy), float(log_j[0]), float(logdet)


def second_minima(cg_map, system, t_ref: float, stiff: torch.Tensor, circular: torch.Tensor,
                  *, min_separation: float = math.pi / 3, iterations: int = 300,
                  hessian: torch.Tensor | None = None) -> list[SecondMode]:
    """Second minima of the `stiff` circular r dims at the reference structure (z fixed).

    Args:
        cg_map, system: the CG map and a system with `reference_positions`.
        t_ref: reference temperature (K) of `energy_kt`.
        stiff: BoolTensor [n_r], the dims to search (those with a concentrated base).
        circular: BoolTensor [n_r]; circular dims without a concentrated base (free rotors)
            are left out of the Hessian determinant (their harmonic approximation is void).
        min_separation: a relaxed state closer than this (rad) to the reference value is the
            reference minimum again, not a second one.
        iterations: L-BFGS iterations per relaxation.
        hessian: `reference_hessian(cg_map, system)` if already computed.

    Returns:
        One `SecondMode` per dim that has one (possibly none), in dim order.
    """
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    x_ref = x_ref.reshape(1, *system.event_shape)
    with torch.no_grad():
        z0, r0, _ = cg_map.split(x_ref)
    beta = beta_from_temperature(t_ref)
    if hessian is None:
        hessian = reference_hessian(cg_map, system)
    curvature = hessian.diagonal()
    unit = 1.0 / torch.sqrt(beta * curvature.clamp_min(1e-6))  # one harmonic width per step
    unit = torch.where(circular & ~stiff, torch.full_like(unit, 0.3), unit.clamp(max=0.3))
    dims = torch.nonzero(stiff & circular).flatten()
    if len(dims) == 0:
        return []
    starts = r0.repeat(len(dims) + 1, 1)
    rows = torch.arange(1, len(dims) + 1)
    turned = starts[rows, dims] + math.pi  # each stiff dim turned by pi, wrapped to [-pi, pi)
    starts[rows, dims] = torch.remainder(turned + math.pi, 2 * math.pi) - math.pi
    relaxed = _relax(cg_map, system, z0, starts, unit, iterations)
    keep = ~circular | stiff
    u_ref, log_j_ref, logdet_ref = _hessian_terms(cg_map, system, z0, relaxed[0], keep)
    modes = []
    for row, d in enumerate(dims.tolist(), start=1):
        offset = math.remainder(float(relaxed[row, d] - relaxed[0, d]), 2 * math.pi)
        if abs(offset) < min_separation:
            continue
        u, log_j, logdet = _hessian_terms(cg_map, system, z0, relaxed[row], keep)
        if not (math.isfinite(u) and math.isfinite(logdet) and math.isfinite(logdet_ref)):
            continue  # not a minimum (saddle or clash): no second component
        modes.append(SecondMode(
            dim=d,
            offset=math.remainder(float(relaxed[row, d] - r0[0, d]), 2 * math.pi),
            energy_kt=beta * (u - u_ref),
            log_ratio=(log_j - log_j_ref) - 0.5 * (logdet - logdet_ref),
            energy_kjmol=u - u_ref,
        ))
    return modes
