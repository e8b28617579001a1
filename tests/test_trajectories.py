"""Reading CG frames from trajectories (bead and torsion maps), with clear errors."""

from importlib.resources import files

import mdtraj
import numpy as np
import pytest
import torch

from ccg.io.trajectories import read_cg_frames
from ccg.mapping import AtomSubsetMap, TorsionMap
from ccg.systems import alanine_dipeptide

H5 = str(files("ccg") / "data" / "mdtraj_example_ala2.h5")


@pytest.fixture(scope="module")
def system():
    return alanine_dipeptide()


def test_atomistic_frames_give_phi_psi(system):
    cg_map = TorsionMap.phi_psi(system.topology, torch.as_tensor(system.reference_positions))
    z = read_cg_frames(H5, cg_map, system)
    traj = mdtraj.load(H5)
    phi = mdtraj.compute_phi(traj)[1][:, 0]
    assert z.shape == (traj.n_frames, 2)
    np.testing.assert_allclose(z[:, 0].numpy(), phi, atol=1e-5)


def test_cg_only_frames_match_by_name(system, tmp_path):
    cg_map = AtomSubsetMap(system.topology, "heavy",
                           torch.as_tensor(system.reference_positions))
    traj = mdtraj.load(H5)
    heavy = traj.atom_slice(cg_map.cg_atom_indices)
    path = tmp_path / "heavy.pdb"
    heavy[:5].save_pdb(str(path))
    z = read_cg_frames(path, cg_map, system)
    full = read_cg_frames(H5, cg_map, system)[:5]
    torch.testing.assert_close(z, full, atol=2e-4, rtol=0)  # PDB keeps 3 decimals in Å
    wrong = traj.atom_slice(cg_map.cg_atom_indices[:-1])[:2]
    bad = tmp_path / "wrong.pdb"
    wrong.save_pdb(str(bad))
    with pytest.raises(ValueError, match="do not match the model's CG atoms"):
        read_cg_frames(bad, cg_map, system)


def test_bad_files(system, tmp_path):
    cg_map = TorsionMap.phi_psi(system.topology, torch.as_tensor(system.reference_positions))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_cg_frames(tmp_path / "none.pdb", cg_map, system)
    dcd = tmp_path / "a.dcd"
    mdtraj.load(H5)[:2].save_dcd(str(dcd))
    with pytest.raises(ValueError, match="--top"):
        read_cg_frames(dcd, cg_map, system)
    junk = tmp_path / "junk.pdb"
    junk.write_text("this is not a pdb\n")
    with pytest.raises(ValueError):
        read_cg_frames(junk, cg_map, system)
