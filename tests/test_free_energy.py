"""Importance-sampling estimators against exact answers (analytic systems).

A conditional flow is trained briefly on the harmonic-fast-modes system over 300-600 K; its
pointwise estimates are compared with the closed forms: beta F within 0.02, and <U>_z,
Var_z(U), the mean force and the thermal response within 3 standard errors (the z-scores of
all points pooled). The identity d(beta F)/d beta = <U>_z is checked by finite differences in
beta of the estimated beta F.
"""

import math

import pytest
import torch

from ccg import RunConfig, build_model, build_proposal
from ccg.constants import KB_KJMOL_PER_K
from ccg.free_energy.estimators import estimate_free_energy
from ccg.free_energy.surface import free_energy_surface, grid_centers, grid_points
from ccg.training.losses import ReverseKL
from ccg.training.trainer import Trainer

Z = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64)[:, None]


@pytest.fixture(scope="module")
def harmonic_model(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = RunConfig.from_dict({
        "system": {"name": "harmonic"}, "map": {"cg": "split"},
        "flow": {"n_layers": 4, "hidden": 32},
        "train": {"steps": 400, "n_z": 64, "samples_per_z": 8, "lr": 5e-3, "dtype": "float64"},
    }).validate()
    torch.manual_seed(0)
    model = build_model(config)
    Trainer(model, ReverseKL(model), build_proposal(config, model), config.train,
            tmp_path_factory.mktemp("harmonic"), progress=False).run()
    model.flow.eval()
    yield model
    torch.set_num_threads(threads)


@pytest.mark.parametrize("temperature", [300.0, 450.0, 600.0])
def test_estimates_match_exact_answers(harmonic_model, temperature):
    system = harmonic_model.system
    gen = torch.Generator().manual_seed(int(temperature))
    est = estimate_free_energy(harmonic_model, Z, temperature, n_samples=4000, mean_force=True,
                               generator=gen)
    beta = 1.0 / (KB_KJMOL_PER_K * temperature)
    exact_beta_f = beta * system.free_energy(Z, temperature)
    assert (est.beta_f - exact_beta_f).abs().max() < 0.02
    assert (est.bound - exact_beta_f).min() > -0.01  # the variational bound is an upper bound
    assert est.ess.min() > 0.5
    pairs = [
        (est.mean_energy_kjmol, est.mean_energy_err, system.mean_energy(Z, temperature)),
        (est.energy_var, est.energy_var_err, system.energy_variance(Z, temperature)),
        (est.mean_force, est.mean_force_err, system.mean_force(Z, temperature)),
        (est.thermal_response, est.thermal_response_err,
         system.thermal_response(Z, temperature)),
    ]
    for value, err, exact in pairs:
        z_scores = (value - exact) / err
        assert z_scores.abs().max() < 3.5, z_scores
        assert (err > 0).all()


def test_dbeta_f_dbeta_equals_mean_energy(harmonic_model):
    """Finite differences of the estimated beta F in beta reproduce <U>_z (and the exact one)."""
    t0, dt = 450.0, 15.0
    beta = lambda t: 1.0 / (KB_KJMOL_PER_K * t)  # noqa: E731
    n = 20000
    # common random numbers: the same seed at both temperatures
    plus = estimate_free_energy(harmonic_model, Z, t0 - dt, n_samples=n,
                                generator=torch.Generator().manual_seed(7))
    minus = estimate_free_energy(harmonic_model, Z, t0 + dt, n_samples=n,
                                 generator=torch.Generator().manual_seed(7))
    slope = (plus.beta_f - minus.beta_f) / (beta(t0 - dt) - beta(t0 + dt))
    exact = harmonic_model.system.mean_energy(Z, t0)
    assert (slope - exact).abs().max() < 0.15  # kJ/mol; <U> is ~2.5-7.5 kJ/mol here


def test_temperature_outside_range_warns_and_bad_input_raises(harmonic_model):
    with pytest.warns(UserWarning, match="outside the model's training range"):
        estimate_free_energy(harmonic_model, Z, 900.0, n_samples=8)
    with pytest.raises(ValueError, match="> 0 K"):
        estimate_free_energy(harmonic_model, Z, 0.0)
    with pytest.raises(ValueError, match="n_samples"):
        estimate_free_energy(harmonic_model, Z, 300.0, n_samples=1)
    with pytest.raises(ValueError, match=r"shape \[B, 1\]"):
        estimate_free_energy(harmonic_model, torch.zeros(3, 2, dtype=torch.float64), 300.0)
    with pytest.raises(ValueError, match="torsion CG map"):
        free_energy_surface(harmonic_model, 300.0, n_grid=4)


def test_grid_centers_and_order():
    centers = grid_centers(4)
    expected = [-math.pi + (i + 0.5) * 2 * math.pi / 4 for i in range(4)]
    torch.testing.assert_close(centers, torch.tensor(expected, dtype=torch.float64))
    points = grid_points(3, 2)
    assert points.shape == (9, 2)
    # 'ij' order: the last axis runs fastest
    torch.testing.assert_close(points[1], torch.stack([grid_centers(3)[0], grid_centers(3)[1]]))
    with pytest.raises(ValueError, match="grid size"):
        grid_centers(1)


def test_free_energy_command_on_a_torsion_model(tmp_path, capsys):
    """`ccg free-energy` writes the documented npz layout and a plot, atomically; its progress
    bar goes to stderr and `--no-progress` silences it."""
    import numpy as np

    from ccg.cli import main
    from ccg.io.model_file import save_model

    config = RunConfig()
    config.flow.n_layers, config.flow.hidden = 2, 16
    config.train.steps = 1
    torch.manual_seed(0)
    model = build_model(config)
    save_model(tmp_path / "model.pt", model)
    out, png = tmp_path / "fes.npz", tmp_path / "fes.png"
    code = main(["free-energy", str(tmp_path / "model.pt"), "--temperature", "300", "--grid", "4",
                 "--samples", "8", "--out", str(out), "--plot", str(png)])
    assert code == 0
    data = np.load(out)
    assert data["F_kT"].shape == (4, 4) and data["F_kT"].min() == 0.0
    assert data["grid"].shape == (2, 4) and data["mean_force"].shape == (4, 4, 2)
    for key in ("F_kT_err", "ess", "mean_energy_kjmol"):
        assert data[key].shape == (4, 4)
    np.testing.assert_allclose(data["grid"][0], grid_centers(4).numpy())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fes.npz", "fes.png", "model.pt"]
    assert "%|" in capsys.readouterr().err
    assert main(["free-energy", str(tmp_path / "model.pt"), "--temperature", "300", "--grid",
                 "4", "--samples", "8", "--out", str(out), "--no-progress"]) == 2
    assert "exists already" in capsys.readouterr().err  # a finished result is not replaced
    assert main(["free-energy", str(tmp_path / "model.pt"), "--temperature", "300", "--grid",
                 "4", "--samples", "8", "--out", str(out), "--no-progress",
                 "--overwrite"]) == 0
    assert "%|" not in capsys.readouterr().err
    missing = main(["free-energy", str(tmp_path / "model.pt"), "--temperature", "300",
                    "--out", str(tmp_path / "nope" / "fes.npz")])
    assert missing == 2
    assert main(["free-energy", str(tmp_path / "model.pt"), "--temperature", "-5",
                 "--out", str(tmp_path / "x.npz")]) == 2
