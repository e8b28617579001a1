"""Initializing the flow's base from the force field (no data): widths, correlations and
concentrations of the coordinates r at the system's reference structure.

- `base_scale`: per-dim base widths; bonds, angles and improper-style torsions get their
  harmonic widths 1 / sqrt(beta d2U/dr2) at the reference structure;
- `harmonic_scale_tril`: the Cholesky factor of the harmonic covariance of the linear dims;
- `circular_concentration`: wrapped-Cauchy concentrations for circular dims that are stiff
  with a single minimum (a peptide ω, a chiral half-range torsion); free rotors stay uniform;
- `stiff_torsions`: the atom quadruples of those stiff torsions (to take them off the circle);
- `conditional_moments`: for analytic systems, the exact mean and width of r | z.

`ccg.training.base_modes.second_minima` finds second minima of stiff torsions (cis states).
Energies in kJ/mol, temperatures in K, r in its own units (nm, rad).
"""

from __future__ import annotations

import math

import torch

from ccg._hessian import central_difference_hessian
from ccg.constants import beta_from_temperature
from ccg.systems.analytic import AnalyticSystem

# Typical widths at 300 K of the fast internal coordinates (harmonic estimate sqrt(kT / k) for
# amber-like force constants); the flow's base scales them by sqrt(T / 300 K).
_WIDTH_300K = {"bond": 0.0035, "angle": 0.07, "improper": 0.2, "torsion": 1.0, "coord": 1.0}


def _has_reference(system) -> bool:
    """A molecular system with a reference structure (the base is initialized there)."""
    return (system is not None and not isinstance(system, AnalyticSystem)
            and system.reference_positions is not None)


def base_scale(cg_map, t_ref: float, system=None, *,
               hessian: torch.Tensor | None = None) -> torch.Tensor:
    """Per-dimension base widths [n_r] of the flow at t_ref (K).

    Defaults by kind (harmonic estimates for amber-like force constants, scaled by
    sqrt(T_ref / 300 K)). Analytic systems: the exact conditional widths of r | z. With a
    molecular `system` that has reference positions, the widths of bonds, angles and improper
    torsions are refined to the harmonic widths 1 / sqrt(beta d2U/dr_i2) at the reference
    structure (clamped to 1/4..4 times the default). `hessian`: `reference_hessian(cg_map,
    system)` when the caller has it already (it is the expensive part).
    """
    factor = math.sqrt(t_ref / 300.0)
    stiff = torch.tensor([kind in ("bond", "angle", "improper") for kind in cg_map.r_kinds])
    widths = torch.tensor(
        [_WIDTH_300K[kind] * (factor if kind in ("bond", "angle", "improper") else 1.0)
         for kind in cg_map.r_kinds],
        dtype=torch.float64,
    )
    if isinstance(system, AnalyticSystem):
        return conditional_moments(system, t_ref)[1]
    if not _has_reference(system):
        return widths
    curvature = _hessian(cg_map, system, hessian).diagonal()
    beta = beta_from_temperature(t_ref)
    harmonic = 1.0 / torch.sqrt(beta * curvature.clamp_min(1e-12))
    refined = torch.minimum(torch.maximum(harmonic, widths / 4), widths * 4)
    return torch.where(stiff & (curvature > 0), refined, widths)


def harmonic_scale_tril(cg_map, system, t_ref: float, linear: torch.Tensor, *,
                        hessian: torch.Tensor | None = None):
    """Cholesky factor [n_lin, n_lin] of the harmonic covariance (beta H_ll)^-1 of the linear
    r dims at the reference structure (z and the circular dims held fixed), or None when the
    system has no reference structure or H_ll is not positive definite there (`hessian`: as
    in `base_scale`)."""
    if not _has_reference(system):
        return None
    idx = torch.nonzero(linear).flatten()
    hessian = _hessian(cg_map, system, hessian)[idx][:, idx]
    beta = beta_from_temperature(t_ref)
    factor, info = torch.linalg.cholesky_ex(beta * hessian)
    if int(info) != 0:
        return None
    # (beta H)^-1 = (F F^T)^-1 = F^-T F^-1; its lower Cholesky factor is the flip of F^-T.
    inv_t = torch.linalg.solve_triangular(factor, torch.eye(len(idx), dtype=factor.dtype),
                                          upper=False).T
    covariance = inv_t @ inv_t.T
    tril, info = torch.linalg.cholesky_ex(covariance)
    return None if int(info) != 0 else tril


