"""The cycle end to end on the double well, resume, and the CG-model commands."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from conftest import rewrite_model_file
from test_training import CONVERGENCE_FLOW, CONVERGENCE_TRAIN, _config, _trainer

from ccg import RunConfig, build_proposal
from ccg.cli import main
from ccg.constants import KB_KJMOL_PER_K
from ccg.cycle import Cycle, CycleConfig, loop
from ccg.errors import Interrupted
from ccg.free_energy.cg_model import FreeEnergyModel
from ccg.io.cg_model_file import file_kind, load_cg_model, save_cg_model
from ccg.io.model_file import ModelFileError, load_model


def _small_cycle(iterations: int) -> CycleConfig:
    return CycleConfig(temperatures=[300.0, 600.0], iterations=iterations,
                       points_per_temperature=64, samples_per_point=256, finetune_steps=20,
                       n_z=32, samples_per_z=8, langevin_steps=200, langevin_walkers=16,
                       fit_steps=800, hidden=64, n_layers=2, n_members=2)


@pytest.fixture(scope="module")
def double_well_flow(tmp_path_factory):
    config = _config("double-well", CONVERGENCE_FLOW, steps=200, **CONVERGENCE_TRAIN)
    trainer = _trainer(config, tmp_path_factory.mktemp("init"))
    trainer.run()
    trainer.model.flow.eval()
    return trainer.model, config


# Measured (1 thread, 2 busy cores): two iterations ~15 s; max |F_theta - F| over F < 4 kT
# 0.02-0.04 kT at 300-600 K including 400 and 450 K, which no estimate used.
def test_cycle_recovers_the_double_well_free_energy_and_resumes(double_well_flow, tmp_path):
    model, config = double_well_flow
    out = tmp_path / "cycle"
    explore = build_proposal(config, model)
    cycle = Cycle(model, explore, _small_cycle(1), out, progress=False)
    cycle.run()
    assert cycle.iteration == 1 and len(cycle.data) == 128
    for name in ("flow.pt", "cg_model.pt", "cycle_state.pt", "metrics.json", "cycle.png"):
        assert (out / name).is_file(), name
    # resume continues at iteration 2 with the data, evaluations and generator it had
    resumed = Cycle.resume(out, explore, _small_cycle(2), progress=False)
    assert resumed.iteration == 1 and resumed.evaluations == cycle.evaluations
    torch.testing.assert_close(resumed.data.z, cycle.data.z)
    resumed.run()
    assert resumed.iteration == 2 and len(resumed.data) == 256
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    rows = json.loads(text)["iterations"]
    assert rows[0]["delta_f_kt"] is None  # no previous fit to compare with
    assert rows[0]["held_out"] == {}  # nor a fitted F_theta to score
    # iteration 2 scores iteration 1's F_theta on the new estimates, at both temperatures
    assert set(rows[1]["held_out"]) == {"300.0", "600.0"}
    assert all(s["n_points"] > 10 and s["chi2_values"] > 0 for s in rows[1]["held_out"].values())
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[1]["energy_evaluations"] > rows[0]["energy_evaluations"]
    assert math.isfinite(rows[1]["delta_f_kt"]) and rows[1]["median_ess"] > 0.9
    # F_theta matches the exact free energy, also at temperatures never estimated
    cg_model, system = load_cg_model(out / "cg_model.pt"), model.system
    low, high = system.cg_bounds
    z = torch.linspace(low[0], high[0], 121, dtype=torch.float64)[:, None]
    for t in (300.0, 400.0, 450.0, 600.0):
        f = system.free_energy(z, t) / (KB_KJMOL_PER_K * t)
        populated = f - f.min() < 4.0
        obs = cg_model.observables(z, t)
        err = (obs["beta_f"] - f)[populated]
        err = err - err.mean()
        assert float(err.abs().max()) <= 0.05, (t, float(err.abs().max()))
        u_err = (obs["mean_energy_kjmol"] - system.mean_energy(z, t))[populated] / (
            KB_KJMOL_PER_K * t)
        assert float(u_err.abs().max()) <= 0.3, (t, float(u_err.abs().max()))


def test_cycle_fine_tunes_with_the_energy_cut_the_flow_was_trained_with(
        double_well_flow, tmp_path, monkeypatch):
    # a lower cut than the flow's (training raises it for molecules with many fast
    # coordinates) would soften physical energies and bias the fine-tuning
    model, config = double_well_flow
    model = copy.deepcopy(model)
    model.metrics = {"energy_cut_kt": 1234.0}  # as training records it, after any raise
    seen, real = [], loop.ReverseKL

    def spy(m, *, energy_cut):
        seen.append(energy_cut)
        return real(m, energy_cut=energy_cut)

    monkeypatch.setattr(loop, "ReverseKL", spy)
    settings = dataclasses.replace(_small_cycle(1), finetune_steps=2)
    cycle = Cycle(model, build_proposal(config, model), settings, tmp_path / "a", progress=False)
    cycle.finetune(torch.zeros(8, 1, dtype=torch.float64))
    assert seen == [1234.0]
    cycle.save()  # kept in flow.pt, which --resume reads
    assert load_model(tmp_path / "a" / "flow.pt").metrics["energy_cut_kt"] == 1234.0
    model.metrics, model.run_config = {}, {"train": {"energy_cut": 321.0}}
    assert Cycle(model, cycle.explore, settings, tmp_path / "b").energy_cut == 321.0


def test_a_stop_during_estimation_does_not_wait_for_the_iteration(
        double_well_flow, tmp_path, monkeypatch):
    # estimation takes minutes on a peptide: Ctrl-C is honoured between
    # its blocks, before the refit and the save, and the last saved state is untouched
    model, config = double_well_flow
    model = copy.deepcopy(model)
    calls, real = [], loop.estimate_free_energy

    def spy(*args, **kwargs):
        calls.append(kwargs["n_samples"])
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, mid-estimation
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "estimate_free_energy", spy)
    settings = dataclasses.replace(_small_cycle(1), samples_per_point=1024, finetune_steps=2)
    cycle = Cycle(model, build_proposal(config, model), settings, tmp_path, progress=False)
    handler = signal.getsignal(signal.SIGINT)  # (pytest-xdist workers ignore SIGINT)
    with pytest.raises(Interrupted) as stopped:
        cycle.run()
    assert stopped.value.signum == signal.SIGINT and stopped.value.checkpoint is None
    assert len(calls) == 1  # of 8 blocks (2 temperatures x 64 points / 16 per block)
    assert cycle.iteration == 0 and not (tmp_path / "cycle_state.pt").exists()
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is restored


def test_a_stop_during_the_langevin_proposals_does_not_wait_for_the_iteration(
        double_well_flow, tmp_path, monkeypatch):
    model, config = double_well_flow
    model = copy.deepcopy(model)
    calls, estimates = [], []
    real_simulate, real_estimate = loop.simulate, loop.estimate_free_energy

    def simulate(*args, **kwargs):  # the proposals of iteration 2 (F_theta exists)
        calls.append(1)
        os.kill(os.getpid(), signal.SIGINT)
        return real_simulate(*args, **kwargs)

    def estimate(*args, **kwargs):
        estimates.append(1)
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr(loop, "simulate", simulate)
    monkeypatch.setattr(loop, "estimate_free_energy", estimate)
    settings = dataclasses.replace(_small_cycle(2), finetune_steps=2, fit_steps=50)
    cycle = Cycle(model, build_proposal(config, model), settings, tmp_path, progress=False)
    with pytest.raises(Interrupted) as stopped:
        cycle.run()
    assert stopped.value.checkpoint == tmp_path / "cycle_state.pt"  # iteration 1's
    assert cycle.iteration == 1 and len(calls) == 1  # of 2 temperatures
    assert len(estimates) == 2  # iteration 1's, none in iteration 2


# Measured (1 thread, the other core busy): flow 8 s, two iterations 13 s; on exact samples
# z ~ p(z | T) the RMSE of beta F_theta is 0.02-0.03 kT and the mean force is within 2.5 %
# (RMS, relative) at 300, 450 (never estimated) and 600 K.
def test_cycle_in_three_dimensions_recovers_the_exact_free_energy(tmp_path):
    """The cycle on a 3-D torus (`torus-wells`, one Gaussian fast coordinate per angle): F_theta
    fitted from values, mean forces and <U>_z at z from CG Langevin on the torus and from the
    exploration proposal; checked against the exact F, its gradient and the exact populations
    of each angle's two wells, also at a temperature never estimated."""
    config = RunConfig.from_dict({
        "system": {"name": "torus-wells", "options": {"n_dims": 3}}, "map": {"cg": "split"},
        "flow": CONVERGENCE_FLOW,
        "train": {"t_min": 300.0, "t_max": 600.0, "dtype": "float64", "steps": 200,
                  **CONVERGENCE_TRAIN},
    }).validate()
    trainer = _trainer(config, tmp_path / "init")
    trainer.run()
    model = trainer.model
    model.flow.eval()
    cycle = Cycle(model, build_proposal(config, model), _small_cycle(2), tmp_path / "cycle",
                  progress=False)
    cycle.run()
    rows = cycle.metrics
    assert len(rows) == 2 and all(r["median_ess"] > 0.8 for r in rows)
    # the second iteration's points came half from Langevin on the first F_theta, which moved
    assert all(math.isfinite(a) and a > 0.5 for a in rows[1]["langevin_acceptance"].values())
    system, generator = model.system, torch.Generator().manual_seed(1)
    for t in (300.0, 450.0, 600.0):
        z = system.sample(4096, t, generator)[:, :3]
        obs = cycle.cg_model.observables(z, t)
        error = obs["beta_f"] - system.free_energy(z, t) / (KB_KJMOL_PER_K * t)
        assert float((error - error.mean()).pow(2).mean().sqrt()) < 0.06, t
        force = system.mean_force(z, t)
        relative = (obs["mean_force"] - force).pow(2).mean().sqrt() / force.pow(2).mean().sqrt()
        assert float(relative) < 0.05, t
        # populations of each angle's z > 0 well under exp(-beta F_theta), by reweighting the
        # exact samples, against the exact ones
        weights = torch.softmax(-(error - error.mean()), 0)
        for i in range(3):
            exact = system.box_population({i: (0.0, math.pi)}, t)
            assert abs(float(weights[z[:, i] > 0].sum()) - exact) < 0.02, (t, i)


