"""The block-product z proposal (`ProductTorusProposal(blocks=...)`, `z_proposal =
"residue-pairs"`, `pilot_proposal(blocks="residue")`) against exact answers: a target whose
two torsions are coupled (F = -kappa cos(z0 - z1) + a double well in z2), whose 2-D marginal
and joint importance weights are known in closed form on a fine grid."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_normalized_torus_density

import ccg
from ccg.mapping.peptide import phi_psi_pairs, residue_blocks
from ccg.training.product_proposal import residue_pairs_proposal
from ccg.training.proposals import UniformTorus

T = 300.0
KAPPA, BARRIER = 2.0, 1.5  # in k_B T


def log_target(z: torch.Tensor) -> torch.Tensor:
    """-beta F(z) [n] of z [n, 3] (unnormalized)."""
    return KAPPA * torch.cos(z[:, 0] - z[:, 1]) + BARRIER * torch.cos(2 * z[:, 2])


def exact_pair_free_energy(n_bins: int, fine: int = 16) -> np.ndarray:
    """-log of the normalized density of (z0, z1) averaged over each n_bins x n_bins cell (per
    rad^2), cell index bin0 + n_bins * bin1, by a midpoint rule `fine` points per bin."""
    m = n_bins * fine
    x = -math.pi + (np.arange(m) + 0.5) * 2 * math.pi / m
    dens = np.exp(KAPPA * np.cos(x[:, None] - x[None, :]))  # [z0, z1]
    dens /= dens.sum() * (2 * math.pi / m) ** 2
    cell = dens.reshape(n_bins, fine, n_bins, fine).mean((1, 3))  # [bin0, bin1]
    return -np.log(cell.T.reshape(-1))  # bin1-major: index bin0 + n_bins * bin1


def learn(blocks, n_bins: int = 18, steps: int = 150, seed: int = 0):
    prop = ccg.ProductTorusProposal(3, T, T, n_bins=n_bins, n_bands=1, warmup=0, decay=0.97,
                                    sharpness=1.0, blocks=blocks)
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


@pytest.fixture(scope="module")
def pair_proposal():
    return learn([(0, 1), (2,)])


def test_a_pair_block_learns_the_exact_two_dimensional_marginal(pair_proposal):
    learned = pair_proposal.marginal_free_energy()[0, 0].numpy()
    exact = exact_pair_free_energy(18)
    low = exact - exact.min() < 3.0
    assert low.sum() > 100
    err = (learned - exact)[low]  # counting noise of ~30 steps x 4096 samples: RMSE ~0.05
    assert np.sqrt((err ** 2).mean()) < 0.07 and abs(err.mean()) < 0.02
    one_d = pair_proposal.marginal_free_energy()[0, 1].numpy()  # the 1-D block: 18 cells
    assert np.isfinite(one_d[:18]).all() and np.isinf(one_d[18:]).all()


def test_pairing_the_coupled_torsions_raises_the_joint_ess(pair_proposal):
    pairs, singles = importance_ess(pair_proposal), importance_ess(learn(None))
    assert pairs > 0.85, pairs  # only the explore mixture and the cells' resolution are lost
    assert singles < 0.6, singles  # a product of 1-D marginals misses the coupling
    assert pairs > 1.5 * singles


@pytest.mark.parametrize("blocks", [None, [(0, 1), (2,)], [(2, 0, 1)]])
def test_block_density_is_normalized_and_matches_its_samples(blocks):
    prop = learn(blocks, n_bins=8, steps=20)
    assert_normalized_torus_density(prop, 3, T, torch.Generator().manual_seed(2))


def test_one_torsion_blocks_are_the_product_proposal_exactly():
    plain, blocked = learn(None, steps=5, seed=3), learn([(0,), (1,), (2,)], steps=5, seed=3)
    temps = torch.full((500,), T, dtype=torch.float64)
    za = plain.sample(500, torch.Generator().manual_seed(4), torch.float64, "cpu", temps)
    zb = blocked.sample(500, torch.Generator().manual_seed(4), torch.float64, "cpu", temps)
    torch.testing.assert_close(za, zb, rtol=0, atol=0)
    torch.testing.assert_close(plain.log_prob(za, temps), blocked.log_prob(za, temps),
                               rtol=1e-12, atol=1e-12)


def test_block_state_round_trip_and_refusals():
    prop = learn([(0, 1), (2,)], n_bins=6, steps=3)
    again = ccg.ProductTorusProposal(3, T, T, n_bins=6, n_bands=1, warmup=0, sharpness=1.0,
                                     blocks=[(0, 1), (2,)])
    again.load_state_dict(prop.state_dict())
    z = UniformTorus(3).sample(100, torch.Generator().manual_seed(5), torch.float64, "cpu")
    temps = torch.full((100,), T, dtype=torch.float64)
    torch.testing.assert_close(again.log_prob(z, temps), prop.log_prob(z, temps))
    singles = ccg.ProductTorusProposal(3, T, T, n_bins=6, n_bands=1)
    with pytest.raises(ValueError, match="blocks"):
        singles.load_state_dict(prop.state_dict())
    old = {k: v for k, v in singles.state_dict().items() if k != "blocks"}  # saved before blocks
    singles.load_state_dict(old)
    for bad, match in [([(0, 1)], "exactly once"), ([(0, 1), (1, 2)], "exactly once"),
                       ([(0, 1, 2), ()], "exactly once")]:
        with pytest.raises(ValueError, match=match):
            ccg.ProductTorusProposal(3, T, T, blocks=bad)
    with pytest.raises(ValueError, match="cells"):
        ccg.ProductTorusProposal(4, T, T, n_bins=36, blocks=[(0, 1, 2, 3)])


def test_residue_blocks_pair_phi_and_psi_of_both_naming_schemes():
    assert phi_psi_pairs(["phi_0", "phi_1", "psi_0", "psi_1"]) == [(0, 2), (1, 3)]
    names = ["phi2", "psi2", "phi3", "psi3", "omega3", "chi1:3"]  # backbone-torsions / torsions
    assert residue_blocks(names) == [(0, 1), (2, 3), (4,), (5,)]
    atoms = [(0, 1, 2, 3), (3, 4, 5, 6), (1, 2, 3, 4), (4, 5, 6, 7)]  # by the shared C-alpha
    assert phi_psi_pairs(["phi_0", "phi_1", "psi_0", "psi_1"], atoms) == [(0, 2), (1, 3)]
    assert residue_blocks(["z0", "z1"]) == [(0,), (1,)]
    assert [g.name for g in ccg.ramachandran_groups(names)] == ["phi2/psi2", "phi3/psi3"]


def test_the_residue_pairs_proposal_is_registered_and_pairs_the_map():
    cg_map = SimpleNamespace(z_circular=torch.ones(4, dtype=torch.bool),
                             cg_names=["phi_0", "phi_1", "psi_0", "psi_1"])
    model = SimpleNamespace(cg_map=cg_map, cg_dim=4)
    assert ccg.Z_PROPOSALS.resolve("residue-pairs") is residue_pairs_proposal
    prop = residue_pairs_proposal(model, t_min=300.0, t_max=600.0)
    assert isinstance(prop, ccg.ProductTorusProposal) and prop.blocks == [(0, 2), (1, 3)]
    assert prop.log_mass.shape == (4, 2, 24 * 24)


def test_inverse_cdf_draws_follow_each_rows_distribution():
    """`draw_cells` (the proposals' sampler): counts per cell within 4.5 standard deviations of
    n p for rows with zero-probability cells at the start, middle and end; those never drawn."""
    from ccg.training.proposals import draw_cells

    g = torch.Generator().manual_seed(0)
    log_p = 2.0 * torch.randn(5, 40, generator=g, dtype=torch.float64)
    log_p[1, :3] = log_p[2, 10:20] = log_p[3, -5:] = -math.inf
    n = 400_000
    row = torch.randint(0, 5, (n,), generator=g)
    cells = draw_cells(log_p, row, torch.rand(n, generator=g, dtype=torch.float64))
    p = torch.softmax(log_p, dim=1)
    for r in range(5):
        m = int((row == r).sum())
        counts = torch.bincount(cells[row == r], minlength=40).double()
        assert int(counts[p[r] == 0].sum()) == 0
        sd = torch.sqrt(m * p[r] * (1 - p[r]))
        live = p[r] > 0
        assert float(((counts - m * p[r])[live] / sd[live]).abs().max()) < 4.5
