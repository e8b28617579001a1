"""Beyond two CG dimensions, against exact answers: the torus-wells system (F, projections and
populations by 1-D quadrature), the product z proposal, joint samples and the joint ESS,
projections of F and state populations with calibrated standard errors.

The estimators run through a real `BackmappingModel` whose flow is an oracle: the exact
conditional p(r | z, T) of `TorusDoubleWells` (a Gaussian), optionally with widths scaled by s,
so every error left is the estimator's own and the expected answers are exact.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_normalized_torus_density

import ccg
from ccg import ConfigError, RunConfig, TorusDoubleWells
from ccg.constants import KB_KJMOL_PER_K
from ccg.mapping.split import CoordinateSplitMap
from ccg.training.proposals import AdaptiveTorusProposal, UniformTorus

T = 300.0


class OracleFlow(torch.nn.Module):
    """q(r | z, T) = the exact Gaussian conditional of a TorusDoubleWells, widths times `scale`
    (z and T read back from the context [cos z, sin z, log(T / t_ref)])."""

    def __init__(self, system: TorusDoubleWells, t_ref: float, scale: float = 1.0):
        super().__init__()
        self.system, self.t_ref, self.scale = system, t_ref, scale
        self.dim, self.context_dim = system.cg_dim, 2 * system.cg_dim + 1
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def _moments(self, context):
        d = self.dim
        z = torch.atan2(context[:, d:2 * d], context[:, :d])
        beta = 1.0 / (KB_KJMOL_PER_K * self.t_ref * torch.exp(context[:, -1:]))
        return (self.system.mean_shift * torch.cos(z),
                self.scale / torch.sqrt(beta * self.system.k_fast(z)))

    def sample(self, context, *, generator=None):
        mean, std = self._moments(context)
        r = mean + std * torch.randn(mean.shape, dtype=mean.dtype, generator=generator)
        return r, self.log_prob(r, context)

    def log_prob(self, r, context, *, validate=True):
        mean, std = self._moments(context)
        return (-0.5 * ((r - mean) / std) ** 2 - torch.log(std)
                - 0.5 * math.log(2 * math.pi)).sum(1)

    def sample_and_log_prob(self, context, *, generator=None):
        return self.sample(context, generator=generator)


def oracle_model(system: TorusDoubleWells, scale: float = 1.0) -> ccg.BackmappingModel:
    cg_map = CoordinateSplitMap(system.dim, system.cg_dim, z_circular=True)
    return ccg.BackmappingModel(system, cg_map, OracleFlow(system, 300.0, scale), t_ref=300.0,
                                t_range=(300.0, 600.0))


@pytest.fixture(scope="module")
def system():
    return TorusDoubleWells(4)


@pytest.fixture(scope="module")
def model(system):
    return oracle_model(system)


@pytest.fixture(scope="module")
def proposal(model):
    return ccg.pilot_proposal(model, T, n_samples=4096, rounds=4,
                              generator=torch.Generator().manual_seed(0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the system ------------------------------------------------------------------------------

def test_free_energy_matches_quadrature_over_r_and_derivatives(system):
    z = torch.tensor([[0.7, -2.0, 3.0, -0.1], [-1.5, 1.5, 0.0, 2.5]], dtype=torch.float64)
    beta = 1.0 / (KB_KJMOL_PER_K * T)
    r = torch.linspace(-4.0, 4.0, 8001, dtype=torch.float64)
    for row in z:  # r_j at their means except r_i: A_i = sum_j V_j + G_i, F = sum_j V_j + sum G_i
        well = float(system.well_energy(row[None]).sum())
        total = -(system.cg_dim - 1) * well
        for i in range(4):
            x = torch.cat([row, system.mean_shift * torch.cos(row)]).repeat(len(r), 1)
            x[:, 4 + i] = r
            log_int = torch.logsumexp(-beta * system.energy(x), 0) + math.log(r[1] - r[0])
            total += float(-log_int / beta)
        assert abs(total - float(system.free_energy(row[None], T)[0])) < 1e-9
    obs = system.observables(z, T)
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(system.free_energy(zg, T).sum(), zg)
    torch.testing.assert_close(obs.mean_force, grad)
    h = 1e-4  # d(beta F)/d beta = <U>, thermal response = grad <U>
    bf = [system.free_energy(z, 1 / (KB_KJMOL_PER_K * b)) * b for b in (beta - h, beta + h)]
    torch.testing.assert_close((bf[1] - bf[0]) / (2 * h), obs.mean_energy, rtol=1e-6, atol=1e-6)
    (gu,) = torch.autograd.grad(system.observables(zg, T).mean_energy.sum(), zg)
    torch.testing.assert_close(obs.thermal_response, gu)


def test_projections_and_populations_are_consistent_and_match_exact_samples(system):
    log_z = system.log_partition_1d(T)
    proj = system.projection([0, 2], T, 12)
    area = (2 * math.pi / 12) ** 2
    assert abs(np.logaddexp.reduce((-proj + math.log(area)).ravel()) - log_z.sum()) < 1e-10
    whole = system.arc_log_mass(1, 0.4, 0.4, T)
    parts = np.logaddexp(system.arc_log_mass(1, 3.0, -3.0, T),
                         system.arc_log_mass(1, -3.0, 3.0, T))
    assert abs(whole - log_z[1]) < 1e-10 and abs(parts - log_z[1]) < 1e-10
    x = system.sample(100_000, T, generator=gen(0))
    z = x[:, :4].numpy()
    box = {0: (0.0, math.pi), 3: (-math.pi, 0.0)}
    p = system.box_population(box, T)
    hits = (z[:, 0] >= 0) & (z[:, 3] < 0)
    assert abs(hits.mean() - p) < 4 * math.sqrt(p * (1 - p) / len(z))
    # the temperature dependence: the entropy turns z0's populations over between 300 and 600 K
    assert system.box_population({0: (0.0, math.pi)}, 300.0) > 0.5
    assert system.box_population({0: (0.0, math.pi)}, 600.0) < 0.5


def test_registered_with_a_periodic_split_map_and_round_trips():
    system = ccg.make_analytic("torus-wells", n_dims=6)
    assert system.cg_dim == 6 and system.dim == 12
    assert ccg.AnalyticSystem.from_config(system.config()).config() == system.config()
    cg_map = ccg.CG_MAPS["split"](system)
    assert bool(cg_map.z_circular.all()) and cg_map.cg_feature_dim == 12
    again = ccg.mapping.map_from_config(cg_map.config())
    assert bool(again.z_circular.all())
    z = torch.tensor([[math.pi - 1e-9] * 6, [-math.pi] * 6], dtype=torch.float64)
    feats = cg_map.cg_features(z)
    torch.testing.assert_close(feats[0], feats[1], atol=1e-8, rtol=0)  # periodic context
    with pytest.raises(ValueError, match="n_dims"):
        TorusDoubleWells(0)


# --- the product proposal --------------------------------------------------------------------

def test_product_proposal_recovers_the_marginal_free_energies(system):
    prop = ccg.ProductTorusProposal(4, T, T, n_bins=24, n_bands=1, warmup=0, decay=0.985,
                                    sharpness=1.0)
    beta = 1.0 / (KB_KJMOL_PER_K * T)
    g = gen(1)
    temps = torch.full((4096,), T, dtype=torch.float64)
    for _ in range(200):
        z = prop.sample(4096, g, torch.float64, "cpu", temps)
        prop.observe(z, temps, (-beta * system.free_energy(z, T))[:, None])
    learned = prop.marginal_free_energy()[0].numpy()
    for i in range(4):
        exact = system.projection([i], T, 24) + system.log_partition_1d(T).sum()
        low = exact - exact.min() < 3.0
        assert np.abs(learned[i] - exact)[low].max() < 0.05, i


def test_product_proposal_density_is_normalized_and_matches_its_samples(system, proposal):
    assert_normalized_torus_density(proposal, 4, T, gen(2))


def test_product_proposal_bands_state_and_training():
    prop = ccg.ProductTorusProposal(5, 300.0, 600.0, n_bands=3, warmup=1)
    g = gen(3)
    temps = torch.tensor([300.0, 450.0, 600.0]).repeat(200).double()
    z = prop.sample(600, g, torch.float32, "cpu", temps)
    prop.observe(z, temps, -(z.double() ** 2).sum(1, keepdim=True) + 2 * torch.log(temps)[:, None])
    z2 = prop.sample(600, g, torch.float64, "cpu", temps)
    assert z2.shape == (600, 5) and bool(((z2 >= -math.pi) & (z2 < math.pi)).all())
    assert bool(torch.isfinite(prop.log_prob(z2, temps)).all())
    again = ccg.ProductTorusProposal(5, 300.0, 600.0, n_bands=3, warmup=1)
    again.load_state_dict(prop.state_dict())
    torch.testing.assert_close(again.log_prob(z2, temps), prop.log_prob(z2, temps))
    with pytest.raises(ValueError, match="another cg_dim"):
        ccg.ProductTorusProposal(4, 300.0, 600.0, n_bands=3).load_state_dict(prop.state_dict())
    config = RunConfig.from_dict({
        "system": {"name": "torus-wells", "options": {"n_dims": 5}}, "map": {"cg": "split"},
        "flow": {"n_layers": 2, "hidden": 8, "n_blocks": 1, "n_bins": 4},
        "train": {"z_proposal": "product", "steps": 1}})
    config.validate()
    built = ccg.build_proposal(config, ccg.build_model(config))
    assert isinstance(built, ccg.ProductTorusProposal) and built.cg_dim == 5


def test_adaptive_grid_refuses_more_than_three_torsions():
    AdaptiveTorusProposal(3, 300.0, 600.0, n_bins=4)
    with pytest.raises(ConfigError, match='z_proposal = "product"'):
        AdaptiveTorusProposal(4, 300.0, 600.0)


# --- joint samples and the joint ESS ---------------------------------------------------------

def _uniform_ess(system, temperature_k: float, scale: float) -> float:
    """Exact ESS of z ~ uniform, r ~ q with widths times s: 1 / prod_i E_u[(p_i/u)^2]
    / (s^2 / sqrt(2 s^2 - 1))^d."""
    beta = 1.0 / (KB_KJMOL_PER_K * temperature_k)
    x, w = np.polynomial.legendre.leggauss(400)
    z = torch.tensor(x * math.pi)[:, None].expand(-1, system.cg_dim).contiguous()
    f = system.coordinate_free_energy(z, torch.tensor([beta])).numpy()
    second = (np.exp(-2 * beta * f) * w[:, None]).sum(0) * math.pi
    chi = 2 * math.pi * second / np.exp(2 * system.log_partition_1d(temperature_k))
    return float(1.0 / np.prod(chi) / (scale**2 / math.sqrt(2 * scale**2 - 1)) ** system.cg_dim)


@pytest.mark.parametrize("scale", [1.0, 1.15])
def test_joint_ess_matches_the_exact_value(system, scale):
    model = oracle_model(system, scale)
    exact = _uniform_ess(system, 600.0, scale)
    ess = ccg.joint_ess(model, [600.0], n_samples=2**17, proposal=UniformTorus(4),
                        generator=gen(4))
    assert ess.shape == (1,) and abs(ess[0] / exact - 1) < 0.06, (ess, exact)


@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_joint_ess_parts_separate_proposal_and_flow(system, scale):
    model = oracle_model(system, scale)
    flow_exact = 1.0 / (scale**2 / math.sqrt(2 * scale**2 - 1)) ** system.cg_dim
    proposal_exact = _uniform_ess(system, 600.0, 1.0)
    parts = ccg.joint_ess_parts(model, 600.0, proposal=UniformTorus(4), n_z=2**13, r_per_z=32,
                                generator=gen(7))
    assert abs(parts["flow"] / flow_exact - 1) < 0.03, (parts, flow_exact)
    assert parts["flow_worst_1pct"] <= parts["flow"]
    assert abs(parts["proposal"] / proposal_exact - 1) < 0.08, (parts, proposal_exact)
    assert abs(parts["joint"] / (proposal_exact * flow_exact) - 1) < 0.1, parts
    with pytest.raises(ValueError, match="r_per_z"):
        ccg.joint_ess_parts(model, 600.0, proposal=UniformTorus(4), r_per_z=1)


def _uniform_reverse_kl(system, temperature_k: float, scale: float) -> float:
    """Exact KL(q || p) of z ~ uniform, r ~ q with widths times s: per CG coordinate
    KL(uniform || p_i) = -log 2 pi + beta <F_i>_uniform + log Z_i, plus per r coordinate the
    Gaussian's (s^2 - 1 - 2 log s) / 2."""
    beta = 1.0 / (KB_KJMOL_PER_K * temperature_k)
    x, w = np.polynomial.legendre.leggauss(400)
    z = torch.tensor(x * math.pi)[:, None].expand(-1, system.cg_dim).contiguous()
    f = system.coordinate_free_energy(z, torch.tensor([beta])).numpy()
    mean_f = (f * w[:, None]).sum(0) / 2                 # (1 / 2 pi) * integral over [-pi, pi)
    kl_z = -math.log(2 * math.pi) + beta * mean_f + system.log_partition_1d(temperature_k)
    return float(kl_z.sum() + system.cg_dim * (scale**2 - 1 - 2 * math.log(scale)) / 2)


