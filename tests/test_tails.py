"""The Pareto tail diagnostic of importance weights (`ccg.free_energy.tails.pareto_k`) against
weights whose tail shape is known exactly: generalized Pareto draws of shape xi, and
log-normal weights (no power tail: k well under 1/2 for a narrow one)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccg.free_energy.tails import pareto_k, tail_size


def gpd_log_weights(xi: float, n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    return np.log(((1.0 - u) ** -xi - 1.0) / xi)  # GPD(shape xi, scale 1) by inversion


@pytest.mark.parametrize("xi", [0.2, 0.7, 1.0])
def test_recovers_the_shape_of_a_pareto_tail(xi):
    ks = np.array([pareto_k(gpd_log_weights(xi, 50_000, seed)) for seed in range(10)])
    assert abs(ks.mean() - xi) < 0.05, ks  # measured bias under 0.04
    assert np.abs(ks - xi).max() < 0.25 and ks.std() < 0.1, ks


def test_light_tails_offsets_and_zero_weights():
    rng = np.random.default_rng(1)
    narrow = rng.normal(0.0, 0.5, 50_000)
    assert pareto_k(narrow) < 0.2
    assert pareto_k(narrow + 1234.5) == pytest.approx(pareto_k(narrow), abs=1e-9)
    bounded = np.log(rng.random(50_000))  # uniform weights: shape -1
    assert pareto_k(bounded) < -0.5
    with_zeros = np.concatenate([narrow, np.full(100, -np.inf)])
    assert math.isfinite(pareto_k(with_zeros))
    assert math.isnan(pareto_k(narrow[:19])) and math.isnan(pareto_k(np.zeros(100)))
    assert tail_size(100) == 20 and tail_size(1_000_000) == 3000
