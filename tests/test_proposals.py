"""Proposals: the adaptive torus proposal and discrete training temperatures."""

from __future__ import annotations

import math

import pytest
import torch

from ccg.constants import KB_KJMOL_PER_K
from ccg.training.config import ConfigError, RunConfig
from ccg.training.proposals import AdaptiveTorusProposal, TemperatureSampler


def _observe_well(proposal: AdaptiveTorusProposal, steps: int, gen: torch.Generator,
                  temperatures=(300.0,)) -> None:
    """Report exact 'estimates' of a free energy with one well at z = (1, -2):
    F = 20 kJ/mol * (2 - cos(z1 - 1) - cos(z2 + 2)) - T * 0.5 kJ/mol/K (a large entropy-like
    constant that differs between temperatures, as absolute flow estimates do), as log-weights
    of 4 equal samples, at temperatures drawn from `temperatures`."""
    choices = torch.tensor(temperatures, dtype=torch.float64)
    for _ in range(steps):
        z = (torch.rand(64, 2, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        t = choices[torch.randint(len(choices), (64,), generator=gen)]
        f = 20.0 * (2 - torch.cos(z[:, 0] - 1.0) - torch.cos(z[:, 1] + 2.0)) - 0.5 * t
        log_w = (-f / (KB_KJMOL_PER_K * t))[:, None].expand(64, 4)
        proposal.observe(z, t, log_w)


@pytest.mark.parametrize("temperatures", [(300.0,), (300.0, 450.0, 600.0)])
def test_adaptive_proposal_concentrates_on_low_free_energy_and_keeps_exploring(temperatures):
    """Also when the estimates come from several temperatures whose beta F differ by large
    constants (mixing them in one map would make the proposal follow the constants)."""
    gen = torch.Generator().manual_seed(0)
    proposal = AdaptiveTorusProposal(2, 300.0, 600.0, n_bins=12, explore=0.3, warmup=5,
                                     sharpness=1.0)
    uniform = proposal.sample(1000, gen, torch.float64, "cpu")
    assert float(uniform.abs().max()) <= math.pi
    _observe_well(proposal, 60, gen, temperatures)
    z = proposal.sample(20000, gen, torch.float32, "cpu")
    assert z.dtype == torch.float32 and z.shape == (20000, 2)
    assert bool((z >= -math.pi).all() and (z < math.pi).all())
    near = ((z[:, 0] - 1.0).abs() < 0.8) & ((z[:, 1] + 2.0).abs() < 0.8)
    area = (1.6 / (2 * math.pi)) ** 2  # the uniform share of that box
    assert float(near.float().mean()) > 0.5 > 5 * area
    # the explored share is uniform: every quadrant keeps at least ~30 % / 4 of the points
    for sx in (-1, 1):
        for sy in (-1, 1):
            quadrant = ((z[:, 0] * sx) > 0) & ((z[:, 1] * sy) > 0)
            assert float(quadrant.float().mean()) > 0.06


def test_adaptive_proposal_draws_z_for_each_rows_temperature():
    """With temperature_k, each row's z comes from its own band: wells that move with T (here
    at (1, -2) at 300 K and at (-2, 1) at 600 K) are each proposed at their own temperature."""
    gen = torch.Generator().manual_seed(3)
    proposal = AdaptiveTorusProposal(2, 300.0, 600.0, n_bins=12, explore=0.2, warmup=1)
    for _ in range(40):
        z = (torch.rand(64, 2, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        t = torch.where(torch.rand(64, generator=gen) < 0.5, 300.0, 600.0).double()
        centre = torch.where((t == 300.0)[:, None], torch.tensor([1.0, -2.0]).double(),
                             torch.tensor([-2.0, 1.0]).double())
        f = 20.0 * (2 - torch.cos(z - centre)).sum(1) - 0.5 * t
        proposal.observe(z, t, (-f / (KB_KJMOL_PER_K * t))[:, None].expand(64, 4))
    for temperature, centre in [(300.0, (1.0, -2.0)), (600.0, (-2.0, 1.0))]:
        t = torch.full((20000,), temperature, dtype=torch.float64)
        z = proposal.sample(20000, gen, torch.float64, "cpu", temperature_k=t)
        near = ((z[:, 0] - centre[0]).abs() < 1.0) & ((z[:, 1] - centre[1]).abs() < 1.0)
        other = ((z[:, 0] + centre[0] + 1).abs() < 1.0) & ((z[:, 1] + centre[1] + 1).abs() < 1.0)
        assert float(near.double().mean()) > 0.5
        assert float(other.double().mean()) < 0.05
    with pytest.raises(ValueError, match="temperature_k"):
        proposal.sample(10, gen, torch.float64, "cpu", temperature_k=torch.ones(3) * 300.0)
    with pytest.raises(ValueError, match="sharpness"):
        AdaptiveTorusProposal(2, 300.0, 600.0, sharpness=0.0)


def test_adaptive_proposal_state_round_trip():
    gen = torch.Generator().manual_seed(1)
    a = AdaptiveTorusProposal(2, 300.0, 600.0, n_bins=8, warmup=1)
    _observe_well(a, 3, gen, (300.0, 600.0))
    b = AdaptiveTorusProposal(2, 300.0, 600.0, n_bins=8, warmup=1)
    b.load_state_dict(a.state_dict())
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(a.sample(100, ga, torch.float64, "cpu"),
                               b.sample(100, gb, torch.float64, "cpu"))


def test_adaptive_proposal_errors():
    with pytest.raises(ValueError, match="explore"):
        AdaptiveTorusProposal(2, 300.0, 600.0, explore=1.5)
    with pytest.raises(ValueError, match="> 0 K"):
        AdaptiveTorusProposal(2, 0.0, 600.0)
    with pytest.raises(ValueError, match="swap"):
        AdaptiveTorusProposal(2, 600.0, 300.0)
    with pytest.raises(ConfigError, match="z_proposal"):
        RunConfig.from_dict({"train": {"z_proposal": "gaussian", "steps": 1}}).validate()


def test_discrete_training_temperatures():
    gen = torch.Generator().manual_seed(0)
    sampler = TemperatureSampler(300.0, 600.0, values=[300.0, 600.0])
    t = sampler.sample(1000, gen, torch.float64, "cpu")
    assert set(t.tolist()) == {300.0, 600.0}
    assert 0.4 < float((t == 300.0).double().mean()) < 0.6
    with pytest.raises(ConfigError, match="t_values"):
        RunConfig.from_dict({"train": {"t_values": [250.0], "steps": 1}}).validate()
    with pytest.raises(ValueError, match="> 0 K"):
        TemperatureSampler(300.0, 600.0, values=[-1.0])