@pytest.mark.parametrize("scale", [1.0, 1.15])
def test_reverse_kl_gap_matches_the_exact_value(system, scale):
    model = oracle_model(system, scale)
    exact = _uniform_reverse_kl(system, 600.0, scale)
    samples = ccg.sample_joint(model, 600.0, 2**17, proposal=UniformTorus(4), generator=gen(6))
    a = samples.log_w
    se = a.std() / math.sqrt(a.size)                     # of mean log w, the dominant term
    assert exact > 0.05 and abs(samples.reverse_kl - exact) < 5 * se + 0.01, \
        (samples.reverse_kl, exact, se)
    samples.log_w[:10] = -np.inf                        # excluded, and counted
    assert samples.n_nonfinite == 10 and np.isfinite(samples.reverse_kl)
    samples.log_w[:] = -np.inf
    assert math.isnan(samples.reverse_kl)


def test_joint_ess_is_high_with_the_pilot_proposal_and_normalizer_is_exact(system, model,
                                                                           proposal):
    samples = ccg.sample_joint(model, T, 2**16, proposal=proposal, generator=gen(5))
    assert samples.z.shape == (2**16, 4) and samples.n_nonfinite == 0
    assert 0.7 < samples.ess <= 1.0
    from ccg.free_energy.joint import log_normalizer
    value, se = log_normalizer(samples)
    beta = 1.0 / (KB_KJMOL_PER_K * T)
    # log ∫ exp(-beta F) dz = sum of the 1-D log partition functions (F_i in kJ/mol)
    assert abs(value - system.log_partition_1d(T).sum()) < 4 * se and se < 0.01
    assert beta > 0
    with pytest.raises(NotImplementedError, match="no normalized density"):
        ccg.sample_joint(model, T, 10, proposal=ccg.FrameProposal(torch.zeros(5, 4)),
                         generator=gen(0))


