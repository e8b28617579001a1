"""`ccg backmap`: cycle consistency, topology, seeds, clear errors with nothing written."""

from importlib.resources import files

import mdtraj
import numpy as np
import pytest
import torch

from ccg import RunConfig, backmap, build_model
from ccg.cli import main
from ccg.io.model_file import save_model

H5 = str(files("ccg") / "data" / "mdtraj_example_ala2.h5")


def _model(tmp_path, cg):
    config = RunConfig()
    config.map.cg = cg
    config.flow.n_layers, config.flow.hidden = 2, 16
    config.train.steps = 1
    torch.manual_seed(0)
    model = build_model(config)
    path = tmp_path / f"{cg}.pt"
    save_model(path, model)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return {cg: _model(tmp, cg) for cg in ("phi-psi", "heavy-atoms")}


@pytest.mark.parametrize("ext", [".pdb", ".dcd", ".h5", ".xtc"])
def test_torsion_backmap_round_trip(models, tmp_path, ext):
    out = tmp_path / f"atoms{ext}"
    code = main(["backmap", str(models["phi-psi"]), "--cg", H5, "--temperature", "300",
                 "--samples-per-frame", "4", "--out", str(out)])
    assert code == 0
    kwargs = {"top": str(tmp_path / "atoms.pdb")} if ext in (".dcd", ".xtc") else {}
    if kwargs:
        main(["backmap", str(models["phi-psi"]), "--cg", H5, "--temperature", "300",
              "--out", kwargs["top"]])
    traj = mdtraj.load(str(out), **kwargs)
    ref = mdtraj.load(H5)
    assert traj.n_frames == ref.n_frames
    assert [(a.residue.name, a.name) for a in traj.topology.atoms] == [
        (a.residue.name, a.name) for a in ref.topology.atoms]
    for fn in (mdtraj.compute_phi, mdtraj.compute_psi):
        diff = fn(traj)[1] - fn(ref)[1]
        diff = np.abs(np.remainder(diff + np.pi, 2 * np.pi) - np.pi)
        # PDB/DCD keep 1e-3 A, XTC 1e-3 nm: torsions round-trip to that precision; the
        # in-memory frames are exact (test below)
        assert diff.max() < (2e-2 if ext == ".xtc" else 2e-3)
    sidecar = np.loadtxt(out.with_name(out.name + ".csv"), delimiter=",", skiprows=1)
    assert sidecar.shape == (ref.n_frames, 3) and np.isfinite(sidecar).all()


def test_in_memory_frames_are_exact_and_seeded(models):
    from ccg import load_model
    from ccg.io.trajectories import read_cg_frames

    for cg, tol in (("phi-psi", 1e-5), ("heavy-atoms", 1e-4)):
        model = load_model(models[cg])
        z = read_cg_frames(H5, model.cg_map, model.system)[:20].float()
        for select, k in (("weighted", 8), ("best", 8), ("all", 3)):
            a = list(backmap(model, z, 450.0, samples_per_frame=k, select=select,
                                    seed=3, chunk_frames=7))
            b = list(backmap(model, z, 450.0, samples_per_frame=k, select=select,
                                    seed=3, chunk_frames=7))
            xyz = np.concatenate([c["xyz"] for c in a])
            frames = np.concatenate([c["frame"] for c in a])
            assert len(xyz) == (20 * k if select == "all" else 20)
            np.testing.assert_array_equal(xyz, np.concatenate([c["xyz"] for c in b]))
            back = model.cg_map.coarse_grain(torch.as_tensor(xyz))
            diff = back - z[frames]
            if cg == "phi-psi":
                diff = torch.remainder(diff + torch.pi, 2 * torch.pi) - torch.pi
            assert diff.abs().max() < tol


