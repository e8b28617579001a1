"""The C++ generalized Born kernel (`ccg.systems._gb_kernel`) against its reference, the torch
path (`_GBTerm._evaluate`), to 1e-12 in float64, and through `OpenMMSystem.use_gb_kernel`
against OpenMM's Reference platform to 1e-8 per term; its fallbacks.

Configurations as in test_gb: 0.015 nm perturbations of the minimized structure (atoms inside
their neighbours' scaled spheres, every branch of the Born integral) and low-energy ones.
Skipped where the kernel cannot be built (no C++ compiler).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from test_gb import (
    CASES,
    VARIANTS,
    _from_bundled,
    configurations,
    energy_error,
    force_error,
    per_term_reference,
    torch_terms,
)

from ccg.systems import _gb_kernel
from ccg.systems._torch_terms import atom_major
from ccg.systems.alanine import alanine_dipeptide
from ccg.systems.benchmark import benchmark_energy
from ccg.systems.bundled import ala3_obc2, ala5_obc2

pytestmark = pytest.mark.skipif(
    not _gb_kernel.kernel_available(), reason="the C++ kernel cannot be built here"
)


def _gb_terms(system):
    """{label: term} of the system's generalized Born term, alone and fused with nonbonded."""
    terms = {n: t for n, t in system._torch_terms.items() if hasattr(t, "use_kernel")}
    if system._fused is not None:
        terms["fused with nonbonded"] = system._fused[2]
    return terms


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    system = CASES[request.param]()
    return request.param, system, configurations(system, 60, 20, seed=13)


@pytest.mark.parametrize("batch", [80, 77])  # 77: padded to whole SIMD vectors
def test_kernel_matches_the_torch_path_in_float64(case, batch):
    name, system, xs = case
    xt = atom_major(torch.tensor(xs[:batch]))
    terms = _gb_terms(system)
    assert len(terms) == 2, system.summary()
    for label, term in terms.items():
        kernel_term = _gb_kernel.kernel_copy(term)
        assert kernel_term is not None and kernel_term.use_kernel, label
        tensors = term._cast(xt)
        e_ref, g_ref = term._evaluate(xt, tensors, True)
        e, g = kernel_term._evaluate_batch(xt, tensors, True)
        assert energy_error(e.numpy(), e_ref.numpy()) < 1e-12, (name, label)
        assert force_error(g.permute(2, 1, 0).numpy(), g_ref.permute(2, 1, 0).numpy()) < 1e-12


def test_kernel_matches_openmm_reference_per_term(case):
    name, system, xs = case
    kernel_system = copy.copy(system)
    assert kernel_system.use_gb_kernel() and kernel_system.uses_gb_kernel
    assert not system.uses_gb_kernel  # the copy made before the call is unaffected
    reference = per_term_reference(system, xs)
    got = torch_terms(kernel_system, xs)
    for term, (expected_e, expected_f) in reference.items():
        assert energy_error(got[term][0], expected_e) < 1e-8, (name, term)
        assert force_error(got[term][1], expected_f) < 1e-8, (name, term)
    # the total energy (fused terms) and its forces
    x = torch.tensor(xs, requires_grad=True)
    energy = kernel_system.energy(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    total_e = sum(e for e, _ in reference.values())
    total_f = sum(f for _, f in reference.values())
    assert energy_error(energy.detach().numpy(), total_e) < 1e-8, name
    assert force_error(-grad.numpy(), total_f) < 1e-8, name


def test_float32_kernel_matches_float64():
    system = ala5_obc2()
    system.use_gb_kernel()
    # float32-representable positions in both dtypes, so that only the arithmetic differs
    xs = configurations(system, 40, 8, seed=2).astype(np.float32).astype(np.float64)
    e64, f64 = torch_terms(system, xs)["GBSAOBCForce"]
    e32, f32 = torch_terms(system, xs, dtype=torch.float32)["GBSAOBCForce"]
    assert energy_error(e32, e64) < 1e-5
    assert force_error(f32, f64) < 1e-5


def test_threads_give_the_one_thread_answer():
    system = ala5_obc2()
    term = _gb_kernel.kernel_copy(system._fused[2])
    rng = np.random.default_rng(0)
    xt = atom_major(torch.tensor(system.reference_positions + rng.normal(0, 0.01, (96, 62, 3))))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        e1, g1 = term._evaluate_batch(xt, term._cast(xt), True)
        torch.set_num_threads(2)
        e2, g2 = term._evaluate_batch(xt, term._cast(xt), True)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(e1, e2) and torch.equal(g1, g2)


def test_second_derivatives_use_the_torch_path():
    system, plain = ala3_obc2(), ala3_obc2()
    system.use_gb_kernel()
    x0 = torch.tensor(system.reference_positions).reshape(-1)
    flat, rest = x0[:24].clone(), x0[24:]

    def hessian(s):
        return torch.autograd.functional.hessian(
            lambda v: s.energy(torch.cat([v, rest]).reshape(1, -1, 3)).sum(), flat)

    torch.testing.assert_close(hessian(system), hessian(plain), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("variant", ["gbn2 salt", "obc2 + nonbonded CutoffNonPeriodic"])
def test_settings_the_kernel_does_not_cover_keep_the_torch_path(variant):
    files, options = VARIANTS[variant]
    system = _from_bundled("ala5", files, **options)
    assert not system.use_gb_kernel() and not system.uses_gb_kernel
    assert "C++ kernel" not in system.summary()


def test_no_kernel_without_gb_or_without_a_build(monkeypatch):
    assert not alanine_dipeptide().use_gb_kernel()

    reason = "the C++ generalized Born kernel could not be built (no compiler)"
    monkeypatch.setattr(_gb_kernel, "unavailable_reason", lambda: reason)
    system = ala3_obc2()
    with pytest.warns(UserWarning, match="no compiler.*stays on the torch path"):
        assert not system.use_gb_kernel()
    x = torch.tensor(system.reference_positions[None], requires_grad=True)
    assert torch.isfinite(system.forces(x)).all()


def test_compile_energy_and_the_benchmark_use_the_kernel():
    system = ala3_obc2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        system.compile_energy()
        assert system.uses_gb_kernel
        assert "C++ kernel" in system.summary()
        rows = benchmark_energy(ala3_obc2(), [16], compile=True, repeats=1, devices=["cpu"])
    methods = {r["method"] for r in rows}
    assert "torch compiled + C++ GB kernel float32" in methods, methods
    assert all(r["configs_per_s"] > 0 for r in rows)
