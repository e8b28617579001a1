"""`[train] init` / `ccg train --init MODEL`: a run that starts from a trained model's flow
weights (fine-tuning with other training settings), and its checks before any work."""

from __future__ import annotations

import math

import pytest
import torch

import ccg
from ccg import RunConfig, build_model
from ccg.cli import main
from ccg.errors import ConfigError
from ccg.io.model_file import read_model_file
from ccg.training.run import (
    _first_difference,
    initial_energy_cut,
    load_initial_weights,
    read_initial_model,
)


def _config(**train) -> RunConfig:
    return RunConfig.from_dict({
        "system": {"name": "double-well"},
        "map": {"cg": "split"},
        "flow": {"n_layers": 2, "hidden": 16, "n_blocks": 1},
        "train": {"dtype": "float64", "n_z": 8, "samples_per_z": 4, "steps": 40,
                  "checkpoint_every": 5, **train},
    }).validate()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A double-well model trained for 40 steps, and its folder."""
    out = tmp_path_factory.mktemp("trained")
    ccg.train(_config(), out, progress=False)
    return out / "model.pt"


def test_the_run_starts_from_the_file_weights(trained, tmp_path):
    config = _config(init=str(trained), steps=3, lr=1e-4)
    model = build_model(config)
    load_initial_weights(model, read_initial_model(config), config.train.init)
    stored = read_model_file(trained)["flow_state"]
    for key, value in model.flow.state_dict().items():
        assert torch.equal(value, stored[key].to(value.dtype)), key
    # through ccg.train with a negligible learning rate: the saved flow is the file's, where a
    # fresh start's is not
    tiny = {"steps": 2, "lr": 1e-9, "lr_final": 1e-10}
    ccg.train(_config(init=str(trained), **tiny), tmp_path / "tuned", progress=False)
    ccg.train(_config(**tiny), tmp_path / "fresh", progress=False)
    for name, close in (("tuned", True), ("fresh", False)):
        saved = read_model_file(tmp_path / name / "model.pt")["flow_state"]
        gap = max(float((saved[k].double() - stored[k].double()).abs().max()) for k in stored
                  if stored[k].numel())
        assert (gap < 1e-6) == close, (name, gap)
    assert ccg.load_model(tmp_path / "tuned" / "model.pt").run_config["train"]["init"] == str(
        trained)


def test_the_run_keeps_the_energy_cut_the_file_was_trained_with(trained):
    config = _config(init=str(trained))
    model = build_model(config)
    proposal = ccg.build_proposal(config, model)
    assert initial_energy_cut(model, proposal, config,
                              initial={"metrics": {"energy_cut_kt": 5000.0}}) == 5000.0
    # a stored cut below the configured one, or none, leaves the usual rule
    usual = initial_energy_cut(model, proposal, config)
    assert initial_energy_cut(model, proposal, config,
                              initial={"metrics": {"energy_cut_kt": 1.0}}) == usual
    config.train.energy_cut_auto = False
    assert initial_energy_cut(model, proposal, config,
                              initial={"metrics": {"energy_cut_kt": 5000.0}}) == 100.0


def test_a_run_from_init_resumes_from_its_checkpoint(trained, tmp_path):
    out = tmp_path / "run"
    ccg.train(_config(init=str(trained), steps=5), out, progress=False)
    _, summary = ccg.train(_config(init=str(trained), steps=10), out, resume=True,
                           progress=False)
    assert summary["steps"] == 10 and math.isfinite(summary["final_loss"])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"flow": {"hidden": 32}}, "[flow] hidden: 16 in the file, 32 now"),
        ({"train": {"t_min": 350.0}}, "reference temperature: 300.0 K in the file, 350.0 K now"),
        ({"system": {"name": "mueller-brown"}},
         "[system] name: 'double-well' in the file, 'mueller-brown' now"),
    ],
)
def test_cli_refuses_a_model_of_another_run_before_any_work(trained, tmp_path, capsys, change,
                                                            fragment):
    data = _config(init=str(trained)).to_dict()
    for table, values in change.items():
        data[table].update(values)
    config = RunConfig.from_dict(data)
    with pytest.raises(ConfigError, match="was trained for another model"):
        read_initial_model(config.validate())
    toml = tmp_path / "run.toml"
    flow = change.get("flow", {}).get("hidden", 16)
    system = change.get("system", {}).get("name", "double-well")
    t_min = change.get("train", {}).get("t_min", 300.0)
    toml.write_text(f'[system]\nname = "{system}"\n[map]\ncg = "split"\n'
                    f'[flow]\nn_layers = 2\nhidden = {flow}\nn_blocks = 1\n'
                    f'[train]\nsteps = 3\nt_min = {t_min}\n')
    out = tmp_path / "out"
    argv = ["train", "--config", str(toml), "--init", str(trained), "--out", str(out),
            "--no-progress"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "ccg train: error: [train] init (--init)" in captured.err
    assert fragment in captured.err and "Traceback" not in captured.err
    assert "training" not in captured.out and not out.exists()


@pytest.mark.parametrize("kind", ["missing", "not a model"])
def test_cli_refuses_a_missing_or_foreign_file(tmp_path, capsys, kind):
    path = tmp_path / "model.pt"
    if kind == "not a model":
        path.write_text("import os; os.remove('everything')\n")
    out = tmp_path / "out"
    argv = ["train", "--system", "double-well", "--steps", "3", "--init", str(path),
            "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = "no model file at" if kind == "missing" else "is not a ccg model file"
    assert expected in err and "Traceback" not in err
    assert not out.exists()


def test_a_file_whose_map_is_not_the_runs_is_refused(trained):
    # files without a stored run configuration are checked on the map and flow they hold
    config = _config(init=str(trained))
    payload = read_model_file(trained)
    payload.pop("run_config")
    payload["map"] = {**payload["map"], "extra": 2}
    with pytest.raises(ConfigError, match=r"the CG map in .* is not the one this run builds "
                       r"\(they differ at extra \(only in the file\)\)"):
        load_initial_weights(build_model(config), payload, config.train.init)
    load_initial_weights(build_model(config), read_model_file(trained), config.train.init)


def test_configurations_compare_to_the_last_digits_only():
    assert _first_difference({"a": [1.0, {"b": 2}]}, {"a": [1.0 + 1e-9, {"b": 2}]}) is None
    assert _first_difference({"a": [1.0, {"b": 2}]}, {"a": [1.0, {"b": 3}]}) == (
        "a[1] / b (2 in the file, 3 now)")
    assert _first_difference({"a": [1.0]}, {"a": [1.0, 2.0]}) == (
        "a (length 1 in the file, 2 now)")
    assert _first_difference({"a": "x"}, {"a": "x", "c": 1}) == "c (only now)"
    assert _first_difference({"a": True}, {"a": 1}) == "a (True in the file, 1 now)"


def test_an_empty_init_is_a_config_error():
    with pytest.raises(ConfigError, match=r"init must be the path of a model\.pt"):
        _config(init="  ")
