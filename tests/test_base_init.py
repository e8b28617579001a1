"""Hessians for base initialization, against exact Hessians from double backward (float64).

- `central_difference_hessian` on a function with a known Hessian, with a chunk that does not
  divide the dimension;
- `System.reference_hessian` (Cartesian) for Ace-Ala-Nme in OBC2 implicit solvent;
- `reference_hessian` (r-space, by the chain rule through the cached Cartesian Hessian) and
  `hessian_at` (direct) for alanine dipeptide in vacuum and Ace-Ala-Nme in OBC2, with a torsion
  map (which rebuilds x in its own frame) and an atom-subset map.
"""

from __future__ import annotations

import pytest
import torch

import ccg
from ccg._hessian import central_difference_hessian
from ccg.systems import build_peptide
from ccg.training.base_init import hessian_at, reference_hessian

REL_TOL = 1e-6  # of the largest |entry|; measured 1e-9..1e-8


@pytest.fixture(scope="module")
def systems() -> dict:
    return {"ala2-vacuum": ccg.alanine_dipeptide(),
            "ace-ala-nme-obc2": build_peptide("A", implicit_solvent="obc2").system}


def _assert_close(approx: torch.Tensor, exact: torch.Tensor) -> None:
    assert approx.shape == exact.shape
    assert torch.equal(approx, approx.T)
    scale = float(exact.abs().max())
    assert float((approx - exact).abs().max()) < REL_TOL * scale


def test_central_difference_hessian_of_a_known_function():
    a = torch.randn(11, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = a + a.T
    p = torch.linspace(-1.0, 1.0, 11, dtype=torch.float64)
    # f = p.A.p / 2 + sum sin(p): gradient A p + cos(p), Hessian A - diag(sin(p))
    approx = central_difference_hessian(lambda q: q @ a + torch.cos(q), p, chunk=4)
    _assert_close(approx, a - torch.diag(torch.sin(p)))


def test_cartesian_reference_hessian_is_exact_and_cached(systems):
    system = systems["ace-ala-nme-obc2"]
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64).reshape(-1)
    exact = torch.autograd.functional.hessian(
        lambda x: system.energy(x.reshape(1, *system.event_shape))[0], x_ref)
    hessian = system.reference_hessian()
    _assert_close(hessian, exact)
    assert system.reference_hessian() is hessian


def _exact_r_hessian(cg_map, system) -> torch.Tensor:
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    z0, r0, _ = cg_map.split(x_ref.reshape(1, *system.event_shape))

    def energy(r: torch.Tensor) -> torch.Tensor:
        x, _ = cg_map.merge(z0, r[None])
        return system.energy(x).sum()

    return torch.autograd.functional.hessian(energy, r0[0].detach())


@pytest.mark.parametrize("cg", ["backbone-torsions", "heavy-atoms"])
@pytest.mark.parametrize("name", ["ala2-vacuum", "ace-ala-nme-obc2"])
def test_r_hessians_match_double_backward(name, cg, systems):
    system = systems[name]
    cfg = ccg.RunConfig.from_dict({"map": {"cg": cg}, "train": {"steps": 1}})
    cg_map = ccg.build_map(cfg, system)
    exact = _exact_r_hessian(cg_map, system)
    assert exact.shape == (cg_map.n_r, cg_map.n_r)
    _assert_close(reference_hessian(cg_map, system), exact)
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    z0, r0, _ = cg_map.split(x_ref.reshape(1, *system.event_shape))
    _assert_close(hessian_at(cg_map, system.energy, z0, r0), exact)
