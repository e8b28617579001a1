"""`ccg states` and `ccg free-energy --project` through `ccg.cli.main`, as a user runs them.

Tiny untrained models stand in for trained ones (a 4-torsion torus-wells model, and the alanine
dipeptide's (phi, psi) for the Ramachandran path): these tests are about the commands, their
files and their refusals; accuracy is tests/test_manydim.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ccg
from ccg import RunConfig, build_model
from ccg.cli import main
from ccg.io.model_file import save_model

TINY_FLOW = {"n_layers": 2, "hidden": 8, "n_blocks": 1, "n_bins": 4}
FAST = ["--joint-samples", "4096", "--pilot-samples", "1024", "--no-progress", "--threads", "1"]


def _save(tmp_path_factory, system: dict, cg: str, name: str):
    torch.manual_seed(0)
    config = RunConfig.from_dict({"system": system, "map": {"cg": cg}, "flow": TINY_FLOW,
                                  "train": {"steps": 1, "t_min": 300.0, "t_max": 600.0}})
    path = tmp_path_factory.mktemp(name) / "model.pt"
    save_model(path, build_model(config), run_config=config.to_dict())
    return path


@pytest.fixture(scope="module")
def wells_model(tmp_path_factory):
    return _save(tmp_path_factory, {"name": "torus-wells", "options": {"n_dims": 4}}, "split",
                 "wells")


@pytest.fixture(scope="module")
def ala2_model(tmp_path_factory):
    return _save(tmp_path_factory, {"name": "alanine-dipeptide"}, "phi-psi", "ala2")


def _error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"ccg {command}: error: "), err
    return err[-1]


def test_states_writes_npz_csv_and_panels_and_refuses_to_overwrite(wells_model, tmp_path,
                                                                   capsys):
    out, plot = tmp_path / "states.npz", tmp_path / "panels.png"
    args = ["states", str(wells_model), "--temperature", "300", "--out", str(out), "--plot",
            str(plot), "--top", "5", *FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "joint ESS" in printed and "z0: + " in printed and "(2 panels)" in printed
    data = np.load(out)
    assert list(data["kind"]).count("joint") == 5 and list(data["kind"]).count("group") == 8
    groups = data["population"][data["kind"] == "group"].reshape(4, 2)
    np.testing.assert_allclose(groups.sum(1), 1.0)
    assert float(data["joint_ess"]) > 0 and float(data["temperature_k"]) == 300.0
    csv = (tmp_path / "states.csv").read_text().splitlines()
    assert csv[0] == "kind,group,state,population,se" and len(csv) == 14
    assert plot.stat().st_size > 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert main(args) == 2
    assert "exists already" in _error(capsys, "states")
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--scheme", "ramachandran"], "No (phi, psi) pair"),
    (["--joint-samples", "1"], "--joint-samples must be >= 2"),
    (["--csv", "{out}"], "unsupported extension"),
    (["--top", "-1"], "--top must be >= 0"),
    (["--pilot-sharpness", "0"], "--pilot-sharpness must be in (0, 1]"),
    (["--pilot-cooperative", "1"], "--pilot-cooperative must be in [0, 1)"),
    (["--ais-steps", "-1"], "--ais-steps must be >= 0"),
    (["--pilot-states", "-1"], "--pilot-states must be >= 0"),
])
def test_states_refusals_write_nothing(wells_model, tmp_path, capsys, extra, message):
    out = tmp_path / "states.npz"
    extra = [e.replace("{out}", str(out)) for e in extra]
    rc = main(["states", str(wells_model), "--temperature", "300", "--out", str(out),
               *FAST, *extra])
    assert rc == 2 and message in _error(capsys, "states")
    assert list(tmp_path.iterdir()) == []


def test_states_with_a_cooperative_pilot_and_ais(wells_model, tmp_path, capsys, monkeypatch):
    seen = []
    pilot, joint = ccg.pilot_proposal, ccg.sample_joint
    monkeypatch.setattr(ccg, "pilot_proposal",
                        lambda *a, **k: seen.append(k["cooperative"]) or pilot(*a, **k))
    monkeypatch.setattr(ccg, "sample_joint",
                        lambda *a, **k: seen.append(k["ais_steps"]) or joint(*a, **k))
    out = tmp_path / "states.npz"
    assert main(["states", str(wells_model), "--temperature", "300", "--out", str(out), *FAST,
                 "--pilot-cooperative", "0.3", "--ais-steps", "2"]) == 0
    assert seen == [0.3, 2] and out.exists()
    assert "joint ESS" in capsys.readouterr().out


def test_states_with_a_joint_state_mixture(wells_model, tmp_path, capsys, monkeypatch):
    seen = []
    fit = ccg.state_mixture_proposal
    monkeypatch.setattr(ccg, "state_mixture_proposal",
                        lambda *a, **k: seen.append(k["rounds"]) or fit(*a, **k))
    out = tmp_path / "states.npz"
    assert main(["states", str(wells_model), "--temperature", "300", "--out", str(out), *FAST,
                 "--pilot-states", "1"]) == 0
    assert seen == [1] and out.exists()
    printed = capsys.readouterr().out
    assert "joint ESS" in printed and "Pareto k" in printed
    monkeypatch.setattr(ccg.JointSamples, "pareto_k", property(lambda self: 0.9))
    assert main(["states", str(wells_model), "--temperature", "300", "--out", str(out), *FAST,
                 "--overwrite"]) == 0
    assert "warning: Pareto k 0.90 >= 0.7" in capsys.readouterr().out
    smoothed = []
    monkeypatch.setattr(ccg.JointSamples, "smoothed",
                        lambda self: smoothed.append(len(self)) or self)
    assert main(["states", str(wells_model), "--temperature", "300", "--out", str(out), *FAST,
                 "--overwrite", "--psis"]) == 0
    assert smoothed == [4096] and "Pareto-smoothed weights" in capsys.readouterr().out


def test_states_ramachandran_on_a_phi_psi_model(ala2_model, tmp_path, capsys):
    out = tmp_path / "rama.npz"
    assert main(["states", str(ala2_model), "--temperature", "300", "--out", str(out),
                 "--plot", str(tmp_path / "rama.png"), "--grid", "12", *FAST]) == 0
    assert "phi/psi: A " in capsys.readouterr().out
    data = np.load(out)
    labels = list(data["state"][data["kind"] == "group"])
    assert labels == ["A", "B", "P", "L", "O"]
    np.testing.assert_allclose(data["population"][data["kind"] == "group"].sum(), 1.0)


def test_free_energy_project_writes_a_projection(wells_model, tmp_path, capsys, monkeypatch):
    out, plot = tmp_path / "proj.npz", tmp_path / "proj.png"
    pilot, seen = ccg.pilot_proposal, []
    monkeypatch.setattr(ccg, "pilot_proposal",
                        lambda *a, **k: seen.append((k["sharpness"], k["blocks"]))
                        or pilot(*a, **k))
    assert main(["free-energy", str(wells_model), "--temperature", "300", "--project", "z0,2",
                 "--grid", "12", "--out", str(out), "--plot", str(plot), *FAST,
                 "--pilot-sharpness", "0.5", "--pilot-blocks", "residue"]) == 0
    assert seen == [(0.5, "residue")]  # no (phi, psi) names here: residue blocks are 1-D
    assert "F projected onto z0, z2 on 144 bins" in capsys.readouterr().out
    data = np.load(out)
    assert data["F_kT"].shape == (12, 12) and data["grid"].shape == (2, 12)
    assert list(data["names"]) == ["z0", "z2"] and np.nanmin(data["F_kT"]) == 0.0
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("extra, message", [
    (["--project", "z0,z7"], "Unknown CG coordinate 'z7'"),
    (["--project", "z0,z1,z2"], "one or two"),
    (["--project", "z0", "--frames", "cg.csv"], "does not take --frames"),
    ([], "project onto one or two of them instead (--project z0,z1)"),
    (["--project", "z0", "--pilot-sharpness", "1.5"], "--pilot-sharpness must be in (0, 1]"),
])
def test_free_energy_project_refusals(wells_model, tmp_path, capsys, extra, message):
    out = tmp_path / "fes.npz"
    rc = main(["free-energy", str(wells_model), "--temperature", "300", "--out", str(out),
               *FAST, *extra])
    assert rc == 2 and message in _error(capsys, "free-energy")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def other_models(tmp_path_factory, ala2_model):
    """A backbone-bead model (Cartesian CG coordinates) and a CG model file (F_theta)."""
    beads = _save(tmp_path_factory, {"name": "alanine-dipeptide"}, "backbone", "beads")
    model = ccg.load_model(ala2_model)
    cg_model = ccg.FreeEnergyModel(model.cg_map, t_ref=300.0, t_range=(300.0, 600.0),
                                   hidden=8, n_layers=1, n_members=2,
                                   system=model.system).double()
    path = tmp_path_factory.mktemp("cg") / "cg_model.pt"
    ccg.save_cg_model(path, cg_model)
    return {"beads": beads, "cg": path}


@pytest.mark.parametrize("kind, message", [("beads", "Cartesian/linear"),
                                           ("cg", "is a CG model")])
@pytest.mark.parametrize("command", [["states"], ["free-energy", "--project", "0"]])
def test_models_without_joint_samples_are_refused(other_models, tmp_path, capsys, kind,
                                                   message, command):
    rc = main([command[0], str(other_models[kind]), *command[1:], "--temperature", "300",
               "--out", str(tmp_path / "out.npz"), *FAST])
    assert rc == 2 and message in _error(capsys, command[0])
    assert list(tmp_path.iterdir()) == []