def circular_concentration(cg_map, system, t_ref: float, circular: torch.Tensor,
                           *, rotor_kt: float = 4.0, max_rho: float = 0.95,
                           hessian: torch.Tensor | None = None):
    """Wrapped-Cauchy concentrations [n_r] of the flow's base on circular dims (0 elsewhere),
    or None for systems without a reference structure.

    A circular dim whose rotation by ±2π/3 at the reference structure costs more than
    `rotor_kt` k_B T_ref both ways is stiff with a single minimum (a peptide ω, a chiral
    half-range torsion): its base gets ρ = exp(-σ), σ = 1 / sqrt(β ∂²U/∂r²) its harmonic width,
    so the flow starts near the right width instead of spread over the circle. Free rotors
    (methyl groups: a 2π/3 turn is a symmetry) keep the uniform base (ρ = 0).
    """
    if not _has_reference(system):
        return None
    idx = torch.nonzero(circular).flatten()
    rho = torch.zeros(len(circular), dtype=torch.float64)
    if len(idx) == 0:
        return rho
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    x_ref = x_ref.reshape(1, *system.event_shape)
    with torch.no_grad():
        z0, r0, _ = cg_map.split(x_ref)
        turns = torch.tensor([2 * math.pi / 3, -2 * math.pi / 3], dtype=torch.float64)
        r = r0.repeat(2 * len(idx), 1)
        rows = torch.arange(2 * len(idx))
        dims = idx.repeat_interleave(2)
        r[rows, dims] = torch.remainder(r[rows, dims] + turns.repeat(len(idx)) + math.pi,
                                        2 * math.pi) - math.pi
        x, _ = cg_map.merge(z0.expand(len(r), -1), r)
        u0 = system.energy(x_ref)[0]
        cost = (system.energy(x) - u0).reshape(len(idx), 2)
    beta = beta_from_temperature(t_ref)
    stiff = torch.nan_to_num(cost, nan=torch.inf).min(1).values * beta > rotor_kt
    curvature = _hessian(cg_map, system, hessian).diagonal()[idx]
    sigma = 1.0 / torch.sqrt(beta * curvature.clamp_min(1e-12))
    value = torch.exp(-sigma).clamp(max=max_rho)
    rho[idx] = torch.where(stiff & (curvature > 0), value, torch.zeros_like(value))
    return rho


def conditional_moments(system, t_ref: float, n_z: int = 16, n: int = 256):
    """Analytic systems: mean and standard deviation [n_r] of r at t_ref (K), pooled over a
    line of z across the training box (exact conditional samples; seeded, so deterministic)."""
    low, high = (torch.as_tensor(b, dtype=torch.float64) for b in system.cg_bounds)
    frac = torch.linspace(0.0, 1.0, n_z, dtype=torch.float64)[:, None]
    z = (low + frac * (high - low)).repeat_interleave(n, dim=0)
    gen = torch.Generator().manual_seed(0)
    r = system.sample_conditional(z, t_ref, generator=gen)
    return r.mean(dim=0), r.std(dim=0).clamp_min(1e-6)


def _hessian(cg_map, system, hessian: torch.Tensor | None) -> torch.Tensor:
    return reference_hessian(cg_map, system) if hessian is None else hessian


def has_reference(system) -> bool:
    """Whether `reference_hessian` applies: a molecular system with a reference structure."""
    return _has_reference(system)


