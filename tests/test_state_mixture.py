"""The joint-state mixture z proposal (`ccg.fit_state_mixture`, `ccg.StateMixtureProposal`):
a normalized density that its samples follow, and on a target whose torsions are coupled
(three double wells that prefer to sit in the same half, the analogue of residues that are
helical together) an importance ESS far above the product of the learned marginals, with
state populations that agree with quadrature within their (calibrated) standard errors."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from conftest import assert_normalized_torus_density

import ccg
from ccg.training.proposals import UniformTorus

T = 300.0
H, J = 3.0, 1.5  # k_B T: well depth and coupling


def log_target(z: torch.Tensor) -> torch.Tensor:
    """-beta F(z) [n] of z [n, 3]: wells at +-pi/2 (barriers at 0 and pi), pairs pulled into
    the same half."""
    i, j = torch.triu_indices(3, 3, 1)
    s = torch.sin(z)
    return -H * torch.cos(2 * z).sum(1) + J * (s[:, i] * s[:, j]).sum(1)


@functools.cache
def exact_joint_populations() -> dict[str, float]:
    """Populations of the 8 sign states (+ for z in [0, pi)) by quadrature on a 120^3 grid."""
    n = 120
    x = -math.pi + (torch.arange(n, dtype=torch.float64) + 0.5) * 2 * math.pi / n
    z = torch.cartesian_prod(x, x, x)
    p = torch.exp(log_target(z))
    code = ((z >= 0).long() * torch.tensor([4, 2, 1])).sum(1)
    mass = torch.zeros(8, dtype=torch.float64).index_add_(0, code, p)
    mass /= mass.sum()
    return {"".join("+" if c >> k & 1 else "-" for k in (2, 1, 0)): float(m)
            for c, m in enumerate(mass)}


def joint_samples(proposal, n: int, seed: int) -> ccg.JointSamples:
    g = torch.Generator().manual_seed(seed)
    temps = torch.full((n,), T, dtype=torch.float64)
    z = proposal.sample(n, g, torch.float64, "cpu", temps)
    log_w = log_target(z) - proposal.log_prob(z, temps)
    return ccg.JointSamples(z.numpy(), log_w.numpy(), T, ["z0", "z1", "z2"])


GROUPS = ccg.halves_groups(["z0", "z1", "z2"])


@pytest.fixture(scope="module")
def mixture():
    pilot = joint_samples(UniformTorus(3), 2**15, seed=0)
    return ccg.fit_state_mixture(pilot, GROUPS, n_bins=24, base=UniformTorus(3),
                                 base_share=0.05)


def learned_product(seed: int = 0) -> ccg.ProductTorusProposal:
    prop = ccg.ProductTorusProposal(3, T, T, n_bins=24, n_bands=1, warmup=0, decay=0.9,
                                    sharpness=1.0)
    g = torch.Generator().manual_seed(seed)
    temps = torch.full((4096,), T, dtype=torch.float64)
    for _ in range(40):
        z = prop.sample(4096, g, torch.float64, "cpu", temps)
        prop.observe(z, temps, log_target(z)[:, None])
    return prop


def test_density_is_normalized_and_matches_its_samples(mixture):
    assert mixture.n_states == 8 and mixture.base_share == pytest.approx(0.05)
    assert set(mixture.states[:2]) == {"+++", "---"}
    assert_normalized_torus_density(mixture, 3, T, torch.Generator().manual_seed(2))


def test_it_follows_the_joint_states_that_a_product_cannot(mixture):
    product = joint_samples(learned_product(), 2**16, seed=3).ess
    ours = joint_samples(mixture, 2**16, seed=3).ess
    # the product of the (symmetric) marginals puts 2/8 of its z in the two states that hold
    # most of the weight
    assert ours > 0.4 and ours > 2.0 * product, (ours, product)  # measured 0.50, 0.18


def test_state_populations_match_quadrature(mixture):
    exact = exact_joint_populations()
    assert exact["+++"] > 0.25 and exact["+-+"] < 0.05
    table = ccg.group_populations(joint_samples(mixture, 2**16, seed=4), GROUPS, top=8)
    rows = table.rows("joint")
    assert len(rows) == 8
    for _, state, p, se in rows:
        assert abs(p - exact[state]) < 3 * se and se < 0.01, (state, p, exact[state], se)


def test_population_errors_are_calibrated(mixture):
    exact = exact_joint_populations()
    scores = []
    for seed in range(24):
        table = ccg.group_populations(joint_samples(mixture, 2048, seed=100 + seed), GROUPS,
                                      top=8)
        scores += [(p - exact[s]) / se for _, s, p, se in table.rows("joint")]
    scores = np.array(scores)
    assert 0.7 < scores.std() < 1.4 and abs(scores.mean()) < 0.3, (scores.mean(), scores.std())


def test_pooled_rounds_few_states_and_the_base_takes_what_is_dropped():
    rounds = [joint_samples(UniformTorus(3), 4096, seed=s) for s in (5, 6)]
    top2 = ccg.fit_state_mixture(rounds, GROUPS, max_states=2, base=UniformTorus(3),
                                 base_share=0.01)
    exact = exact_joint_populations()
    dropped = 1.0 - exact["+++"] - exact["---"]
    assert top2.n_states == 2 and top2.base_share == pytest.approx(dropped, abs=0.05)
    assert_normalized_torus_density(top2, 3, T, torch.Generator().manual_seed(7), n=50_000)
    alone = ccg.fit_state_mixture(rounds, GROUPS, smooth_bins=0.0)
    assert alone.base is None and alone.base_share == 0.0
    assert_normalized_torus_density(alone, 3, T, torch.Generator().manual_seed(8), n=50_000)


def test_refusals():
    bad = joint_samples(UniformTorus(3), 16, seed=0)
    bad.log_w[:] = -np.inf
    with pytest.raises(ValueError, match="No joint sample has a finite weight"):
        ccg.fit_state_mixture(bad, GROUPS)
    with pytest.raises(ValueError, match="at least one set"):
        ccg.fit_state_mixture([], GROUPS)
    with pytest.raises(ValueError, match="base_share"):
        ccg.StateMixtureProposal(torch.zeros(1), torch.full((1, 3, 4), -math.log(4)),
                                 base_share=0.2)
    with pytest.raises(ValueError, match="log_bins"):
        ccg.StateMixtureProposal(torch.zeros(2), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"z of shape \[n, 3\]"):
        ccg.StateMixtureProposal(torch.zeros(1), torch.zeros(1, 3, 4)).log_prob(
            torch.zeros(5, 2))
