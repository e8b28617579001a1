"""`ccg train --cg heavy-atoms` works with no input but the force field."""

import numpy as np
import torch

from ccg import load_model
from ccg.cli import main
from ccg.systems import alanine_dipeptide
from ccg.training.md_proposal import langevin_frames


def test_langevin_frames_are_thermal_and_seeded():
    system = alanine_dipeptide()
    a = langevin_frames(system, 600.0, n_frames=50, stride=20, seed=1)
    b = langevin_frames(system, 600.0, n_frames=50, stride=20, seed=1)
    assert a.shape == (50, 22, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    energies = system.energy(torch.as_tensor(a)).numpy()
    # equipartition bound: 60 harmonic-ish degrees of freedom at 600 K give ~150 kJ/mol of
    # potential energy above the minimum (-x); frames must be hot but not exploding
    minimum = float(system.energy(torch.as_tensor(system.reference_positions)[None])[0])
    assert 50.0 < np.mean(energies) - minimum < 400.0


def test_train_heavy_atoms_without_frames(tmp_path, capsys):
    code = main(["train", "--cg", "heavy-atoms", "--steps", "2", "--n-z", "8",
                 "--samples-per-z", "2", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    assert "Langevin run" in capsys.readouterr().out
    model = load_model(tmp_path / "model.pt")
    assert model.cg_dim == 30 and model.cg_map.cg_atom_indices == [1, 4, 5, 6, 8, 10, 14, 15,
                                                                    16, 18]
