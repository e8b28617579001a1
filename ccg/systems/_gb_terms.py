"""Generalized Born implicit solvent compiled to torch: OpenMM's GBSAOBCForce (OBC2, as
`amber99_obc.xml` creates it) and the CustomGBForce of `implicit/obc2.xml` and
`implicit/gbn2.xml`, batched over configurations like the terms of `_torch_terms`.

Every formula (Born radii, energy, constants: `_gb_math`) is the one OpenMM's Reference
platform evaluates, so float64 energies and forces agree with it to rounding. Lengths in nm,
energies in kJ/mol, charges in e.

A CustomGBForce is compiled only if it is exactly one of the models that `_gb_recognize`
recognizes; anything else raises `UnsupportedForce` and OpenMM evaluates the force.

Batched layout: per unordered atom pair (i < j) the distance is computed once; the Born sums
are `index_add` reductions of the two directed terms H_ij and H_ji over the pair list.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import torch

from ccg.systems import _gb_kernel
from ccg.systems._gb_math import (
    OBC2,
    OBC_OFFSET_NM,
    PROBE_RADIUS_NM,
    hct_integral,
    neck_integral,
    pair_sum,
)
from ccg.systems._gb_recognize import (
    ACE_CUSTOM,
    K_E_CUSTOM,
    discrete_table,
    energy_constants,
    particle_table,
    recognize,
)
from ccg.systems._nonbonded_term import NonbondedTerm
from ccg.systems._torch_terms import (
    ONE_4PI_EPS0,
    TORCH_FORCES,
    TorchTerm,
    UnsupportedForce,
    _displacement,
    _md,
    energy_with_gradient,
    pair_chunk,
)

_NOT_FUSED = {name: np.zeros((0, 1)) for name in ("nb_coulomb", "nb_a12", "nb_a6")}
"""The nonbonded arrays of a term not fused with a nonbonded term."""


def _pair_matrix(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs i < j of n atoms."""
    i, j = np.triu_indices(n, k=1)
    return i.astype(np.int64), j.astype(np.int64)


