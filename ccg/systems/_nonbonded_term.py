"""OpenMM's NonbondedForce compiled to torch: Coulomb plus Lennard-Jones over all pairs and
exceptions, NoCutoff or CutoffNonPeriodic (the reaction-field form of OpenMM's Reference
platform), batched like the other terms of `ccg.systems._torch_terms`."""

from __future__ import annotations

import numpy as np
import openmm
import torch

from ccg.systems._torch_terms import (
    ONE_4PI_EPS0,
    TORCH_FORCES,
    TorchTerm,
    UnsupportedForce,
    _displacement,
    _md,
    energy_with_gradient,
    pair_chunk,
    pair_gradient,
)

_NONBONDED_METHODS = {
    openmm.NonbondedForce.NoCutoff: "NoCutoff",
    openmm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic",
    openmm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
    openmm.NonbondedForce.Ewald: "Ewald",
    openmm.NonbondedForce.PME: "PME",
    openmm.NonbondedForce.LJPME: "LJPME",
}


_WHOLE_BATCH_ELEMENTS = 2**21
"""Largest [pairs, batch] array the nonbonded term evaluates in one piece."""


@TORCH_FORCES.register("NonbondedForce")
class NonbondedTerm(TorchTerm):
    """Coulomb + Lennard-Jones over all interacting pairs, NoCutoff or CutoffNonPeriodic.

    Per pair: E = c / r + (a12 / r^6 - a6) / r^6 with c = ONE_4PI_EPS0 q_i q_j,
    a12 = 4 eps sigma^12, a6 = 4 eps sigma^6. Regular pairs (not exceptions) combine
    sigma = (sigma_i + sigma_j)/2, eps = sqrt(eps_i eps_j); exceptions use their own chargeProd,
    sigma, epsilon, and those with chargeProd = epsilon = 0 are excluded. Pairs that contribute
    nothing are dropped when compiling.

    CutoffNonPeriodic (OpenMM's Reference platform, `ReferenceLJCoulombIxn`): a regular pair
    interacts only where r <= r_c, with the reaction-field Coulomb
    c (1/r + k_rf r^2 - c_rf), k_rf = (eps_rf - 1) / ((2 eps_rf + 1) r_c^3),
    c_rf = 3 eps_rf / ((2 eps_rf + 1) r_c), eps_rf = `getReactionFieldDielectric()`; its
    Lennard-Jones is multiplied by OpenMM's switching function
    S = 1 - 10 t^3 + 15 t^4 - 6 t^5, t = (r - r_s) / (r_c - r_s) for r > r_s when
    `getUseSwitchingFunction()`. Exceptions keep the plain Coulomb + Lennard-Jones form at
    every distance (no cutoff, no reaction field, no switch). A non-periodic force has no
    dispersion correction.
    """

    _index_names = ("i", "j", "ei", "ej")
    _param_names = ("coulomb", "a12", "a6", "e_coulomb", "e_a12", "e_a6")

    def __init__(self, force: openmm.NonbondedForce) -> None:
        super().__init__()
        method = force.getNonbondedMethod()
        if method not in (openmm.NonbondedForce.NoCutoff, openmm.NonbondedForce.CutoffNonPeriodic):
            raise UnsupportedForce(
                f"its nonbonded method is {_NONBONDED_METHODS.get(method, method)} "
                "(NoCutoff and CutoffNonPeriodic compile)"
            )
        if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
            raise UnsupportedForce("it has parameter offsets (global parameters)")
        self.cutoff = method == openmm.NonbondedForce.CutoffNonPeriodic
        self.r_cut = _md(force.getCutoffDistance())
        self.switch = self.cutoff and bool(force.getUseSwitchingFunction())
        self.r_switch = _md(force.getSwitchingDistance())
        eps_rf = float(force.getReactionFieldDielectric())
        self.k_rf = self.r_cut**-3 * (eps_rf - 1.0) / (2.0 * eps_rf + 1.0)
        self.c_rf = (1.0 / self.r_cut) * (3.0 * eps_rf) / (2.0 * eps_rf + 1.0)
        if self.switch and not 0.0 <= self.r_switch < self.r_cut:
            raise UnsupportedForce(
                f"its switching distance {self.r_switch} nm is not in [0, cutoff {self.r_cut} nm)"
            )
        n = force.getNumParticles()
        params = np.array(
            [[_md(v) for v in force.getParticleParameters(p)] for p in range(n)], dtype=np.float64
        ).reshape(n, 3)
        charge, sigma, epsilon = params[:, 0], params[:, 1], params[:, 2]

        # Regular pairs: all i < j minus every exception pair.
        excluded = np.zeros((n, n), dtype=bool)
        exc_i, exc_j, exc_q, exc_s, exc_e = [], [], [], [], []
        for e in range(force.getNumExceptions()):
            p1, p2, q, s, eps = force.getExceptionParameters(e)
            excluded[p1, p2] = excluded[p2, p1] = True
            q, s, eps = _md(q), _md(s), _md(eps)
            if q != 0.0 or eps != 0.0:
                exc_i.append(p1)
                exc_j.append(p2)
                exc_q.append(q)
                exc_s.append(s)
                exc_e.append(eps)
        pi, pj = np.triu_indices(n, k=1)
        keep = ~excluded[pi, pj]
        pi, pj = pi[keep], pj[keep]
        pair_q = charge[pi] * charge[pj]
        pair_s = 0.5 * (sigma[pi] + sigma[pj])
        pair_e = np.sqrt(epsilon[pi] * epsilon[pj])
        exc_q_arr = np.asarray(exc_q, dtype=np.float64)
        exc_s_arr = np.asarray(exc_s, dtype=np.float64)
        exc_e_arr = np.asarray(exc_e, dtype=np.float64)
        exc_i_arr = np.asarray(exc_i, dtype=np.int64)
        exc_j_arr = np.asarray(exc_j, dtype=np.int64)
        if not self.cutoff:  # one list: regular pairs and exceptions have the same form
            pi, pj = np.concatenate([pi, exc_i_arr]), np.concatenate([pj, exc_j_arr])
            pair_q = np.concatenate([pair_q, exc_q_arr])
            pair_s = np.concatenate([pair_s, exc_s_arr])
            pair_e = np.concatenate([pair_e, exc_e_arr])
            exc_i_arr = exc_j_arr = np.zeros(0, dtype=np.int64)
            exc_q_arr = exc_s_arr = exc_e_arr = np.zeros(0)
        active = (pair_q != 0.0) | (pair_e != 0.0)
        s6 = pair_s[active] ** 6
        e_s6 = exc_s_arr**6
        self._register(
            i=pi[active],
            j=pj[active],
            coulomb=ONE_4PI_EPS0 * pair_q[active],
            a12=4.0 * pair_e[active] * s6 * s6,
            a6=4.0 * pair_e[active] * s6,
            ei=exc_i_arr,
            ej=exc_j_arr,
            e_coulomb=ONE_4PI_EPS0 * exc_q_arr,
            e_a12=4.0 * exc_e_arr * e_s6 * e_s6,
            e_a6=4.0 * exc_e_arr * e_s6,
        )

    @property
    def n_interactions(self) -> int:
        """Number of atom pairs evaluated (regular pairs and exceptions)."""
        return int(self.i.shape[0] + self.ei.shape[0])

    def batch_chunk(self, batch: int) -> int:
        """The whole batch while its [pairs, batch] arrays are at most `_WHOLE_BATCH_ELEMENTS`
        (one pass over the pairs: chunks only cost; alanine dipeptide at B = 1,024 was 20 %
        slower compiled in `pair_chunk` chunks), else `pair_chunk` chunks that stay in cache
        (the 336-atom peptide of tests/test_peptide_maps.py, 56k pairs, 64 configurations in
        float64: its reference Hessian about 2x faster)."""
        if self.n_interactions * batch <= _WHOLE_BATCH_ELEMENTS:
            return batch
        return pair_chunk(self.n_interactions, batch)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        return energy_with_gradient(xt, self, self._cast(xt))

    @staticmethod
    def _plain(
        d: torch.Tensor, coulomb: torch.Tensor, a12: torch.Tensor, a6: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Coulomb + Lennard-Jones of pairs with displacements d [3, P, B]: the energy per pair
        [P, B] and (dE/dr)/r [P, B] if `need_grad`."""
        inv_r2 = 1.0 / (d * d).sum(0)
        inv_r6 = inv_r2 * inv_r2 * inv_r2
        coul = coulomb[:, None] * inv_r2.sqrt()
        lj12 = a12[:, None] * inv_r6 * inv_r6
        lj6 = a6[:, None] * inv_r6
        energy = coul + lj12 - lj6
        if not need_grad:
            return energy, None
        return energy, -(coul + 12.0 * lj12 - 6.0 * lj6) * inv_r2

    def _evaluate(
        self, xt: torch.Tensor, tensors: tuple[torch.Tensor, ...], need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Energy [B] and, if `need_grad`, its gradient [3, n_atoms, B] with respect to xt."""
        i, j, ei, ej, coulomb, a12, a6, e_coulomb, e_a12, e_a6 = tensors
        d = _displacement(xt, i, j)
        if not self.cutoff:
            pair, slope = self._plain(d, coulomb, a12, a6, need_grad)
            if slope is None:
                return pair.sum(0), None
            return pair.sum(0), pair_gradient(xt, i, j, d * slope)
        r2 = (d * d).sum(0)
        inside = r2 <= self.r_cut * self.r_cut
        # Pairs beyond the cutoff get a harmless r^2 so that no inf/NaN appears.
        r2 = torch.where(inside, r2, torch.ones_like(r2))
        inv_r2 = 1.0 / r2
        inv_r = inv_r2.sqrt()
        inv_r6 = inv_r2 * inv_r2 * inv_r2
        lj12 = a12[:, None] * inv_r6 * inv_r6
        lj6 = a6[:, None] * inv_r6
        lj = lj12 - lj6
        lj_slope = -(12.0 * lj12 - 6.0 * lj6) * inv_r2  # (dLJ/dr)/r
        if self.switch:
            r = r2 * inv_r
            width = self.r_cut - self.r_switch
            t = ((r - self.r_switch) / width).clamp(min=0.0)
            switch = 1.0 + t * t * t * (-10.0 + t * (15.0 - t * 6.0))
            d_switch = t * t * (-30.0 + t * (60.0 - t * 30.0)) / width
            lj_slope = lj_slope * switch + lj * d_switch * inv_r
            lj = lj * switch
        q = coulomb[:, None]
        pair = torch.where(inside, lj + q * (inv_r + self.k_rf * r2 - self.c_rf), 0.0)
        energy = pair.sum(0)
        de = _displacement(xt, ei, ej)
        exc, exc_slope = self._plain(de, e_coulomb, e_a12, e_a6, need_grad)
        energy = energy + exc.sum(0)
        if exc_slope is None:
            return energy, None
        slope = torch.where(inside, lj_slope + q * (2.0 * self.k_rf - inv_r * inv_r2), 0.0)
        per_pair = d * slope
        per_exc = de * exc_slope
        grad = (
            torch.zeros_like(xt)
            .index_add(1, i, per_pair)
            .index_add(1, j, -per_pair)
            .index_add(1, ei, per_exc)
            .index_add(1, ej, -per_exc)
        )
        return energy, grad
