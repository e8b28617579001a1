"""Soft backbone contacts as conditioner features of torsion maps ([map] contacts).

The pairs are the backbone heavy atoms at least four bonds apart; at the reference structure's
own z the features are its contacts exactly (merge places the reference bonds, angles and
torsions at z, which rebuilds the reference up to a rigid motion); the map's config and a model
file keep them; a non-torsion map refuses the option.
"""

from __future__ import annotations

import math

import mdtraj as md
import numpy as np
import pytest
import torch

import ccg
from ccg.mapping.torsion import CONTACT_D0_NM, TorsionMap, backbone_contact_pairs

SMALL_FLOW = {"n_layers": 2, "hidden": 16, "n_blocks": 1, "n_bins": 4}


def _config(**map_options) -> ccg.RunConfig:
    return ccg.RunConfig.from_dict({"system": {"name": "alanine-dipeptide"},
                                    "map": {"cg": "phi-psi", **map_options},
                                    "flow": SMALL_FLOW, "train": {"steps": 1}})


@pytest.fixture(scope="module")
def model() -> ccg.BackmappingModel:
    return ccg.build_model(_config(contacts=True)).double()


def _bond_distance(topology, a: int, b: int) -> int:
    graph = {atom.index: set() for atom in topology.atoms}
    for x, y in topology.bonds:
        graph[x.index].add(y.index)
        graph[y.index].add(x.index)
    seen, frontier, n = {a}, {a}, 0
    while b not in frontier:
        frontier = {c for f in frontier for c in graph[f]} - seen
        seen |= frontier
        n += 1
    return n


def test_pairs_are_backbone_heavy_atoms_four_or_more_bonds_apart(model):
    top = model.system.topology
    pairs = backbone_contact_pairs(top)
    assert len(pairs) == 15 and len(set(pairs)) == 15
    atoms = list(top.atoms)
    for a, b in pairs:
        assert a < b
        assert atoms[a].element.symbol != "H" and atoms[b].element.symbol != "H"
        assert _bond_distance(top, a, b) >= 4
    # every other pair of those atoms is closer than four bonds
    chosen = sorted({a for p in pairs for a in p})
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            assert ((a, b) in pairs) == (_bond_distance(top, a, b) >= 4)


def test_features_at_the_reference_z_are_the_reference_contacts(model):
    cg_map = model.cg_map
    ref = torch.as_tensor(model.system.reference_positions, dtype=torch.float64)[None]
    z, _, _ = cg_map.split(ref)
    feats = cg_map.cg_features(z)
    pairs = np.array(cg_map.contact_pairs)
    traj = md.Trajectory(ref.numpy().astype(np.float32), model.system.topology)
    d = md.compute_distances(traj, pairs)[0].astype(np.float64)
    expected = 1.0 / (1.0 + (d / CONTACT_D0_NM) ** 6)
    assert feats.shape == (1, 2 * cg_map.cg_dim + len(pairs))
    assert np.allclose(feats[0, : 2 * cg_map.cg_dim].numpy(),
                       torch.stack([torch.cos(z[0]), torch.sin(z[0])], -1).reshape(-1).numpy())
    assert np.allclose(feats[0, 2 * cg_map.cg_dim:].numpy(), expected, atol=1e-6)
    assert model.flow.context_dim == 2 * cg_map.cg_dim + len(pairs) + 1


def test_features_follow_z_smoothly_and_in_range(model):
    z = torch.linspace(-math.pi, math.pi, 64, dtype=torch.float64)[:, None].repeat(1, 2)
    feats = model.cg_map.cg_features(z)[:, 4:]
    assert bool(((feats > 0) & (feats < 1)).all())
    assert float(feats.std(0).max()) > 0.01  # some contact changes with (phi, psi)
    z.requires_grad_(True)
    model.cg_map.cg_features(z)[:, 4:].sum().backward()
    assert bool(torch.isfinite(z.grad).all())


def test_config_and_model_file_keep_the_pairs(model, tmp_path):
    cg_map = TorsionMap.from_config(model.cg_map.config(), model.system.topology)
    assert cg_map.contact_pairs == model.cg_map.contact_pairs
    path = tmp_path / "model.pt"
    ccg.save_model(path, model)
    loaded = ccg.load_model(path).double()
    z = torch.rand(8, 2, dtype=torch.float64) * 2 * math.pi - math.pi
    assert torch.allclose(loaded.cg_map.cg_features(z), model.cg_map.cg_features(z))


