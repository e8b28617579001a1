"""ccg.free_energy.compare against exact answers: histogram free energies on the grid of
`ccg free-energy`, the RMSE after the best shift, the KL divergence and state populations."""

import math

import numpy as np
import pytest

import ccg


def test_histogram_free_energy_counts_and_grid():
    centers = ccg.grid_centers(4).numpy()          # -3/4 pi, -1/4 pi, 1/4 pi, 3/4 pi
    samples = np.repeat(centers[:3], [1, 2, 4])[:, None]
    f, counts = ccg.histogram_free_energy(samples, 4)
    assert counts.tolist() == [1, 2, 4, 0]
    np.testing.assert_allclose(f[:3], [math.log(4), math.log(2), 0.0], atol=1e-12)
    assert f[3] == np.inf
    # a pseudo-count: the empty bin gets the free energy of half a count
    f, counts = ccg.histogram_free_energy(samples, 4, pseudo_count=0.5)
    assert counts[3] == 0
    np.testing.assert_allclose(f, [math.log(4), math.log(2), 0.0, math.log(8)], atol=1e-12)


def test_histogram_free_energy_2d_wraps_and_uses_ij_order():
    # (phi, psi) = (bin 0, bin 2) twice, and a phi beyond +pi that wraps into bin 0
    centers = ccg.grid_centers(3).numpy()
    samples = np.array([[centers[0], centers[2]], [centers[0], centers[2]],
                        [centers[0] + 2 * math.pi, centers[1]]])
    f, counts = ccg.histogram_free_energy(samples, 3)
    assert f.shape == counts.shape == (3, 3)
    assert counts[0, 2] == 2 and counts[0, 1] == 1 and counts.sum() == 3
    np.testing.assert_allclose(f[0, 1], math.log(2), atol=1e-12)
    assert f[0, 2] == 0.0 and np.isinf(f[1, 1])


@pytest.mark.parametrize("bad, match", [
    (np.zeros(5), "shape"), (np.array([[0.0], [np.nan]]), "non-finite")])
def test_histogram_free_energy_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        ccg.histogram_free_energy(bad, 4)
    with pytest.raises(ValueError, match="n_grid"):
        ccg.histogram_free_energy(np.zeros((3, 1)), 1)


def test_rmse_after_shift_is_blind_to_a_constant():
    f = np.array([[0.0, 1.0], [2.0, 3.5]])
    assert ccg.rmse_after_shift(f + 3.0, f) == pytest.approx(0.0, abs=1e-12)
    # a +-1 pattern around any shift has RMSE exactly 1
    pattern = np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert ccg.rmse_after_shift(f + pattern + 7.0, f) == pytest.approx(1.0)


def test_rmse_after_shift_mask_and_non_finite_bins():
    ref = np.array([0.0, 1.0, 5.0, np.inf])
    model = np.array([0.5, 1.5, 0.0, 2.0])
    # only the two bins below 4 kT count (the inf bin and the 5 kT bin are out): equal after
    # a shift of 0.5
    assert ccg.rmse_after_shift(model, ref, ref < 4) == pytest.approx(0.0, abs=1e-12)
    # without a mask the non-finite bin is still left out: bins 0, 1, 2 with differences
    # 0.5, 0.5, -5 -> shifted by their mean -4/3: sqrt(mean of 11/6, 11/6, 11/3 squared)
    expected = math.sqrt(((11 / 6) ** 2 * 2 + (11 / 3) ** 2) / 3)
    assert ccg.rmse_after_shift(model, ref) == pytest.approx(expected)
    with pytest.raises(ValueError, match="No bin"):
        ccg.rmse_after_shift(model, ref, ref < -1)
    with pytest.raises(ValueError, match="same grid"):
        ccg.rmse_after_shift(model, ref[:3])


def test_shifted_difference_has_mean_zero_and_nan_outside():
    a, b = np.array([1.0, 2.0, 6.0]), np.array([0.0, 0.0, 0.0])
    diff = ccg.shifted_difference(a, b, np.array([True, True, False]))
    np.testing.assert_allclose(diff[:2], [-0.5, 0.5])
    assert np.isnan(diff[2])


def test_kl_divergence_closed_form():
    # p = (1/2, 1/2); q from F = (0, log 3): q = (3/4, 1/4)
    ref, model = np.array([0.0, 0.0]), np.array([0.0, math.log(3)])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert ccg.kl_divergence(ref, model) == pytest.approx(expected)
    assert ccg.kl_divergence(ref + 4.0, model - 2.0) == pytest.approx(expected)
    assert ccg.kl_divergence(model, model) == pytest.approx(0.0, abs=1e-15)
    # a bin empty in the reference contributes nothing; one the model cannot reach is inf
    assert ccg.kl_divergence(np.array([0.0, 0.0, np.inf]),
                             np.array([0.0, math.log(3), 0.0])) > expected
    assert ccg.kl_divergence(np.array([0.0, np.inf]),
                             np.array([0.0, 9.0])) == pytest.approx(math.log1p(math.exp(-9)))
    assert ccg.kl_divergence(np.array([0.0, 0.0]), np.array([0.0, np.inf])) == np.inf


def test_state_populations_closed_form():
    f = np.array([[0.0, math.log(3)], [np.inf, math.log(3)]])   # weights 1, 1/3, 0, 1/3
    left = np.array([[True, True], [False, False]])
    pops = ccg.state_populations(f + 10.0, {"left": left, "right": ~left,
                                            "anti": np.fliplr(np.eye(2, dtype=bool))})
    assert pops["left"] == pytest.approx(0.8)
    assert pops["right"] == pytest.approx(0.2)
    assert pops["anti"] == pytest.approx(0.2)
    assert pops["left"] + pops["right"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same grid"):
        ccg.state_populations(f, {"bad": np.ones(3, bool)})


def test_histogram_of_boltzmann_samples_matches_the_exact_surface():
    """End to end: samples of a known F(phi) on the grid reproduce it within counting noise."""
    n_grid = 12
    centers = ccg.grid_centers(n_grid).numpy()
    f_exact = 2.0 * (1 - np.cos(centers))                  # in kT, minimum at phi = 0
    p = np.exp(-f_exact) / np.exp(-f_exact).sum()
    rng = np.random.default_rng(0)
    bins = rng.choice(n_grid, size=400_000, p=p)
    phi = centers[bins] + rng.uniform(-0.5, 0.5, bins.shape) * 2 * math.pi / n_grid
    f, _ = ccg.histogram_free_energy(phi[:, None], n_grid)
    assert ccg.rmse_after_shift(f, f_exact, f_exact < 4) < 0.02
    assert ccg.kl_divergence(f_exact, f) < 1e-3