def test_pareto_k_tells_a_too_narrow_flow(system, proposal):
    # a flow s times too narrow in one Gaussian direction gives weights with tail shape
    # 1 - s**2: infinite variance (k > 1/2) for s = 0.6; the exact flow's weights are bounded
    samples = {s: ccg.sample_joint(oracle_model(system, s), T, 2**15, proposal=proposal,
                                   generator=gen(21)) for s in (1.0, 0.6)}
    k = {s: samples[s].pareto_k for s in samples}
    assert k[1.0] < 0.2 and k[0.6] > 0.6, k
    smoothed = samples[0.6].smoothed()  # Pareto smoothing: the largest weights pulled in
    assert smoothed.z is samples[0.6].z and smoothed.ess > samples[0.6].ess
    assert smoothed.log_w.max() <= samples[0.6].log_w.max()


def test_pilot_averaging_each_z_over_several_r_gives_a_normalized_proposal(system):
    """r_per_z > 1 (each z's weights averaged over its r) gives a valid proposal. It does not
    raise the proposal ESS here: with a flow 0.6x too narrow, over seeds 0-19 one r per z gave
    a mean proposal ESS of 0.25 (multinomial sampler) / 0.29 (inverse-CDF sampler) and 8 r per
    z 0.20 / 0.25 (experiments/peptide_reference/README.md), so nothing is asserted about it."""
    narrow = oracle_model(system, 0.6)
    pilot = ccg.pilot_proposal(narrow, T, n_samples=4096, rounds=4, r_per_z=8,
                               generator=gen(0))
    assert_normalized_torus_density(pilot, 4, T, gen(1), n=50_000)
    parts = ccg.joint_ess_parts(narrow, T, proposal=pilot, n_z=4096, r_per_z=64,
                                generator=gen(100))
    assert 0.0 < parts["proposal"] <= 1.0
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="r_per_z"):
            ccg.pilot_proposal(narrow, T, r_per_z=bad)
    with pytest.raises(ValueError, match="two z per round"):
        ccg.pilot_proposal(narrow, T, n_samples=8, r_per_z=8)