def test_cycle_config_errors(double_well_flow, tmp_path):
    model, config = double_well_flow
    with pytest.raises(ValueError, match="outside the flow's range"):
        Cycle(model, build_proposal(config, model), CycleConfig(temperatures=[250.0]), tmp_path)
    with pytest.raises(ValueError, match="explore_fraction"):
        CycleConfig(explore_fraction=1.5).validate()
    with pytest.raises(ValueError, match="samples_per_point"):
        CycleConfig(samples_per_point=1).validate()
    with pytest.raises(FileNotFoundError, match="resume"):
        Cycle.resume(tmp_path / "nothing", build_proposal(config, model), CycleConfig())


@pytest.fixture(scope="module")
def torsion_cg_model(tmp_path_factory):
    """A (phi, psi) F_theta for alanine dipeptide (untrained weights), saved to a file."""
    from ccg.mapping import TorsionMap
    from ccg.systems import alanine_dipeptide

    system = alanine_dipeptide()
    ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    cg_map = TorsionMap.phi_psi(system.topology, ref)
    torch.manual_seed(0)
    model = FreeEnergyModel(cg_map, t_ref=300.0, t_range=(300.0, 600.0), hidden=16, n_layers=2,
                            n_members=2).double()
    path = tmp_path_factory.mktemp("cg") / "cg_model.pt"
    save_cg_model(path, model, system, metrics={"note": "test"})
    return path, model


