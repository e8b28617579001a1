"""The held-out criterion of the cycle on an exact answer: noisy observables of the double well
(exact F, mean force and <U> plus Gaussian noise of known standard error). A well-fitted
F_theta predicts fresh held-out points within their noise (reduced chi-square ~1) and its
predicted spread is calibrated (~68 % within one sigma); an under-fitted one is not declared
converged."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ccg import FitConfig, FreeEnergyModel, ObservableSet, fit_free_energy_model
from ccg.constants import KB_KJMOL_PER_K
from ccg.free_energy.validation import (
    HeldOutScore,
    held_out_scores,
    predicts_within_noise,
    worst_chi2,
)
from ccg.mapping import CoordinateSplitMap
from ccg.systems import DoubleWell2D

TEMPERATURES = (300.0, 450.0, 600.0)
SE_F, SE_FORCE_KT, SE_U_KT = 0.05, 0.3, 0.3  # reduced units: beta F, beta grad F, beta <U>


def _noisy(n: int, seed: int) -> ObservableSet:
    system = DoubleWell2D()
    g = torch.Generator().manual_seed(seed)
    parts = []
    for t in TEMPERATURES:
        z = -3.0 + 6.0 * torch.rand(n, 1, generator=g, dtype=torch.float64)
        obs = system.observables(z, t)
        kt = KB_KJMOL_PER_K * t
        noise = torch.randn(n, 3, generator=g, dtype=torch.float64)
        parts.append(ObservableSet(
            z=z, temperature_k=torch.full((n,), t, dtype=torch.float64),
            beta_f=obs.free_energy / kt + SE_F * noise[:, 0],
            beta_f_err=torch.full((n,), SE_F, dtype=torch.float64),
            mean_force=obs.mean_force + kt * SE_FORCE_KT * noise[:, 1:2],
            mean_force_err=torch.full((n, 1), kt * SE_FORCE_KT, dtype=torch.float64),
            mean_energy=obs.mean_energy + kt * SE_U_KT * noise[:, 2],
            mean_energy_err=torch.full((n,), kt * SE_U_KT, dtype=torch.float64),
            ess=torch.ones(n, dtype=torch.float64)))
    return ObservableSet.cat(parts)


def _fitted(steps: int) -> FreeEnergyModel:
    torch.manual_seed(0)
    model = FreeEnergyModel(CoordinateSplitMap(2, 1), t_ref=300.0, t_range=(300.0, 600.0),
                            hidden=32, n_layers=2, n_members=4).double()
    fit_free_energy_model(model, _noisy(200, seed=1),
                          FitConfig(steps=steps, lr=1e-2, floors=(0.0, 0.0, 0.0)))
    return model


@pytest.fixture(scope="module")
def held_out() -> ObservableSet:
    return _noisy(300, seed=2)  # fresh points and fresh noise: never seen by the fit


def test_a_well_fitted_model_predicts_within_the_noise_and_is_calibrated(held_out):
    scores = held_out_scores(_fitted(1500), held_out)
    report = [(s.temperature_k, round(s.chi2_values, 2), round(s.chi2_forces, 2),
               round(s.chi2_energies, 2), round(s.within_1, 2)) for s in scores]
    assert [s.temperature_k for s in scores] == list(TEMPERATURES)
    for s in scores:
        assert 0.7 < s.chi2_values < 1.5 and 0.7 < s.chi2_forces < 1.5, report
        assert 0.7 < s.chi2_energies < 1.5, report
        assert abs(s.within_1 - 0.683) < 0.1 and abs(s.within_2 - 0.954) < 0.06, report
        assert s.rms_kt < 2 * SE_F, report
    assert predicts_within_noise(scores, chi2_max=1.5)


def test_an_under_fitted_model_is_not_declared_converged(held_out):
    scores = held_out_scores(_fitted(20), held_out)
    assert not predicts_within_noise(scores, chi2_max=1.5)
    assert max(s.chi2_values for s in scores) > 5


def test_missing_temperatures_and_low_ess_points_count_as_not_converged(held_out):
    low = held_out.select(torch.ones(len(held_out), dtype=torch.bool))
    low.ess[:] = 0.01  # no trustworthy point
    scores = held_out_scores(_fitted(20), low)
    assert all(s.n_points == 0 and math.isnan(s.chi2_values) for s in scores)
    assert not predicts_within_noise(scores, chi2_max=1.5)
    assert not predicts_within_noise([], chi2_max=1.5)


def test_the_criterion_includes_the_energies():
    good = HeldOutScore(300.0, 100, 1.0, 1.1, 1.2, 0.05, 0.3, 0.68, 0.95)
    assert predicts_within_noise([good], chi2_max=1.5) and worst_chi2(good) == 1.2
    bad_energies = dataclasses.replace(good, chi2_energies=1.73)
    assert not predicts_within_noise([good, bad_energies], chi2_max=1.5)
    assert worst_chi2(dataclasses.replace(good, chi2_forces=math.nan)) == math.inf
