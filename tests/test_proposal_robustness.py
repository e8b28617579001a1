"""The product proposal's histograms survive bad observations: z whose every r sample is a
clash (l ~ -10^13, which made the band's log T slope garbage and collapsed the band for good:
found in the 10-D Ace-(Ala)5-Nme runs, where one band held a cell e^36,000 above the rest), a
slope fitted to two rows at nearly one temperature, and a single outlier estimate (capped at
`MAX_JUMP` and forgotten in ~ MAX_JUMP / -log(decay) steps)."""

from __future__ import annotations

import math

import numpy as np
import torch

import ccg
from ccg.training.product_proposal import MAX_JUMP

KAPPA = 2.0
N_BINS = 12


def ell(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """-beta F(z, T) + const(T): independent von Mises wells and an entropy-like slope in log T
    (300 per unit log T, as large as a small peptide's)."""
    return KAPPA * (torch.cos(z[:, 0]) + torch.cos(z[:, 1])) + 300.0 * torch.log(t / 450.0)


def exact_marginal() -> np.ndarray:
    """beta F of one torsion per bin, lowest 0 (midpoint rule, 32 points per bin)."""
    x = -math.pi + (np.arange(N_BINS * 32) + 0.5) * 2 * math.pi / (N_BINS * 32)
    f = -np.log(np.exp(KAPPA * np.cos(x)).reshape(N_BINS, 32).mean(1))
    return f - f.min()


def train(prop, steps: int, g: torch.Generator, outlier_at: int | None = None) -> None:
    for step in range(steps):
        t = 300.0 + 300.0 * torch.rand(256, generator=g, dtype=torch.float64)
        z = prop.sample(256, g, torch.float64, "cpu", t)
        log_w = ell(z, t)
        if step == outlier_at:  # one absurd estimate in the hottest band
            log_w[int(torch.argmax(t))] = 36_000.0
        prop.observe(z, t, log_w[:, None])


def band_errors(prop) -> np.ndarray:
    f = prop.marginal_free_energy()[:, 0].numpy()
    f = f - f.min(axis=1, keepdims=True)
    return np.sqrt(((f - exact_marginal()) ** 2).mean(axis=1))  # RMSE per band (kT)


def new_proposal():
    return ccg.ProductTorusProposal(2, 300.0, 600.0, n_bins=N_BINS, n_bands=2, warmup=0,
                                    decay=0.9, sharpness=1.0)


def test_clash_estimates_do_not_tilt_the_slope():
    prop = new_proposal()
    g = torch.Generator().manual_seed(3)
    for step in range(300):
        t = 300.0 + 300.0 * torch.rand(256, generator=g, dtype=torch.float64)
        z = prop.sample(256, g, torch.float64, "cpu", t)
        log_w = ell(z, t)
        if step < 50:
            log_w[:3] = -1e13  # z where every r sample is a clash of 10^13 k_BT
        prop.observe(z, t, log_w[:, None])
    assert (band_errors(prop) < 0.3).all(), band_errors(prop)
    assert prop.n_capped == 0


def test_a_slope_from_two_rows_at_one_temperature_does_not_collapse_a_band():
    prop = new_proposal()
    g = torch.Generator().manual_seed(0)
    # the first observation of the hot band: two rows 0.5 K apart, one of them a clash
    z = torch.tensor([[0.1, 0.2], [2.0, -2.5]], dtype=torch.float64)
    t = torch.tensor([500.0, 500.5], dtype=torch.float64)
    prop.observe(z, t, (ell(z, t) - torch.tensor([0.0, 500.0], dtype=torch.float64))[:, None])
    train(prop, 300, g)
    assert (band_errors(prop) < 0.3).all(), band_errors(prop)
    assert prop.n_capped == 0


def test_one_outlier_estimate_is_capped_and_forgotten():
    prop = new_proposal()
    g = torch.Generator().manual_seed(1)
    train(prop, 100, g)
    before = band_errors(prop)
    train(prop, 1, g, outlier_at=0)
    assert prop.n_capped == 1
    assert band_errors(prop)[0] > 1.0  # the outlier's cell dominates the hot band for now
    train(prop, int(2 * MAX_JUMP / -math.log(0.9)), g)
    assert (band_errors(prop) < 0.3).all(), (before, band_errors(prop))


def test_the_cap_count_round_trips_and_old_states_load():
    prop = new_proposal()
    g = torch.Generator().manual_seed(2)
    train(prop, 20, g)
    train(prop, 1, g, outlier_at=0)
    state = prop.state_dict()
    again = new_proposal()
    again.load_state_dict(state)
    assert again.n_capped == 1
    del state["n_capped"]  # a state saved before the cap existed
    again.load_state_dict(state)
    assert again.n_capped == 0
