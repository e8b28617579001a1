"""The path-gradient (sticking-the-landing) reverse KL: same value, same expected gradient,
zero gradient at the exact solution."""

from __future__ import annotations

import math

import pytest
import torch

from ccg import RunConfig
from ccg.constants import KB_KJMOL_PER_K
from ccg.flows import build_flow
from ccg.mapping import CoordinateSplitMap
from ccg.model import BackmappingModel
from ccg.systems import make_analytic
from ccg.training.losses import ReverseKL, frozen_parameters


def _harmonic_model(perturb: float) -> BackmappingModel:
    """Harmonic fast modes with z-independent stiffness (coupling 0): r | z, T is N(0, kT/k)
    exactly, which the initial (identity) flow with that base width represents at every T."""
    system = make_analytic("harmonic", n_fast=2, coupling=0.0)
    cg_map = CoordinateSplitMap(system.dim, system.cg_dim)
    width = math.sqrt(KB_KJMOL_PER_K * 300.0 / system.k_fast)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the base width exactly, not rounded to float32
    try:
        flow = build_flow(2, cg_map.cg_feature_dim + 1, [False, False], [0.0, 0.0],
                          [width, width], n_layers=2, hidden=16, n_blocks=1)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(perturb * torch.randn_like(p))
    return BackmappingModel(system, cg_map, flow, t_ref=300.0, t_range=(300.0, 600.0))


def _gradient(model, path: bool, seed: int, n: int = 256) -> tuple[float, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1
    temperature = 300.0 + 300.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    model.flow.zero_grad()
    out = ReverseKL(model, path_gradient=path)(z, temperature, generator=gen)
    out.loss.backward()
    grads = [p.grad.flatten() for p in model.flow.parameters() if p.grad is not None]
    return float(out.loss.detach()), torch.cat(grads)


def test_path_gradient_vanishes_at_the_exact_solution():
    model = _harmonic_model(perturb=0.0)
    loss_r, grad_r = _gradient(model, path=False, seed=1)
    loss_p, grad_p = _gradient(model, path=True, seed=1)
    assert loss_p == pytest.approx(loss_r, abs=1e-12)  # same value
    assert float(grad_r.norm()) > 1e-2  # the score term's noise
    assert float(grad_p.norm()) < 1e-10


def test_path_gradient_is_unbiased():
    """Away from the optimum both estimators have the same mean over independent batches."""
    model = _harmonic_model(perturb=0.05)
    reparam = torch.stack([_gradient(model, False, seed)[1] for seed in range(40)])
    path = torch.stack([_gradient(model, True, seed)[1] for seed in range(40)])
    diff = path - reparam  # paired on the same samples: the difference is the score term
    mean, se = diff.mean(0), diff.std(0) / math.sqrt(len(diff)) + 1e-12
    assert float((mean.abs() / se).max()) < 4.5
    assert float(path.mean(0).norm()) > 10 * float(diff.mean(0).norm() / math.sqrt(len(mean)))


def test_path_gradient_is_less_noisy_near_the_optimum():
    model = _harmonic_model(perturb=0.02)
    reparam = torch.stack([_gradient(model, False, seed)[1] for seed in range(20)])
    path = torch.stack([_gradient(model, True, seed)[1] for seed in range(20)])
    assert float(path.var(0).sum()) < 0.5 * float(reparam.var(0).sum())


def test_frozen_parameters_restores_flags():
    module = torch.nn.Linear(2, 2)
    module.bias.requires_grad_(False)
    with frozen_parameters(module):
        assert not any(p.requires_grad for p in module.parameters())
    assert module.weight.requires_grad and not module.bias.requires_grad


def test_config_key_reaches_the_loss(tmp_path):
    config = RunConfig.from_dict({"system": {"name": "harmonic"}, "map": {"cg": "split"},
                                  "train": {"steps": 1, "path_gradient": True}}).validate()
    assert config.train.path_gradient is True
