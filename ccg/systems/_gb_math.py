"""The generalized-Born formulas of OpenMM's Reference platform (`ReferenceObc.cpp` for
GBSAOBCForce, the Lepton expressions of `openmm/app/internal/customgbforces.py` for the
CustomGBForce) as batched torch functions of pair distances; `_gb_terms` builds the
terms from them. Lengths in nm, energies in kJ/mol, charges in e.

Born radii (both forms). For each atom i with radius rho_i and offset radius
or_i = rho_i - offset, and every other atom j with scaled offset radius sr_j, at distance r:

    U = r + sr_j,  L = max(or_i, |r - sr_j|)
    H_ij = 1/L - 1/U + (r - sr_j^2/r) (1/U^2 - 1/L^2) / 4 + log(L/U) / (2 r)   if or_i < U, else 0
    psi_i = or_i / 2 * sum_j H_ij
    B_i = 1 / (1/or_i - tanh(alpha psi_i - beta psi_i^2 + gamma psi_i^3) / rho_i)

GBSAOBCForce adds 2 (1/or_i - 1/L) to H_ij when atom i lies inside atom j's scaled sphere
(or_i < sr_j - r, Tinker's correction); the CustomGBForce expressions do not. GBn2 adds a neck
term to the sum: psi_i = or_i (sum_j H_ij / 2 + s_neck sum_j N_ij) with
N_ij = m0_ij / (1 + 100 (r - d0_ij)^2 + 3e5 (r - d0_ij)^6) where r <= rho_i + rho_j + neckCut,
m0, d0 read from the force's tabulated functions `getm0`, `getd0` at the atoms' `radindex`.

Energy: with pre = -k_e (1/eps_solute - 1/eps_solvent),

    E = sum_i pre q_i^2 / (2 B_i) + sum_{i<j} pre q_i q_j / f_ij
        + sum_i 4 pi sigma_SA (rho_i + 0.14)^2 (rho_i / B_i)^6,
    f_ij = sqrt(r^2 + B_i B_j exp(-r^2 / (4 B_i B_j))),

k_e = ONE_4PI_EPS0 for GBSAOBCForce and the literal 138.935485 of the CustomGBForce
expressions, whose surface term is the literal 28.3919551 and whose salt screening (kappa > 0)
replaces 1/eps_solvent by exp(-kappa B_i) / eps_solvent (self) and exp(-kappa f_ij) /
eps_solvent (pairs).
"""

from __future__ import annotations

import torch

PROBE_RADIUS_NM = 0.14
"""Solvent probe radius of the surface-area (ACE) term, nm (OpenMM's ObcParameters)."""
OBC_OFFSET_NM = 0.009
"""Dielectric offset of GBSAOBCForce, nm (fixed in OpenMM's ObcParameters)."""
OBC2 = (1.0, 0.8, 4.85)
"""(alpha, beta, gamma) of OBC type II (Onufriev, Bashford, Case 2004)."""


def hct_integral(
    r: torch.Tensor,
    inv_r: torch.Tensor,
    or_i: torch.Tensor,
    sr_j: torch.Tensor,
    sr2_j: torch.Tensor,
    *,
    engulf: bool,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The descreening integral H_ij [P, B] of atom j on atom i and dH_ij/dr (module docstring).

    r, inv_r: distances and their inverses [P, B]; or_i, sr_j, sr2_j: [P, 1] offset radius of
    i, scaled offset radius of j and its square. `engulf` adds GBSAOBCForce's correction for
    atom i inside atom j's sphere. dH/dr is None unless `need_grad`.

    The derivative: U = r + sr_j and L = r - sr_j depend on r, but dH/dU and dH/dL vanish
    there, so only the explicit r-dependence counts. Where atom i lies inside atom j's scaled
    sphere (L = sr_j - r > or_i) dH/dL = 2 (r - sr_j) / L^3 does not vanish and adds 2 / L^2;
    GBSAOBCForce's correction 2 (1/or_i - 1/L) cancels exactly that, so with `engulf` the
    explicit derivative is the whole derivative.
    """
    upper = r + sr_j
    lower = torch.maximum((r - sr_j).abs(), or_i)
    inv_ul = 1.0 / (upper * lower)  # one division for both inverses
    inv_u = lower * inv_ul
    inv_l = upper * inv_ul
    diff2 = inv_u * inv_u - inv_l * inv_l
    log_term = torch.log(lower * inv_u) * inv_r
    h = inv_l - inv_u + 0.25 * (r - sr2_j * inv_r) * diff2 + 0.5 * log_term
    dh = None
    if need_grad:
        dh = 0.25 * (1.0 + sr2_j * inv_r * inv_r) * diff2 - 0.5 * log_term * inv_r
    inside_j = or_i < sr_j - r  # then L = sr_j - r
    if engulf:
        h = h + torch.where(inside_j, 2.0 * (1.0 / or_i - inv_l), 0.0)
    elif dh is not None:
        dh = dh + torch.where(inside_j, 2.0 * inv_l * inv_l, 0.0)
    # Where or_i >= U the integral is 0 (at equality L = U and every part of h is exactly 0).
    overlaps = or_i < upper
    h = torch.where(overlaps, h, 0.0)
    if dh is not None:
        dh = torch.where(overlaps, dh, 0.0)
    return h, dh


def neck_integral(
    r: torch.Tensor, cut: torch.Tensor, m0: torch.Tensor, d0: torch.Tensor, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GBn2's neck term N = m0 / (1 + 100 x^2 + 3e5 x^6), x = r - d0, where r <= cut; dN/dr."""
    dr = r - d0
    dr2 = dr * dr
    dr4 = dr2 * dr2
    inv_den = 1.0 / (1.0 + 100.0 * dr2 + 300000.0 * dr4 * dr2)
    near = r <= cut
    value = torch.where(near, m0 * inv_den, 0.0)
    if not need_grad:
        return value, None
    slope = -value * inv_den * (200.0 * dr + 1800000.0 * dr4 * dr)
    return value, torch.where(near, slope, 0.0)


def pair_sum(
    n_atoms: int, i: torch.Tensor, j: torch.Tensor, t_ij: torch.Tensor, t_ji: torch.Tensor
) -> torch.Tensor:
    """S_a = sum over pairs of t_ij where a = i plus t_ji where a = j: [n_atoms, B]."""
    out = t_ij.new_zeros((n_atoms, t_ij.shape[1]))
    return out.index_add(0, i, t_ij).index_add(0, j, t_ji)
