"""The cooperative share of the product z proposal (`ProductTorusProposal(cooperative=c)`,
`[train] z_cooperative`): a normalized density that its samples follow, and on a target
whose torsions want to be equal (F = -kappa sum_{i<j} cos(z_i - z_j), the analogue of a helix
made of residues that each prefer it more when their neighbours do) a higher importance ESS
than the product of the same learned marginals."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_normalized_torus_density

import ccg
from ccg.errors import ConfigError

T = 300.0
KAPPA = 3.0  # k_B T


def log_target(z: torch.Tensor) -> torch.Tensor:
    """-beta F(z) [n] (unnormalized) of z [n, 3]: every pair pulled together."""
    i, j = torch.triu_indices(z.shape[1], z.shape[1], 1)
    return KAPPA * torch.cos(z[:, i] - z[:, j]).sum(1)


def learn(cooperative: float, blocks=None, steps: int = 60, seed: int = 0):
    prop = ccg.ProductTorusProposal(3, T, T, n_bins=12, n_bands=1, warmup=0, decay=0.9,
                                    sharpness=1.0, blocks=blocks, cooperative=cooperative)
    g = torch.Generator().manual_seed(seed)
    temps = torch.full((4096,), T, dtype=torch.float64)
    for _ in range(steps):
        z = prop.sample(4096, g, torch.float64, "cpu", temps)
        prop.observe(z, temps, log_target(z)[:, None])
    return prop


def importance_ess(prop, n: int = 100_000, seed: int = 1) -> float:
    g = torch.Generator().manual_seed(seed)
    temps = torch.full((n,), T, dtype=torch.float64)
    z = prop.sample(n, g, torch.float64, "cpu", temps)
    log_w = log_target(z) - prop.log_prob(z, temps)
    w = torch.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w * w).sum() / n)


@pytest.mark.parametrize("cooperative", [0.2, 0.6])
def test_cooperative_density_is_normalized_and_matches_its_samples(cooperative):
    prop = learn(cooperative, steps=15)
    assert_normalized_torus_density(prop, 3, T, torch.Generator().manual_seed(2))


def test_a_shared_cell_raises_the_ess_where_the_torsions_move_together():
    product, shared = importance_ess(learn(0.0)), importance_ess(learn(0.5))
    # the marginals are uniform: the product proposal is the uniform torus, which puts a
    # fraction of its mass where all three torsions agree that the target weighs far more
    assert shared > 2.0 * product, (shared, product)


def test_cooperative_draws_stay_within_the_spread_of_a_shared_cell():
    from ccg.training.product_proposal import COOPERATIVE_SPREAD

    prop = learn(0.4, steps=10)
    n = 200_000
    temps = torch.full((n,), T, dtype=torch.float64)

    def close_fraction() -> float:
        z = prop.sample(n, torch.Generator().manual_seed(3), torch.float64, "cpu", temps)
        bins = prop._cells(z)  # one torsion per block: the cell is the bin
        gap = torch.remainder(bins[:, :, None] - bins[:, None, :] + 6, 12) - 6
        return float((gap.abs() <= 2 * COOPERATIVE_SPREAD).all(2).all(1).double().mean())

    both = close_fraction()
    prop.cooperative = 0.0  # the product part alone lands that close this often
    product = close_fraction()
    assert product < 0.8
    assert abs(both - (0.4 + 0.6 * product)) < 0.01, (both, product)

def test_refusals():
    with pytest.raises(ValueError, match="cooperative must be in"):
        ccg.ProductTorusProposal(3, T, T, cooperative=1.0)
    with pytest.raises(ValueError, match="blocks of one size"):
        ccg.ProductTorusProposal(3, T, T, blocks=[(0, 1), (2,)], cooperative=0.2)
    with pytest.raises(ConfigError, match="z_cooperative works with"):
        ccg.RunConfig.from_dict({"train": {"z_cooperative": 0.2}}).validate()
    with pytest.raises(ConfigError, match=r"z_cooperative must be in \[0, 1\)"):
        ccg.RunConfig.from_dict({"train": {"z_proposal": "product",
                                           "z_cooperative": -0.1}}).validate()
