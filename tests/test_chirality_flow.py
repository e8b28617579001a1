"""Backmapped alanine dipeptide keeps the reference (L) chirality when r comes from a flow."""

import pytest
import torch

from ccg import RunConfig, build_model, build_proposal
from ccg.mapping import chirality_signs, dihedral, find_chiral_centers
from ccg.training.losses import ReverseKL
from ccg.training.trainer import Trainer


def _config(cg: str) -> RunConfig:
    config = RunConfig()
    config.map.cg = cg
    config.flow.n_layers, config.flow.hidden = 4, 32
    config.train.steps, config.train.n_z, config.train.samples_per_z = 15, 32, 4
    config.train.lr = 5e-3
    return config.validate()


def _chirality_kept(model, z: torch.Tensor) -> float:
    """Fraction of 10,000 backmapped samples with the reference chirality: the triple-product
    sign at every chiral center, and the sign of every chirality-constrained torsion (for the
    heavy-atom map the first three substituents of CA are CG atoms, so only the placed HA, via
    its constrained torsion, can go wrong)."""
    centers = find_chiral_centers(model.system.topology)
    assert [c.center for c in centers] == [8]  # CA of ALA is the only chiral center
    ref = torch.as_tensor(model.system.reference_positions, dtype=torch.float32)[None]
    want = chirality_signs(ref, centers)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        samples = model.sample(z, torch.full((z.shape[0],), 450.0), generator=gen)
    ok = (chirality_signs(samples.x, centers) == want).all(dim=1)
    constrained = model.cg_map.zmatrix.chiral
    assert constrained, "expected at least one chirality-constrained torsion"
    for row, sign in constrained:
        quad = model.cg_map.zmatrix.rows[row]
        phi = dihedral(*(samples.x[:, a] for a in quad))
        ok &= torch.sign(phi) == sign
    return float(ok.float().mean())


@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "briefly-trained"])
def test_torsion_map_flow_samples_stay_l(tmp_path, trained):
    config = _config("phi-psi")
    torch.manual_seed(0)
    model = build_model(config)
    if trained:
        proposal = build_proposal(config, model)
        trainer = Trainer(model, ReverseKL(model), proposal, config.train, tmp_path,
                          progress=False)
        trainer.run()
        assert trainer.step == 15
    z = (2 * torch.rand(10_000, 2, generator=torch.Generator().manual_seed(1)) - 1) * torch.pi
    assert _chirality_kept(model, z) == 1.0


def test_heavy_atom_map_flow_samples_stay_l():
    config = _config("heavy-atoms")
    torch.manual_seed(0)
    model = build_model(config)
    ref = torch.as_tensor(model.system.reference_positions, dtype=torch.float32)[None]
    noise = 0.01 * torch.randn(10_000, *ref.shape[1:], generator=torch.Generator().manual_seed(2))
    z = model.cg_map.coarse_grain(ref + noise)
    assert _chirality_kept(model, z) == 1.0