def reference_hessian(cg_map, system) -> torch.Tensor:
    """Hessian d2U/dr2 [n_r, n_r] (kJ/mol per r unit^2, float64) at the system's reference
    structure, with z held at the reference's CG coordinates.

    By the chain rule through the Cartesian Hessian H_x and gradient g_x at the reference
    (`System.reference_hessian`, computed once per system and shared by all its maps):
    d2U/dr2 = J^T H_x J + g_x . d2x/dr2 with J = dx/dr, which is the r-Hessian of the
    quadratic U_ref + g_x . dx + dx . H_x dx / 2 (dx = x(r) - x_ref). That quadratic costs a
    matrix product per configuration instead of a force-field energy, so a second map of the
    same system costs map evaluations only. A map that rebuilds x in its own frame (torsion
    maps) gives the reference rigidly moved; its configurations are moved back onto x_ref's
    frame first (U is invariant under rigid motion, the quadratic is not).
    """
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    x_ref = x_ref.reshape(1, *system.event_shape)
    with torch.no_grad():
        z0, r0, _ = cg_map.split(x_ref)
        rotation, origin, ref_centroid = _rigid_fit(cg_map.merge(z0, r0)[0][0], x_ref[0])
    h_x = system.reference_hessian()
    g_x = -system.forces(x_ref).reshape(-1)
    flat_ref = x_ref.reshape(-1)

    def quadratic(x: torch.Tensor) -> torch.Tensor:
        moved = (x - origin) @ rotation + ref_centroid  # x's frame -> x_ref's frame
        dx = moved.reshape(len(x), -1) - flat_ref
        return dx @ g_x + 0.5 * ((dx @ h_x) * dx).sum(-1)

    return hessian_at(cg_map, quadratic, z0, r0)


def _rigid_fit(x: torch.Tensor, target: torch.Tensor):
    """(rotation [3, 3], centroid of x [3], centroid of target [3]) with
    (x - centroid_x) @ rotation + centroid_target = target for x a rigid motion of target
    [n_atoms, 3] (Kabsch, proper rotation)."""
    cx, ct = x.mean(0), target.mean(0)
    u, _, vt = torch.linalg.svd((x - cx).T @ (target - ct))
    sign = torch.ones(3, dtype=x.dtype)
    sign[2] = torch.sign(torch.linalg.det(u @ vt))
    return u @ torch.diag(sign) @ vt, cx, ct


def hessian_at(cg_map, energy, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Hessian d2U/dr2 [n_r, n_r] (kJ/mol per r unit^2, float64) of U(merge(z, r)) at one
    point, z [1, cg_dim] and r [1, n_r], z held fixed, by central differences of the
    analytic r-gradient (`ccg._hessian`). `energy`: a batched U(x) [B, *event_shape] -> [B],
    e.g. `system.energy`."""
    z = z.detach().to(torch.float64)

    def gradient(rr: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            rr = rr.detach().requires_grad_(True)
            x, _ = cg_map.merge(z.expand(len(rr), -1), rr)
            (grad,) = torch.autograd.grad(energy(x).sum(), rr)
        return grad

    return central_difference_hessian(gradient, r[0])


def stiff_torsions(cg_map, system, t_ref: float, *,
                   hessian: torch.Tensor | None = None) -> list[tuple[int, ...]]:
    """Atom quadruples of the circular (not chiral) r torsions of a torsion or bead map that
    are stiff with a single minimum at the reference structure: those `circular_concentration`
    gives a concentrated base (a ±2π/3 turn costs more than 4 k_B T_ref both ways), e.g.
    peptide ω and ring torsions."""
    rho = circular_concentration(cg_map, system, t_ref, cg_map.r_circular, hessian=hessian)
    if rho is None:
        return []
    layout = cg_map.layout
    first_torsion = layout.n_bonds + layout.n_angles
    dims = torch.nonzero(rho > 0).flatten().tolist()
    return [cg_map.zmatrix.rows[layout.r_torsion_rows[d - first_torsion]] for d in dims]