def test_state_mixture_on_a_model_matches_exact_projections_and_refuses_cartesian(system,
                                                                                model, proposal):
    mixture = ccg.state_mixture_proposal(model, T, base=proposal, rounds=2, n_samples=4096,
                                         generator=gen(11))
    # default groups: no (phi, psi) pair here, so each torsion's halves: 2^4 joint states
    every = ["".join(s) for s in itertools.product("+-", repeat=4)]
    assert mixture.n_states == 16
    assert mixture.states[0] == max(every, key=lambda s: _exact_joint(system, s))
    assert_normalized_torus_density(mixture, 4, T, gen(12), n=50_000)
    samples = ccg.sample_joint(model, T, 2**16, proposal=mixture, generator=gen(13))
    assert samples.ess > 0.5, samples.ess
    for dims in ((0,), (2,)):
        proj = ccg.project_free_energy(samples, dims, n_bins=24)
        exact = system.projection(list(dims), T, 24)
        populated = exact - exact.min() < 3.0
        assert np.abs(proj.f_kt - exact)[populated].max() < 0.08, dims
        assert np.abs((proj.f_kt - exact) / proj.f_kt_err).max() < 4.5, dims
    with pytest.raises(ValueError, match="rounds"):
        ccg.state_mixture_proposal(model, T, base=proposal, rounds=0)
    flat = SimpleNamespace(cg_map=SimpleNamespace(z_circular=torch.tensor([True, False])))
    with pytest.raises(ConfigError, match="torus"):
        ccg.state_mixture_proposal(flat, T)