def test_plain_map_has_no_contacts_and_bad_pairs_raise(model):
    plain = ccg.build_model(_config())
    assert plain.cg_map.contact_pairs == [] and plain.cg_map.cg_feature_dim == 4
    with pytest.raises(ValueError, match="contact_pairs"):
        TorsionMap.from_config({**model.cg_map.config(), "contact_pairs": [[0, 0]]},
                               model.system.topology)


def test_contacts_on_a_non_torsion_map_is_a_config_error():
    config = ccg.RunConfig.from_dict({"system": {"name": "double-well"},
                                      "map": {"cg": "split", "contacts": True},
                                      "train": {"steps": 1}})
    with pytest.raises(ccg.ConfigError, match="contacts needs a torsion map"):
        ccg.build_model(config)


@pytest.mark.parametrize("cg", ["phi-psi+contacts", "backbone"])
def test_cached_feature_jacobian_gives_the_same_fit(cg):
    # the fit keeps each point's features and their Jacobian (forward-mode autograd) instead
    # of differentiating the features at every step: the same observables, loss and gradients
    from ccg.free_energy.cg_model import FreeEnergyModel
    from ccg.free_energy.fit import FitConfig, ObservableSet, multimodal_loss

    name, _, extra = cg.partition("+")
    built = ccg.build_model(_config(cg=name, **({"contacts": True} if extra else {})))
    cg_map = built.double().cg_map
    torch.manual_seed(0)
    f_model = FreeEnergyModel(cg_map, t_ref=300.0, t_range=(300.0, 600.0), hidden=16,
                              n_layers=2, n_members=3).double()
    x = torch.as_tensor(built.system.reference_positions, dtype=torch.float64)
    z0 = cg_map.coarse_grain(x[None])
    z = z0 + 0.05 * torch.randn(24, z0.shape[1], dtype=torch.float64)
    feats, jac = f_model.feature_jacobian(z)
    assert jac.shape == (*feats.shape, z.shape[1])
    full = torch.autograd.functional.jacobian(cg_map.cg_features, z)  # [B, F, B, d]
    torch.testing.assert_close(jac, torch.stack([full[b, :, b] for b in range(24)]),
                               rtol=1e-12, atol=1e-12)
    t = torch.linspace(300.0, 600.0, 24, dtype=torch.float64)
    for members in (False, True):
        direct = f_model.observables(z, t, members=members)
        cached = f_model.observables_of_features(feats, jac, t, members=members)
        for key, value in direct.items():
            torch.testing.assert_close(cached[key], value, rtol=1e-12, atol=1e-12)
    ones, zero = torch.ones(24, dtype=torch.float64), torch.zeros(24, dtype=torch.float64)
    data = ObservableSet(z=z, temperature_k=t, beta_f=zero, beta_f_err=ones,
                         mean_force=torch.zeros_like(z), mean_force_err=torch.ones_like(z),
                         mean_energy=zero, mean_energy_err=ones, ess=ones)
    grads = []
    for features in (None, (feats, jac)):
        f_model.zero_grad()
        loss, _ = multimodal_loss(f_model, data, FitConfig(), torch.arange(0, 24, 2),
                                  features=features)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in f_model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-12, atol=0)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_a_fit_without_room_for_the_cache_gives_the_same_model(model, monkeypatch):
    # above FEATURE_CACHE_ELEMENTS the fit differentiates the features at every step instead
    from ccg.free_energy import fit
    from ccg.free_energy.cg_model import FreeEnergyModel

    gen = torch.Generator().manual_seed(1)
    z = (torch.rand(40, 2, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    t = torch.full((40,), 300.0, dtype=torch.float64)
    ones = torch.ones(40, dtype=torch.float64)
    data = fit.ObservableSet(z=z, temperature_k=t, beta_f=torch.cos(z).sum(1), beta_f_err=ones,
                             mean_force=torch.sin(z), mean_force_err=torch.ones_like(z),
                             mean_energy=ones, mean_energy_err=ones, ess=ones)
    fitted = []
    for budget in (fit.FEATURE_CACHE_ELEMENTS, 0):
        monkeypatch.setattr(fit, "FEATURE_CACHE_ELEMENTS", budget)
        torch.manual_seed(0)
        f_model = FreeEnergyModel(model.cg_map, t_ref=300.0, t_range=(300.0, 600.0), hidden=16,
                                  n_layers=2, n_members=2).double()
        fit.fit_free_energy_model(f_model, data, fit.FitConfig(steps=20))
        fitted.append(torch.cat([p.detach().flatten() for p in f_model.parameters()]))
    torch.testing.assert_close(fitted[0], fitted[1], rtol=1e-9, atol=1e-11)