def test_bead_backmap_from_cg_atoms_only(models, tmp_path):
    ref = mdtraj.load(H5)[:10]
    heavy = [a.index for a in ref.topology.atoms if a.element.symbol != "H"]
    cg_file = tmp_path / "heavy.pdb"
    ref.atom_slice(heavy).save_pdb(str(cg_file))
    out = tmp_path / "atoms.pdb"
    assert main(["backmap", str(models["heavy-atoms"]), "--cg", str(cg_file), "--temperature",
                 "300", "--out", str(out)]) == 0
    traj = mdtraj.load(str(out))
    assert traj.n_atoms == 22
    np.testing.assert_allclose(traj.xyz[:, heavy], ref.xyz[:, heavy], atol=2e-4)


def test_bad_inputs_write_nothing(models, tmp_path, capsys):
    def run(*extra, model="phi-psi", out="atoms.pdb"):
        return main(["backmap", str(models[model]), "--temperature", "300",
                     "--out", str(tmp_path / out), *extra])

    ref = mdtraj.load(H5)[:3]
    wrong = tmp_path / "wrong.pdb"
    ref.atom_slice(range(10)).save_pdb(str(wrong))
    dcd = tmp_path / "frames.dcd"
    ref.save_dcd(str(dcd))
    nan_table = tmp_path / "nan.csv"
    nan_table.write_text("0.1,0.2\nnan,0.3\n")
    cases = [
        run("--cg", str(wrong), model="heavy-atoms"),            # CG atoms do not match
        run("--cg", str(dcd)),                                    # missing topology
        run("--cg", str(tmp_path / "missing.h5")),                # missing file
        run("--cg", str(nan_table)),                              # NaN coordinates
        run("--cg", H5, out="no_such_dir/atoms.pdb"),             # output folder missing
        run("--cg", H5, "--samples-per-frame", "0"),              # bad K
    ]
    assert cases == [2] * len(cases)
    err = capsys.readouterr().err
    for fragment in ("do not match the model's CG atoms", "--top", "not found", "NaN",
                     "does not exist", "--samples-per-frame"):
        assert fragment in err
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["frames.dcd", "nan.csv", "wrong.pdb"]


def test_degrees_table(models, tmp_path, capsys):
    table = tmp_path / "z.csv"
    table.write_text("-80,150\n-70,-40\n")
    out = tmp_path / "atoms.pdb"
    assert main(["backmap", str(models["phi-psi"]), "--cg", str(table), "--degrees",
                 "--temperature", "300", "--out", str(out), "--no-progress"]) == 0
    assert "%|" not in capsys.readouterr().err
    traj = mdtraj.load(str(out))
    np.testing.assert_allclose(np.degrees(mdtraj.compute_phi(traj)[1][:, 0]), [-80, -70],
                               atol=0.2)


@pytest.mark.parametrize("cg", ["phi-psi", "heavy-atoms"])
def test_minimize_keeps_cg_and_lowers_energy(models, tmp_path, cg):
    from ccg import load_model
    from ccg.backmapping import minimize_keeping_cg
    from ccg.io.trajectories import read_cg_frames

    model = load_model(models[cg])
    z = read_cg_frames(H5, model.cg_map, model.system)[:3].float()
    (chunk,) = backmap(model, z, 300.0, seed=1)
    relaxed = minimize_keeping_cg(model, chunk["xyz"])
    before = model.system.energy(torch.as_tensor(chunk["xyz"], dtype=torch.float64))
    after = model.system.energy(torch.as_tensor(relaxed, dtype=torch.float64))
    assert (after < before).all()
    diff = model.cg_map.coarse_grain(torch.as_tensor(relaxed)) - z
    if cg == "phi-psi":
        diff = torch.remainder(diff + torch.pi, 2 * torch.pi) - torch.pi
    assert diff.abs().max() < 1e-4
    out = tmp_path / "min.pdb"
    assert main(["backmap", str(models[cg]), "--cg", H5, "--temperature", "300", "--minimize",
                 "--chunk", "50", "--out", str(out)]) == 0