class _GBTerm(TorchTerm):
    """The generalized Born computation shared by the GBSAOBCForce and CustomGBForce terms.

    Subclasses fill the arrays of `_param_names` and the flags below; `forward` returns the
    energy [B] with its gradient computed alongside by hand (first derivatives only), which is
    about twice as fast as autograd through the Born radii.

    Per atom [N, 1]: half_or = or/2, inv_or, inv_rho, alpha, beta, gamma, q2 and q2_salt
    (self energy q2/B + q2_salt exp(-kappa B)/B), ace_coef and ace_rho (surface term
    ace_coef (ace_rho/B)^6). Per pair [P, 1]: or_i, sr_i, sr2_i, or_j, sr_j, sr2_j, qq and
    qq_salt (pair energy qq/f + qq_salt exp(-kappa f)/f), and for GBn2 neck_cut, m0_ij, d0_ij,
    m0_ji, d0_ji.
    """

    _index_names = ("i", "j")
    _param_names = (
        "or_i", "sr_i", "sr2_i", "or_j", "sr_j", "sr2_j", "qq", "qq_salt",  # per pair
        "neck_cut", "m0_ij", "d0_ij", "m0_ji", "d0_ji",  # per pair (GBn2; else empty)
        "half_or", "inv_or", "inv_rho", "alpha", "beta", "gamma",  # per atom
        "q2", "q2_salt", "ace_coef", "ace_rho",  # per atom
        "nb_coulomb", "nb_a12", "nb_a6",  # per pair, when fused with a nonbonded term
    )

    n_atoms: int = 0
    engulf: bool = False
    """GBSAOBCForce's correction for an atom inside another's scaled sphere."""
    r_cut: float | None = None
    """GBSAOBCForce CutoffNonPeriodic: pairs beyond it are left out, pairs within are shifted."""
    neck_scale: float = 0.0
    """GBn2's neckScale (0: no neck term)."""
    self_kappa: float = 0.0
    pair_kappa: float = 0.0
    self_salt: bool = False
    pair_salt: bool = False
    ace: bool = True
    ace_positive_only: bool = False
    """GBSAOBCForce adds the surface term only where B > 0 (always, in practice)."""
    fused_nonbonded: bool = False
    """Also evaluates a NoCutoff nonbonded term on the same pairs (see `fuse_nonbonded`)."""

    def fuse_nonbonded(self, nonbonded: NonbondedTerm) -> _GBTerm | None:
        """A copy of this term that also evaluates `nonbonded` (NoCutoff) in the same passes
        over the pairs, sharing distances and the gradient scatter; None when they cannot be
        fused (a cutoff on either, other atoms). `OpenMMSystem.energy` uses it for the total
        energy; `energy_terms` keeps the two terms apart."""
        if nonbonded.cutoff or self.r_cut is not None or self.fused_nonbonded:
            return None
        n = self.n_atoms
        index = {(a, b): k for k, (a, b) in enumerate(zip(*_pair_matrix(n), strict=True))}
        coulomb, a12, a6 = (np.zeros((len(index), 1)) for _ in range(3))
        pairs = zip(
            nonbonded.i.tolist(), nonbonded.j.tolist(), nonbonded.coulomb.tolist(),
            nonbonded.a12.tolist(), nonbonded.a6.tolist(), strict=True,
        )
        for a, b, c, x12, x6 in pairs:
            k = index.get((min(a, b), max(a, b)))
            if k is None:  # a pair of an atom with itself, or outside this term's atoms
                return None
            coulomb[k] += c
            a12[k] += x12
            a6[k] += x6
        fused = copy.deepcopy(self)
        fused.fused_nonbonded = True
        fused._cache = {}
        fused._register(nb_coulomb=coulomb, nb_a12=a12, nb_a6=a6)
        return fused

    @property
    def n_interactions(self) -> int:
        """Number of atom pairs (each enters the Born radii twice and the pair energy once)."""
        return int(self.i.shape[0])

    def batch_chunk(self, batch: int) -> int:
        return pair_chunk(self.n_interactions, batch)

    use_kernel: bool = False
    """Evaluate energy and forces on the CPU with the C++ kernel (`_gb_kernel`); set on the
    copy `_gb_kernel.kernel_copy` makes. The torch code below stays the reference and the
    fallback."""
    _kernel_blocks: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}  # noqa: RUF012
    """The kernel's parameter blocks per dtype (`_gb_kernel.pack`)."""

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        return energy_with_gradient(xt, self, self._cast(xt))

    def _evaluate_batch(
        self, xt: torch.Tensor, tensors: tuple[torch.Tensor, ...], need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        blocks = self._kernel_blocks.get(xt.dtype) if self.use_kernel else None
        if blocks is None or not need_grad or xt.device.type != "cpu":
            return super()._evaluate_batch(xt, tensors, need_grad)
        return _gb_kernel.gb_energy_gradient(
            xt, tensors[0], tensors[1], *blocks, engulf=self.engulf, ace=self.ace,
            ace_positive_only=self.ace_positive_only, has_neck=bool(self.neck_scale),
            neck_scale=self.neck_scale, fused=self.fused_nonbonded,
        )

    def _evaluate(
        self, xt: torch.Tensor, tensors: tuple[torch.Tensor, ...], need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Energy [B] and, if `need_grad`, its gradient [3, n_atoms, B] with respect to xt."""
        (i, j, or_i, sr_i, sr2_i, or_j, sr_j, sr2_j, qq, qq_salt, neck_cut, m0_ij, d0_ij, m0_ji,
         d0_ji, half_or, inv_or, inv_rho, alpha, beta, gamma, q2, q2_salt, ace_coef, ace_rho,
         nb_coulomb, nb_a12, nb_a6) = tensors
        d = _displacement(xt, i, j)
        r2 = (d * d).sum(0)
        inside = None
        if self.r_cut is not None:
            inside = r2 <= self.r_cut * self.r_cut
            r2 = torch.where(inside, r2, self.r_cut * self.r_cut)  # finite values outside
        inv_r = torch.rsqrt(r2)
        r = r2 * inv_r

        # Born radii.
        t_ij, dt_ij = hct_integral(
            r, inv_r, or_i, sr_j, sr2_j, engulf=self.engulf, need_grad=need_grad
        )
        t_ji, dt_ji = hct_integral(
            r, inv_r, or_j, sr_i, sr2_i, engulf=self.engulf, need_grad=need_grad
        )
        if self.neck_scale:
            # psi = or (sum H / 2 + s sum N) = or / 2 sum (H + 2 s N).
            scale = 2.0 * self.neck_scale
            n_ij, dn_ij = neck_integral(r, neck_cut, m0_ij, d0_ij, need_grad)
            n_ji, dn_ji = neck_integral(r, neck_cut, m0_ji, d0_ji, need_grad)
            t_ij = t_ij + scale * n_ij
            t_ji = t_ji + scale * n_ji
            if need_grad:
                dt_ij = dt_ij + scale * dn_ij
                dt_ji = dt_ji + scale * dn_ji
        if inside is not None:
            t_ij = torch.where(inside, t_ij, 0.0)
            t_ji = torch.where(inside, t_ji, 0.0)
        psi = half_or * pair_sum(self.n_atoms, i, j, t_ij, t_ji)
        tanh = torch.tanh(psi * (alpha - psi * (beta - gamma * psi)))
        born = 1.0 / (inv_or - tanh * inv_rho)
        inv_born = 1.0 / born

        # Self and surface terms per atom, and their derivatives in B.
        atom = q2 * inv_born
        d_atom = -atom * inv_born
        if self.self_salt:
            screened = q2_salt * torch.exp(-self.self_kappa * born) * inv_born
            atom = atom + screened
            d_atom = d_atom - screened * (self.self_kappa + inv_born)
        if self.ace:
            ratio = ace_rho * inv_born
            ratio3 = ratio * ratio * ratio
            surface = ace_coef * ratio3 * ratio3
            if self.ace_positive_only:
                surface = torch.where(born > 0.0, surface, 0.0)
            atom = atom + surface
            d_atom = d_atom - 6.0 * surface * inv_born

        # Pair terms: g(f), f = sqrt(r^2 + Bi Bj exp(-r^2 / (4 Bi Bj))).
        b_i = born.index_select(0, i)
        b_j = born.index_select(0, j)
        bb = b_i * b_j
        big_d = 0.25 * r2 * (inv_born.index_select(0, i) * inv_born.index_select(0, j))
        expo = torch.exp(-big_d)
        inv_f = torch.rsqrt(r2 + bb * expo)
        pair = qq * inv_f
        d_pair = -pair * inv_f  # dg/df
        if self.pair_salt:
            screened = qq_salt * torch.exp(-self.pair_kappa / inv_f) * inv_f
            pair = pair + screened
            d_pair = d_pair - screened * (self.pair_kappa + inv_f)
        if inside is not None:
            pair = torch.where(inside, pair - qq / self.r_cut, 0.0)
            d_pair = torch.where(inside, d_pair, 0.0)
        nb_slope = None
        if self.fused_nonbonded:  # Coulomb + Lennard-Jones on the same pairs (NoCutoff)
            inv_r2 = inv_r * inv_r
            inv_r6 = inv_r2 * inv_r2 * inv_r2
            coul = nb_coulomb * inv_r
            lj12 = nb_a12 * inv_r6 * inv_r6
            lj6 = nb_a6 * inv_r6
            pair = pair + coul + lj12 - lj6
            if need_grad:
                nb_slope = -(coul + 12.0 * lj12 - 6.0 * lj6) * inv_r2  # (dE/dr) / r
        energy = atom.sum(0) + pair.sum(0)
        if not need_grad:
            return energy, None

        # Chain rule: dE/dB per atom, then through psi to the pair distances.
        d_born = d_pair * expo * (1.0 + big_d) * 0.5 * inv_f  # dg/dBi = d_born * Bj
        d_energy_d_born = d_atom.index_add(0, i, d_born * b_j).index_add(0, j, d_born * b_i)
        d_born_d_psi = (
            born * born * (1.0 - tanh * tanh) * (alpha - psi * (2.0 * beta - 3.0 * gamma * psi))
        ) * inv_rho
        q = d_energy_d_born * d_born_d_psi * half_or  # dE/d(sum over pairs of t)
        dr_scaled = d_pair * (1.0 - 0.25 * expo) * inv_f  # (dg/dr) / r
        born_part = q.index_select(0, i) * dt_ij + q.index_select(0, j) * dt_ji
        dr_scaled = dr_scaled + born_part * inv_r
        if inside is not None:
            dr_scaled = torch.where(inside, dr_scaled, 0.0)
        if nb_slope is not None:
            dr_scaled = dr_scaled + nb_slope
        per_pair = d * dr_scaled
        grad = torch.zeros_like(xt).index_add(1, i, per_pair).index_add(1, j, -per_pair)
        return energy, grad


# --- GBSAOBCForce ---------------------------------------------------------------------------


@TORCH_FORCES.register("GBSAOBCForce")
class GBSAOBCTerm(_GBTerm):
    """OpenMM's GBSAOBCForce: OBC type II Born radii (alpha, beta, gamma = 1, 0.8, 4.85;
    dielectric offset 0.009 nm) with Tinker's correction for an atom inside another's scaled
    sphere, the generalized Born energy with the force's solute and solvent dielectrics and
    k_e = ONE_4PI_EPS0, and the ACE surface term 4 pi `getSurfaceAreaEnergy()`
    (rho + 0.14)^2 (rho/B)^6 (only where B > 0, as OpenMM).

    NoCutoff, or CutoffNonPeriodic as the Reference platform computes it: pairs with
    r > r_c are left out of the Born sums and of the pair energy, and each pair within the
    cutoff adds -pre q_i q_j / r_c. CutoffPeriodic raises `UnsupportedForce`.
    """

    def __init__(self, force: openmm.GBSAOBCForce) -> None:
        super().__init__()
        method = force.getNonbondedMethod()
        if method == openmm.GBSAOBCForce.CutoffPeriodic:
            raise UnsupportedForce("it uses periodic boundary conditions (CutoffPeriodic)")
        if method not in (openmm.GBSAOBCForce.NoCutoff, openmm.GBSAOBCForce.CutoffNonPeriodic):
            raise UnsupportedForce(f"its nonbonded method {method} is not NoCutoff")
        if method == openmm.GBSAOBCForce.CutoffNonPeriodic:
            self.r_cut = _md(force.getCutoffDistance())
        n = force.getNumParticles()
        rows = np.array(
            [[_md(v) for v in force.getParticleParameters(p)] for p in range(n)], dtype=np.float64
        ).reshape(n, 3)
        charge, rho, scale = rows[:, 0], rows[:, 1], rows[:, 2]
        offset_radius = rho - OBC_OFFSET_NM
        if n and offset_radius.min() <= 0.0:
            raise UnsupportedForce("an atom has a radius <= the 0.009 nm dielectric offset")
        scaled = offset_radius * scale
        solute = float(force.getSoluteDielectric())
        solvent = float(force.getSolventDielectric())
        pre = (
            -ONE_4PI_EPS0 * (1.0 / solute - 1.0 / solvent)
            if solute != 0.0 and solvent != 0.0
            else 0.0
        )
        surface = 4.0 * np.pi * _md(force.getSurfaceAreaEnergy())
        i, j = _pair_matrix(n)
        self.n_atoms = n
        self.engulf = True
        self.ace_positive_only = True
        empty = np.zeros((0, 1))
        column = np.ones((n, 1))
        self._register(
            i=i,
            j=j,
            or_i=offset_radius[i, None],
            sr_i=scaled[i, None],
            sr2_i=(scaled * scaled)[i, None],
            or_j=offset_radius[j, None],
            sr_j=scaled[j, None],
            sr2_j=(scaled * scaled)[j, None],
            qq=pre * (charge[i] * charge[j])[:, None],
            qq_salt=empty,
            neck_cut=empty,
            m0_ij=empty,
            d0_ij=empty,
            m0_ji=empty,
            d0_ji=empty,
            half_or=0.5 * offset_radius[:, None],
            inv_or=1.0 / offset_radius[:, None],
            inv_rho=1.0 / rho[:, None],
            alpha=OBC2[0] * column,
            beta=OBC2[1] * column,
            gamma=OBC2[2] * column,
            q2=0.5 * pre * charge[:, None] ** 2,
            q2_salt=empty,
            ace_coef=surface * (rho[:, None] + PROBE_RADIUS_NM) ** 2,
            ace_rho=rho[:, None],
            **_NOT_FUSED,
        )


# --- CustomGBForce --------------------------------------------------------------------------


@TORCH_FORCES.register("CustomGBForce")
class CustomGBTerm(_GBTerm):
    """The CustomGBForce of OpenMM's implicit/obc2.xml (OBC2) or implicit/gbn2.xml (GBn2).

    Recognized exactly (see the module docstring): with or without the ACE surface term
    (`sasaMethod` "ACE" or None), with or without salt (`implicitSolventKappa`), any
    dielectrics; NoCutoff only. The Born radii, energy and constants are those the force's
    expressions state (k_e = 138.935485, 4 pi sigma_SA = 28.3919551, probe 0.14 nm), with
    per-atom parameters read from the force, and for GBn2 the neck tables m0 and d0 read from
    its `getm0` and `getd0` Discrete2DFunctions.
    """

    def __init__(self, force: openmm.CustomGBForce) -> None:
        super().__init__()
        model, consts = recognize(force)
        self.model = model.name
        table = particle_table(force)
        n = table.shape[0]
        charge, offset_radius, scaled = table[:, 0], table[:, 1], table[:, 2]
        if n and offset_radius.min() <= 0.0:
            raise UnsupportedForce("an atom has a non-positive offset radius 'or'")
        rho = offset_radius + float(consts["B_offset"])  # radius = or + offset in B
        if model.tables:
            alpha, beta, gamma = table[:, 3], table[:, 4], table[:, 5]
        else:
            alpha = np.full(n, OBC2[0])
            beta = np.full(n, OBC2[1])
            gamma = np.full(n, OBC2[2])
        i, j = _pair_matrix(n)
        self.n_atoms = n
        # With salt, exp(-kappa B) or exp(-kappa f) multiplies the 1/eps_solvent part only.
        inv_in, self_inv_out, self.self_kappa, self.self_salt = energy_constants(consts, "self")
        self_pre = -0.5 * K_E_CUSTOM * (inv_in if self.self_salt else inv_in - self_inv_out)
        inv_in, pair_inv_out, self.pair_kappa, self.pair_salt = energy_constants(consts, "pair")
        pair_pre = -K_E_CUSTOM * (inv_in if self.pair_salt else inv_in - pair_inv_out)
        self.ace = bool(consts["ace"])
        ace_rho = offset_radius + (float(consts["ace_offset"]) if self.ace else 0.0)
        qq = (charge[i] * charge[j])[:, None]
        arrays: dict[str, np.ndarray] = dict(
            i=i,
            j=j,
            or_i=offset_radius[i, None],
            sr_i=scaled[i, None],
            sr2_i=(scaled * scaled)[i, None],
            or_j=offset_radius[j, None],
            sr_j=scaled[j, None],
            sr2_j=(scaled * scaled)[j, None],
            qq=pair_pre * qq,
            qq_salt=K_E_CUSTOM * pair_inv_out * qq,
            half_or=0.5 * offset_radius[:, None],
            inv_or=1.0 / offset_radius[:, None],
            inv_rho=1.0 / rho[:, None],
            alpha=alpha[:, None],
            beta=beta[:, None],
            gamma=gamma[:, None],
            q2=self_pre * charge[:, None] ** 2,
            q2_salt=0.5 * K_E_CUSTOM * self_inv_out * charge[:, None] ** 2,
            ace_coef=(ACE_CUSTOM * (ace_rho + PROBE_RADIUS_NM) ** 2)[:, None],
            ace_rho=ace_rho[:, None],
            **_NOT_FUSED,
        )
        if model.tables:
            self.neck_scale = float(consts["I_neck_scale"])
            radindex = table[:, 6]
            index = np.rint(radindex).astype(np.int64)
            mx, my, m0 = discrete_table(force, "getm0")
            dx, dy, d0 = discrete_table(force, "getd0")
            if not np.array_equal(index, radindex) or index.min(initial=0) < 0 or (
                n and index.max() >= min(mx, my, dx, dy)
            ):
                raise UnsupportedForce("its radindex values are not valid table indices")
            radius = offset_radius + float(consts["I_offset"])
            ri, rj = index[i], index[j]
            # Discrete2DFunction: f(x, y) = values[x + xsize * y]; getm0(radindex1, radindex2).
            arrays.update(
                neck_cut=(radius[i] + radius[j] + float(consts["I_neck_cut"]))[:, None],
                m0_ij=m0[ri + mx * rj][:, None],
                d0_ij=d0[ri + dx * rj][:, None],
                m0_ji=m0[rj + mx * ri][:, None],
                d0_ji=d0[rj + dx * ri][:, None],
            )
        else:
            empty = np.zeros((0, 1))
            arrays.update(neck_cut=empty, m0_ij=empty, d0_ij=empty, m0_ji=empty, d0_ji=empty)
        self._register(**arrays)


def fuse_gb_nonbonded(terms: dict[str, TorchTerm]) -> tuple[str, str, TorchTerm] | None:
    """(GB term name, nonbonded term name, the fused term) when `terms` hold exactly one
    generalized Born and one nonbonded term that `_GBTerm.fuse_nonbonded` can join; else None.
    """
    gb = [name for name, term in terms.items() if isinstance(term, _GBTerm)]
    nonbonded = [name for name, term in terms.items() if isinstance(term, NonbondedTerm)]
    if len(gb) != 1 or len(nonbonded) != 1:
        return None
    fused = terms[gb[0]].fuse_nonbonded(terms[nonbonded[0]])  # type: ignore[union-attr]
    return None if fused is None else (gb[0], nonbonded[0], fused)