# --- projections -----------------------------------------------------------------------------

def test_projections_match_exact(system, model, proposal):
    samples = ccg.sample_joint(model, T, 2**18, proposal=proposal, generator=gen(6))
    for dims in ((1,), (3,)):
        proj = ccg.project_free_energy(samples, dims, n_bins=24)
        exact = system.projection(list(dims), T, 24)
        err = proj.f_kt - exact
        populated = exact - exact.min() < 3.0  # every bin within 3 kT of the minimum
        assert np.abs(err)[populated].max() < 0.05, dims
        assert np.abs(err / proj.f_kt_err).max() < 4.5, dims
    proj = ccg.project_free_energy(samples, ("z0", "z2"), n_bins=12)
    exact = system.projection([0, 2], T, 12)
    err = proj.f_kt - exact
    p = np.exp(-exact) / np.exp(-exact).sum()
    assert math.sqrt((p * err**2).sum()) < 0.05  # population-weighted RMSE
    assert np.abs(err / proj.f_kt_err).max() < 4.5
    assert proj.names == ("z0", "z2") and proj.as_arrays()["F_kT"].min() == 0.0


@pytest.mark.parametrize("n_batches", [None, 32])
def test_projection_errors_are_calibrated(system, model, proposal, n_batches):
    from ccg.free_energy.joint import log_normalizer
    exact = system.projection([1, 2], T, 6)
    z, z_norm = [], []
    for seed in range(20):
        samples = ccg.sample_joint(model, T, 8192, proposal=proposal, generator=gen(100 + seed))
        proj = ccg.project_free_energy(samples, (1, 2), n_bins=6, n_batches=n_batches)
        z.append(((proj.f_kt - exact) / proj.f_kt_err).ravel())
        value, se = log_normalizer(samples)
        z_norm.append((value - system.log_partition_1d(T).sum()) / se)
    z = np.concatenate(z)
    assert 0.6 < z.std() < 1.5 and abs(z.mean()) < 0.3, (z.mean(), z.std())
    assert 0.5 < np.std(z_norm) < 1.6, z_norm  # 20 values: a looser band


def test_resolve_dims_errors():
    names = ["phi_0", "psi_0", "phi_1"]
    assert ccg.resolve_dims("psi_0,phi_1", names) == (1, 2)
    assert ccg.resolve_dims([2], names) == (2,)
    for bad, match in (("chi", "Unknown CG coordinate 'chi'"), ("0,7", "out of range"),
                       ("0,0", "distinct"), ("0,1,2", "one or two")):
        with pytest.raises(ValueError, match=match):
            ccg.resolve_dims(bad, names)


# --- states ----------------------------------------------------------------------------------

def _exact_joint(system, state: str) -> float:
    return system.box_population(
        {i: (0.0, math.pi) if c == "+" else (-math.pi, 0.0) for i, c in enumerate(state)}, T)


