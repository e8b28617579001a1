"""How well a CG model F_theta(z, T) predicts importance-sampling estimates it was not fitted to.

Held-out estimates (values beta F_hat, mean forces, <U>_z with their standard errors) are the
test: an F_theta as accurate as the flow predicts them within their own statistical error, so
each standardized residual is ~N(0, 1) and the reduced chi-square is ~1. Per temperature:

    values    r_i = (beta F_theta - beta F_hat)_i - c, c the weighted mean (F is defined up to a
              constant per temperature);  chi2 = sum r_i^2 / s_i^2 / (n - 1),  s_i = SE_i
    forces    beta (grad F_theta - grad F_hat) / (beta SE_grad), every CG component
    energies  beta (<U>_theta - <U>_hat) / (beta SE_U)

and the RMS of r in k_B T. A change between two fits is no error estimate (two fits can agree
and both be off); this is. The ensemble's spread sigma_i is calibrated when the residuals fall
within sqrt(sigma_i^2 + SE_i^2) about 68 % of the time (within twice that, 95 %).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.free_energy.cg_model import FreeEnergyModel
from ccg.free_energy.fit import ObservableSet, usable


@dataclass
class HeldOutScore:
    """The held-out error of F_theta at one temperature (see the module docstring).

    Attributes:
        temperature_k: T in K.
        n_points: held-out points used (finite, ESS >= min_ess).
        chi2_values, chi2_forces, chi2_energies: reduced chi-squares (~1 at the noise level).
        rms_kt: RMS of the shifted value residuals, k_B T.
        rms_force_kt: RMS of the force residuals, k_B T per CG unit.
        within_1, within_2: fractions of value residuals within 1 and 2 predicted standard
            deviations sqrt(spread^2 + SE^2) (~0.68 and ~0.95 when calibrated).
    """

    temperature_k: float
    n_points: int
    chi2_values: float
    chi2_forces: float
    chi2_energies: float
    rms_kt: float
    rms_force_kt: float
    within_1: float
    within_2: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def held_out_scores(model: FreeEnergyModel, data: ObservableSet, *,
                    min_ess: float = 0.05) -> list[HeldOutScore]:
    """Score `model` on `data` (estimates it was not fitted to), one row per temperature.

    Points with a non-finite estimate or ESS < `min_ess` are left out (their standard errors
    are not trustworthy); a temperature with fewer than 3 usable points gets NaN scores.
    """
    keep = usable(data, min_ess)
    rows = []
    for temperature in torch.unique(data.temperature_k).tolist():
        sel = keep & (data.temperature_k == temperature)
        part = data.select(sel)
        n = len(part)
        if n < 3:
            rows.append(HeldOutScore(temperature, n, *([math.nan] * 7)))
            continue
        z = part.z.to(model.dtype)
        obs = model.observables(z, temperature)
        beta = 1.0 / (KB_KJMOL_PER_K * temperature)
        err = part.beta_f_err.clamp_min(1e-12)
        weight = 1.0 / err**2
        residual = obs["beta_f"].detach().double() - part.beta_f
        residual = residual - (weight * residual).sum() / weight.sum()
        chi2_values = float((weight * residual**2).sum() / (n - 1))
        force_res = beta * (obs["mean_force"].detach().double() - part.mean_force)
        force_err = (beta * part.mean_force_err).clamp_min(1e-12)
        energy_res = beta * (obs["mean_energy_kjmol"].detach().double() - part.mean_energy)
        energy_err = (beta * part.mean_energy_err).clamp_min(1e-12)
        sigma = torch.sqrt(obs["beta_f_std"].detach().double() ** 2 + err**2)
        rows.append(HeldOutScore(
            temperature_k=float(temperature), n_points=n, chi2_values=chi2_values,
            chi2_forces=float(((force_res / force_err) ** 2).mean()),
            chi2_energies=float(((energy_res / energy_err) ** 2).mean()),
            rms_kt=float(residual.pow(2).mean().sqrt()),
            rms_force_kt=float(force_res.pow(2).mean().sqrt()),
            within_1=float((residual.abs() <= sigma).double().mean()),
            within_2=float((residual.abs() <= 2 * sigma).double().mean()),
        ))
    return rows


def predicts_within_noise(scores: list[HeldOutScore], chi2_max: float) -> bool:
    """Whether every temperature's values, mean forces and <U>_z have a reduced chi-square
    <= chi2_max (False if any score is missing or not finite)."""
    return bool(scores) and all(worst_chi2(s) <= chi2_max for s in scores)


def worst_chi2(score: HeldOutScore) -> float:
    """The largest of a score's three reduced chi-squares (inf if any is not finite)."""
    values = (score.chi2_values, score.chi2_forces, score.chi2_energies)
    return max(values) if all(math.isfinite(v) for v in values) else math.inf