def test_cg_model_file_round_trip_and_kind(torsion_cg_model, tmp_path):
    path, model = torsion_cg_model
    assert file_kind(path) == "cg"
    loaded = load_cg_model(path)
    z = torch.tensor([[-1.4, 1.2], [1.0, -0.5]], dtype=torch.float64)
    torch.testing.assert_close(loaded.beta_free_energy(z, 350.0), model.beta_free_energy(z, 350.0))
    bad = tmp_path / "v99.pt"
    rewrite_model_file(path, bad, lambda header, _: header.update(format_version=99))
    with pytest.raises(ModelFileError, match="version 99"):
        load_cg_model(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_cg_model(garbage)


def test_free_energy_command_evaluates_a_cg_model(torsion_cg_model, tmp_path, capsys):
    path, model = torsion_cg_model
    out = tmp_path / "fes.npz"
    assert main(["free-energy", str(path), "--temperature", "450", "--grid", "12",
                 "--out", str(out), "--plot", str(tmp_path / "fes.png")]) == 0
    data = np.load(out)
    assert data["F_kT"].shape == (12, 12) and data["grid"].shape == (2, 12)
    assert data["mean_force"].shape == (12, 12, 2) and float(data["F_kT"].min()) == 0.0
    assert data["F_kT_err"].shape == (12, 12) and np.isnan(data["ess"]).all()
    z = torch.as_tensor(np.stack(np.meshgrid(*data["grid"], indexing="ij"), -1).reshape(-1, 2))
    expected = model.beta_free_energy(z, 450.0).detach().numpy().reshape(12, 12)
    np.testing.assert_allclose(data["F_kT"], expected - expected.min(), atol=1e-10)
    assert (tmp_path / "fes.png").is_file()
    assert main(["free-energy", str(path), "--temperature", "0", "--out",
                 str(tmp_path / "bad.npz")]) == 2
    assert "> 0 K" in capsys.readouterr().err and not (tmp_path / "bad.npz").exists()
    with pytest.warns(UserWarning, match="outside"):
        main(["free-energy", str(path), "--temperature", "800", "--grid", "6",
              "--out", str(tmp_path / "hot.npz")])


def test_simulate_writes_cg_frames_that_backmap_reads(torsion_cg_model, tmp_path, capsys):
    from ccg import read_cg_input

    path, model = torsion_cg_model
    for name in ("cg.npy", "cg.csv"):
        out = tmp_path / name
        quiet = ["--no-progress"] if name == "cg.csv" else []
        assert main(["simulate", str(path), "--temperature", "300", "--steps", "40",
                     "--walkers", "3", "--save-every", "10", "--out", str(out), *quiet]) == 0
        assert ("%|" in capsys.readouterr().err) == (not quiet)
        table = np.load(out) if name.endswith("npy") else np.loadtxt(out, delimiter=",")
        assert table.shape == (12, 2) and np.all(np.abs(table) <= math.pi)

        z = read_cg_input(out, model.cg_map, model.system)
        np.testing.assert_allclose(z.numpy(), table, atol=1e-12)
    assert main(["simulate", str(path), "--temperature", "300", "--steps", "10",
                 "--out", str(tmp_path / "cg.dcd")]) == 2
    assert not (tmp_path / "cg.dcd").exists()


def test_simulate_bead_model_writes_a_cg_trajectory(tmp_path):
    """A heavy-atom F_theta (untrained) runs Langevin in Cartesian bead space (no wrapping) and
    writes an mdtraj trajectory of the CG atoms plus their topology."""
    import mdtraj

    from ccg.mapping import AtomSubsetMap
    from ccg.systems import alanine_dipeptide

    system = alanine_dipeptide()
    ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    cg_map = AtomSubsetMap(system.topology, "heavy", ref)
    torch.manual_seed(0)
    model = FreeEnergyModel(cg_map, t_ref=300.0, t_range=(300.0, 600.0), hidden=8, n_layers=1,
                            n_members=2).double()
    path = save_cg_model(tmp_path / "cg_model.pt", model, system)
    out, top = tmp_path / "cg.dcd", tmp_path / "cg.pdb"
    assert main(["simulate", str(path), "--temperature", "300", "--steps", "20", "--walkers",
                 "2", "--save-every", "10", "--diffusion", "1e-4", "--out", str(out),
                 "--top", str(top)]) == 0
    traj = mdtraj.load(str(out), top=str(top))
    assert traj.n_frames == 4 and traj.n_atoms == 10
    assert [a.element.symbol for a in traj.topology.atoms].count("H") == 0
    moved = np.abs(traj.xyz - traj.xyz[0]).max()
    assert 0 < moved < 0.1  # small Cartesian steps, nothing wrapped onto [-pi, pi)


def test_cycle_command_trains_an_initial_flow_and_resumes(tmp_path, capsys):
    out = tmp_path / "cycle"
    argv = ["cycle", "--system", "double-well", "--initial-minutes", "0.02", "--temperatures",
            "300", "600", "--points", "16", "--samples", "16", "--finetune-steps", "2",
            "--fit-steps", "5", "--langevin-steps", "100", "--walkers", "8", "--cg-hidden", "24",
            "--out", str(out), "--no-progress"]
    assert main([*argv, "--iterations", "1"]) == 0
    text = capsys.readouterr().out
    assert "for the initial flow" in text and (out / "initial" / "model.pt").is_file()
    assert file_kind(out / "flow.pt") == "flow" and file_kind(out / "cg_model.pt") == "cg"
    assert load_cg_model(out / "cg_model.pt").arch["hidden"] == 24
    state = json.loads((out / "metrics.json").read_text())["config"]
    assert (state["langevin_steps"], state["langevin_walkers"]) == (100, 8)
    assert main([*argv, "--iterations", "2", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    rows = json.loads((out / "metrics.json").read_text())["iterations"]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert main(["cycle", "--resume", "--out", str(tmp_path / "none")]) == 2


def test_free_energy_grid_needs_a_torsion_cg_model(tmp_path, capsys):
    from ccg.mapping import CoordinateSplitMap
    from ccg.systems import make_analytic

    system = make_analytic("double-well")
    model = FreeEnergyModel(CoordinateSplitMap(system.dim, system.cg_dim), t_ref=300.0,
                            t_range=(300.0, 600.0), hidden=8, n_layers=1, n_members=2).double()
    path = save_cg_model(tmp_path / "cg_model.pt", model, system)
    out = tmp_path / "fes.npz"
    assert main(["free-energy", str(path), "--temperature", "300", "--grid", "6",
                 "--out", str(out)]) == 2
    assert "torsion CG map" in capsys.readouterr().err and not out.exists()