def test_populations_within_three_standard_errors(system, model, proposal):
    samples = ccg.sample_joint(model, T, 2**16, proposal=proposal, generator=gen(7))
    groups = ccg.halves_groups(model.cg_map.cg_names)
    table = ccg.group_populations(samples, groups, top=6)
    for name, state, p, se in table.rows("group"):
        i = int(name[1:])
        exact = system.box_population({i: (0.0, math.pi) if state == "+" else (-math.pi, 0.0)},
                                      T)
        assert abs(p - exact) < 3 * se and se < 0.01, (name, state, p, exact, se)
    joint = table.rows("joint")
    assert len(joint) == 6 and joint[0][2] >= joint[-1][2]
    for _, state, p, se in joint:
        assert abs(p - _exact_joint(system, state)) < 3 * se, state
    regions = {"z0+ z3-": ccg.Region.box({0: (0.0, math.pi), 3: (-math.pi, 0.0)}),
               "z1 near pi": ccg.Region(((1, 2.5, -2.5),)),
               "predicate": lambda z: np.cos(z[:, 2]) > 0.5}
    pops = ccg.region_populations(samples, regions)
    exact = {"z0+ z3-": system.box_population({0: (0.0, math.pi), 3: (-math.pi, 0.0)}, T),
             "z1 near pi": system.box_population({1: (2.5, -2.5)}, T),
             "predicate": system.box_population({2: (-math.pi / 3, math.pi / 3)}, T)}
    for name, (p, se) in pops.items():
        assert abs(p - exact[name]) < 3 * se, name
    csv = table.csv_text().splitlines()
    assert csv[0] == "kind,group,state,population,se" and len(csv) == 1 + 8 + 6


@pytest.mark.parametrize("n_batches", [None, 16])
def test_population_errors_are_calibrated(system, model, proposal, n_batches):
    groups = ccg.halves_groups(model.cg_map.cg_names)
    z = []
    for seed in range(24):
        samples = ccg.sample_joint(model, T, 4096, proposal=proposal, generator=gen(200 + seed))
        table = ccg.group_populations(samples, groups, top=4, n_batches=n_batches)
        z += [(p - system.box_population({int(g[1:]): (0.0, math.pi)}, T)) / se
              for g, s, p, se in table.rows("group") if s == "+"]
        z += [(p - _exact_joint(system, s)) / se for _, s, p, se in table.rows("joint")]
    z = np.array(z)
    assert 0.6 < z.std() < 1.5 and abs(z.mean()) < 0.3, (z.mean(), z.std())


def test_ramachandran_groups_pair_phi_and_psi():
    names = ["phi_0", "phi_1", "psi_0", "psi_1"]
    groups = ccg.ramachandran_groups(names)
    assert [g.name for g in groups] == ["phi_0/psi_0", "phi_1/psi_1"]
    assert groups[0].all_labels == ["A", "B", "P", "L", "O"]
    deg = np.radians
    z = np.array([[deg(-65), 0, deg(-40), 0], [deg(-120), 0, deg(130), 0],
                  [deg(-70), 0, deg(150), 0], [deg(60), 0, deg(40), 0],
                  [deg(60), 0, deg(-170), 0], [deg(-120), 0, deg(-170), 0]])
    assert groups[0].assign(z).tolist() == [0, 1, 2, 3, 4, 1]  # beta wraps through psi = 180
    atoms = [(0, 1, 2, 3), (3, 4, 5, 6), (1, 2, 3, 4), (4, 5, 6, 7)]  # pair by the C-alpha
    assert [g.name for g in ccg.ramachandran_groups(names, atoms)] == ["phi_0/psi_0",
                                                                         "phi_1/psi_1"]
    assert ccg.ramachandran_groups(["phi", "psi"])[0].name == "phi/psi"
    with pytest.raises(ValueError, match="No \\(phi, psi\\) pair"):
        ccg.ramachandran_groups(["z0", "z1"])


def test_training_with_the_product_proposal_checkpoints_its_histograms(tmp_path):
    from ccg.training.trainer import read_checkpoint
    config = RunConfig.from_dict({
        "system": {"name": "torus-wells", "options": {"n_dims": 4}}, "map": {"cg": "split"},
        "flow": {"n_layers": 2, "hidden": 8, "n_blocks": 1, "n_bins": 4},
        "train": {"z_proposal": "product", "steps": 105, "n_z": 16, "samples_per_z": 4}})
    torch.manual_seed(0)
    _, summary = ccg.train(config, tmp_path)
    state = read_checkpoint(tmp_path / "checkpoint.pt")["proposal"]
    assert state["n_observed"] == 105 and state["log_mass"].shape == (4, 4, 24)
    assert summary["proposal_capped"] == state["n_capped"] >= 0
    assert bool(torch.isfinite(state["log_mass"]).any()) and float(state["seen"].sum()) > 0
