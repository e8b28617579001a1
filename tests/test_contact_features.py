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
