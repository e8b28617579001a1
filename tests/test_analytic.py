"""Analytic systems: closed forms against independent quadrature, identities, samplers, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ccg.constants import KB_KJMOL_PER_K
from ccg.systems import (
    AnalyticSystem,
    DoubleWell2D,
    HarmonicFastModes,
    MuellerBrown,
    make_analytic,
)
from ccg.systems.analytic import analytic_names

Z_POINTS = (-1.3, -0.5, 0.1, 0.6, 1.05)
TEMPERATURES = (300.0, 600.0)

# Müller–Brown parameters, written out again so the reference is independent of the module.
MB_A = np.array([-200.0, -100.0, -170.0, 15.0])
MB_a = np.array([-1.0, -1.0, -6.5, 0.7])
MB_b = np.array([0.0, 0.0, 11.0, 0.6])
MB_c = np.array([-10.0, -10.0, -6.5, 0.7])
MB_X0 = np.array([1.0, 0.0, -0.5, -1.0])
MB_Y0 = np.array([0.0, 0.5, 1.5, 1.0])


def mb_terms(x, y, scale=0.1):
    dx = np.asarray(x)[..., None] - MB_X0
    dy = np.asarray(y)[..., None] - MB_Y0
    return dx, dy, scale * MB_A * np.exp(MB_a * dx**2 + MB_b * dx * dy + MB_c * dy**2)


def mb_energy(x, y):
    return mb_terms(x, y)[2].sum(-1)


def mb_grad(x, y):
    dx, dy, t = mb_terms(x, y)
    return (t * (2 * MB_a * dx + MB_b * dy)).sum(-1), (t * (MB_b * dx + 2 * MB_c * dy)).sum(-1)


def k_perp(z, k_fast=25.0, a=1.0):
    return k_fast * np.exp(a * np.sin(z))


def reference_1d(u_of_r, g_of_r, beta, lo=-np.inf, hi=np.inf, center=0.0):
    """log Z, <U>, Var U, <g>, Cov(U, g) over one coordinate by adaptive quadrature (float64)."""
    u0 = u_of_r(center)
    opts = {"epsabs": 1e-13, "epsrel": 1e-12, "limit": 500}
    if np.isfinite(lo):
        opts["points"] = [center]

    def avg(f):
        return integrate.quad(lambda r: f(r) * np.exp(-beta * (u_of_r(r) - u0)), lo, hi, **opts)[0]

    z = avg(lambda r: 1.0)
    mu = avg(u_of_r) / z
    mg = avg(g_of_r) / z
    var = avg(lambda r: (u_of_r(r) - mu) ** 2) / z
    cov = avg(lambda r: (u_of_r(r) - mu) * (g_of_r(r) - mg)) / z
    return math.log(z) - beta * u0, mu, var, mg, cov


def reference(name, z, temperature):
    """Independent F, <U>, Var U, mean force, thermal response at one z (float64 numbers)."""
    beta = 1.0 / (KB_KJMOL_PER_K * temperature)
    if name.startswith("harmonic"):
        d = int(name.split("-")[1])
        k, dk = k_perp(z), k_perp(z) * math.cos(z)  # one mode; total = slow + d * mode
        log_z, mu, var, mg, cov = reference_1d(
            lambda y: 0.5 * k * y * y, lambda y: 0.5 * dk * y * y, beta
        )
        slow, slow_g = 1.25 * z * z, 2.5 * z
        f = slow - d * log_z / beta
        return f, slow + d * mu, d * var, slow_g + d * mg, slow_g + d * mg - beta * d * cov
    if name == "double-well":
        u1, g1 = z**4 / 4 - 3 * z**2 + z, z**3 - 6 * z + 1
        log_z, mu, var, mg, cov = reference_1d(lambda y: u1 + 0.5 * y * y, lambda y: g1, beta)
    else:
        ys = np.linspace(-4.0, 6.0, 20001)
        center = float(ys[np.argmin(mb_energy(z, ys))])
        log_z, mu, var, mg, cov = reference_1d(
            lambda y: mb_energy(z, y), lambda y: mb_grad(z, y)[0], beta, -4.0, 6.0, center
        )
    return -log_z / beta, mu, var, mg, mg - beta * cov


SYSTEMS = {
    "harmonic-1": lambda: HarmonicFastModes(n_fast=1),
    "harmonic-3": lambda: HarmonicFastModes(n_fast=3),
    "double-well": DoubleWell2D,
    "mueller-brown": MuellerBrown,
}


def zt(values=Z_POINTS, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)[:, None]


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_observables_match_independent_quadrature(name, temperature):
    system = SYSTEMS[name]()
    obs = system.observables(zt(), temperature)
    ref = np.array([reference(name, z, temperature) for z in Z_POINTS])
    tol = {"rtol": 1e-10, "atol": 1e-10}  # observed agreement: ~1e-14 absolute
    np.testing.assert_allclose(obs.free_energy.numpy(), ref[:, 0], **tol)
    np.testing.assert_allclose(obs.mean_energy.numpy(), ref[:, 1], **tol)
    np.testing.assert_allclose(obs.energy_variance.numpy(), ref[:, 2], **tol)
    np.testing.assert_allclose(obs.mean_force[:, 0].numpy(), ref[:, 3], **tol)
    np.testing.assert_allclose(obs.thermal_response[:, 0].numpy(), ref[:, 4], **tol)
    np.testing.assert_allclose(system.free_energy(zt(), temperature).numpy(), ref[:, 0], atol=1e-8)


@pytest.mark.parametrize("name", ["harmonic-1", "double-well"])
def test_quadrature_path_matches_closed_form(name):
    system = SYSTEMS[name]()
    temps = torch.tensor([300.0, 450.0, 600.0, 900.0, 1500.0], dtype=torch.float64)
    closed, numeric = system.observables(zt(), temps), system.quadrature(zt(), temps)
    for field in (
        "free_energy",
        "mean_energy",
        "energy_variance",
        "mean_force",
        "thermal_response",
    ):
        torch.testing.assert_close(
            getattr(numeric, field), getattr(closed, field), rtol=1e-10, atol=1e-10
        )


def beta_to_t(beta):
    return 1.0 / (KB_KJMOL_PER_K * beta)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("name", ["harmonic-3", "double-well", "mueller-brown"])
def test_thermodynamic_identities_by_finite_differences(name, temperature):
    system, z = SYSTEMS[name](), zt()
    beta = 1.0 / (KB_KJMOL_PER_K * temperature)
    obs = system.observables(z, temperature)

    def beta_f(b):
        return b * system.free_energy(z, beta_to_t(b))

    h = 1e-4 * beta
    d1 = (beta_f(beta + h) - beta_f(beta - h)) / (2 * h)
    torch.testing.assert_close(d1, obs.mean_energy, rtol=1e-6, atol=1e-6)
    h2 = 2e-3 * beta
    d2 = (beta_f(beta + h2) - 2 * beta_f(beta) + beta_f(beta - h2)) / h2**2
    torch.testing.assert_close(-d2, obs.energy_variance, rtol=1e-4, atol=1e-4)
    hz = 1e-5
    dz = (system.free_energy(z + hz, temperature) - system.free_energy(z - hz, temperature)) / (
        2 * hz
    )
    torch.testing.assert_close(dz[:, None], obs.mean_force, rtol=1e-6, atol=1e-6)
    response = (
        (beta + h) * system.mean_force(z, beta_to_t(beta + h))
        - (beta - h) * system.mean_force(z, beta_to_t(beta - h))
    ) / (2 * h)
    torch.testing.assert_close(response, obs.thermal_response, rtol=1e-6, atol=1e-6)


def analytic_gradient(name, x):
    x = x.double().numpy()
    if name.startswith("harmonic"):
        z, y = x[:, 0], x[:, 1:]
        k = k_perp(z)
        gz = 2.5 * z + 0.5 * k * np.cos(z) * (y**2).sum(1)
        return np.concatenate([gz[:, None], k[:, None] * y], axis=1)
    if name == "double-well":
        return np.stack([x[:, 0] ** 3 - 6 * x[:, 0] + 1, x[:, 1]], axis=1)
    return np.stack(mb_grad(x[:, 0], x[:, 1]), axis=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_energy_gradient_matches_analytic(name, dtype):
    system = SYSTEMS[name]()
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(64, system.dim, generator=gen, dtype=torch.float64) * 3 - 1.5).to(dtype)
    x[:, 1:] += 0.7 if name == "mueller-brown" else 0.0
    forces = system.forces(x)
    assert forces.dtype == dtype and forces.shape == x.shape
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-3}
    np.testing.assert_allclose(-forces.double().numpy(), analytic_gradient(name, x), **tol)


def zscore(samples, expected_mean):
    samples = np.asarray(samples, dtype=np.float64)
    return (samples.mean() - expected_mean) / (samples.std(ddof=1) / math.sqrt(samples.size))


def marginal_moments(log_p, lo, hi):
    """Mean and second moment of a 1-D density ∝ exp(log_p) by adaptive quadrature."""
    norm = integrate.quad(lambda s: np.exp(log_p(s)), lo, hi, limit=200)[0]
    m1 = integrate.quad(lambda s: s * np.exp(log_p(s)), lo, hi, limit=200)[0] / norm
    m2 = integrate.quad(lambda s: s * s * np.exp(log_p(s)), lo, hi, limit=200)[0] / norm
    return m1, m2


def test_harmonic_samples_have_exact_moments():
    system, n = HarmonicFastModes(n_fast=2), 20000
    temps = torch.where(torch.arange(n) % 2 == 0, 300.0, 600.0).double()
    x = system.sample(n, temps, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 3) and x.dtype == torch.float64
    for t in (300.0, 600.0):
        beta = 1.0 / (KB_KJMOL_PER_K * t)
        xs = x[temps == t].numpy()

        def log_p(s, beta=beta):
            return -beta * 1.25 * s * s - np.log(k_perp(s))  # d/2 = 1

        m1, m2 = marginal_moments(log_p, -np.inf, np.inf)
        norm = integrate.quad(lambda s: np.exp(log_p(s)), -np.inf, np.inf)[0]
        ey2 = integrate.quad(
            lambda s, beta=beta: np.exp(log_p(s)) / (beta * k_perp(s)), -np.inf, np.inf
        )[0]
        assert abs(zscore(xs[:, 0], m1)) < 4
        assert abs(zscore(xs[:, 0] ** 2, m2)) < 4
        for i in (1, 2):
            assert abs(zscore(xs[:, i], 0.0)) < 4
            assert abs(zscore(xs[:, i] ** 2, ey2 / norm)) < 4


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_conditional_samples_have_exact_moments(name):
    system, n, t = SYSTEMS[name](), 20000, 450.0
    z = zt([-0.5, 0.6]).repeat_interleave(n, dim=0)
    r = system.sample_conditional(z, t, generator=torch.Generator().manual_seed(2))
    assert r.shape == (2 * n, system.n_r)
    beta = 1.0 / (KB_KJMOL_PER_K * t)
    for j, z0 in enumerate((-0.5, 0.6)):
        rj = r[j * n : (j + 1) * n].numpy()
        if name == "mueller-brown":
            m1, m2 = marginal_moments(lambda y, z0=z0: -beta * mb_energy(z0, y), -4.0, 6.0)
        elif name == "double-well":
            m1, m2 = 0.0, 1.0 / beta
        else:
            m1, m2 = 0.0, 1.0 / (beta * k_perp(z0))
        for col in range(rj.shape[1]):
            assert abs(zscore(rj[:, col], m1)) < 4
            assert abs(zscore(rj[:, col] ** 2, m2)) < 4


@pytest.mark.parametrize("name", ["double-well", "mueller-brown"])
def test_grid_samplers_have_exact_marginal_moments(name):
    system, n, t = make_analytic(name), 6000, 600.0  # MB: n x 1001 energies for r | z
    beta = 1.0 / (KB_KJMOL_PER_K * t)
    x = system.sample(n, t, generator=torch.Generator().manual_seed(3)).numpy()
    if name == "double-well":
        m1, m2 = marginal_moments(lambda s: -beta * (s**4 / 4 - 3 * s**2 + s), -8, 8)
        assert abs(zscore(x[:, 1] ** 2, 1.0 / beta)) < 4
    else:  # 2-D brute-force grid, independent of the module's quadrature
        xs, ys = np.linspace(-4.5, 2.5, 1401), np.linspace(-3.0, 5.0, 1601)
        u = mb_energy(xs[:, None], ys[None, :])
        w = np.exp(-beta * (u - u.min()))
        px = np.trapezoid(w, ys, axis=1)
        norm = np.trapezoid(px, xs)
        m1, m2 = np.trapezoid(xs * px, xs) / norm, np.trapezoid(xs**2 * px, xs) / norm
        my = np.trapezoid(np.trapezoid(w * ys, ys, axis=1), xs) / norm
        assert abs(zscore(x[:, 1], my)) < 4
    assert abs(zscore(x[:, 0], m1)) < 4
    assert abs(zscore(x[:, 0] ** 2, m2)) < 4


def test_dtype_device_and_per_row_temperature():
    system = MuellerBrown()
    z32 = zt(dtype=torch.float32)
    f32 = system.free_energy(z32, 300.0)
    assert f32.dtype == torch.float32 and f32.shape == (len(Z_POINTS),)
    assert system.mean_force(z32, 300.0).shape == (len(Z_POINTS), 1)
    temps = torch.tensor([300.0, 350.0, 400.0, 500.0, 600.0])
    per_row = system.free_energy(zt(), temps)
    one_by_one = torch.cat(
        [system.free_energy(zt([v]), float(t)) for v, t in zip(Z_POINTS, temps, strict=True)]
    )
    torch.testing.assert_close(per_row, one_by_one, rtol=1e-12, atol=1e-12)
    assert system.coarse_grain(torch.zeros(3, 2)).shape == (3, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_cuda_matches_cpu(name):
    system = SYSTEMS[name]()
    cpu, gpu = system.observables(zt(), 450.0), system.observables(zt().cuda(), 450.0)
    for field in (
        "free_energy",
        "mean_energy",
        "energy_variance",
        "mean_force",
        "thermal_response",
    ):
        assert getattr(gpu, field).device.type == "cuda"
        torch.testing.assert_close(getattr(gpu, field).cpu(), getattr(cpu, field))
    gen = torch.Generator("cuda").manual_seed(0)
    temps = torch.full((64,), 450.0, device="cuda")
    assert system.sample(64, temps, generator=gen).device.type == "cuda"
    assert system.sample_conditional(zt().cuda(), 450.0, gen).device.type == "cuda"


def test_registry():
    assert set(analytic_names()) == {"harmonic", "double-well", "mueller-brown", "torus-wells"}
    for name in analytic_names():
        system = make_analytic(name)
        assert isinstance(system, AnalyticSystem) and system.event_shape == (system.dim,)
    assert make_analytic("harmonic", n_fast=4).dim == 5
    assert make_analytic("mueller-brown", energy_scale=0.2).energy_scale == 0.2
    with pytest.raises(ValueError, match=r'Unknown analytic system "nope"\. Must be one of \['):
        make_analytic("nope")


def test_bad_inputs_raise():
    system = HarmonicFastModes()
    z = zt()
    with pytest.raises(ValueError, match=r"Expected z of shape \[B, 1\]"):
        system.free_energy(z[:, 0], 300.0)
    with pytest.raises(ValueError, match=r"Expected z of shape \[B, 1\]"):
        system.mean_force(torch.zeros(4, 2, dtype=torch.float64), 300.0)
    with pytest.raises(ValueError, match="NaN"):
        system.free_energy(torch.tensor([[0.0], [math.nan]]), 300.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        system.free_energy(torch.zeros(2, 1, dtype=torch.int64), 300.0)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        system.free_energy([[0.0]], 300.0)
    for bad_t in (0.0, -10.0, math.nan, torch.tensor([300.0, -1.0, 300.0, 300.0, 300.0])):
        with pytest.raises(ValueError, match="temperature_k > 0"):
            system.mean_energy(z, bad_t)
    with pytest.raises(ValueError, match=r"tensor of shape \[5\]"):
        system.free_energy(z, torch.full((3,), 300.0))
    with pytest.raises(ValueError, match="positive int"):
        system.sample(0, 300.0)
    with pytest.raises(ValueError, match="shape"):
        system.energy(torch.zeros(4, 2))
    with pytest.raises(NotImplementedError, match="one fast coordinate"):
        system.quadrature(z, 300.0)
    with pytest.raises(ValueError, match="truncates"):
        MuellerBrown().free_energy(z, 300.0 * 1e4)
    narrow = MuellerBrown()
    narrow.r_range = (0.0, 1.0)
    with pytest.raises(ValueError, match="Widen the window"):
        narrow.mean_energy(z, 300.0)
    for kwargs in ({"n_fast": 0}, {"k_slow": -1.0}, {"k_fast": math.inf}, {"coupling": math.nan}):
        with pytest.raises(ValueError, match="Expected"):
            HarmonicFastModes(**kwargs)
    with pytest.raises(ValueError, match="energy_scale"):
        MuellerBrown(energy_scale=0.0)
