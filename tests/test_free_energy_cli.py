"""`ccg free-energy` error paths, through `ccg.cli.main` as a user would hit them.

Tiny untrained models (alanine dipeptide, a 2-layer flow) stand in for trained ones: every
check here is about inputs and files, not accuracy. Each failing call must exit with status 2,
print one clear `ccg free-energy: error: ...` line and write nothing.
"""

from __future__ import annotations

import pytest
import torch
from conftest import rewrite_model_file

from ccg import RunConfig, build_model
from ccg.cli import main
from ccg.io.model_file import FORMAT_VERSION, ModelFileError, read_model_file, save_model

TINY_FLOW = {"n_layers": 2, "hidden": 8, "n_blocks": 1, "n_bins": 4}


def _save(tmp_path_factory, cg: str):
    torch.manual_seed(0)
    config = RunConfig.from_dict({
        "map": {"cg": cg}, "flow": TINY_FLOW,
        "train": {"steps": 1, "t_min": 300.0, "t_max": 600.0},
    })
    path = tmp_path_factory.mktemp(cg) / "model.pt"
    save_model(path, build_model(config), run_config=config.to_dict())
    return path


@pytest.fixture(scope="module")
def torsion_model(tmp_path_factory):
    """A (phi, psi) model file (alanine dipeptide, trained over 300-600 K)."""
    return _save(tmp_path_factory, "phi-psi")


@pytest.fixture(scope="module")
def bead_model(tmp_path_factory):
    """A backbone-bead model file (Cartesian CG coordinates: no torsion grid)."""
    return _save(tmp_path_factory, "backbone")


def _run(model, out, *extra):
    return main(["free-energy", str(model), "--out", str(out), *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message on stderr"
    assert err[-1].startswith("ccg free-energy: error: "), err
    return err[-1]


@pytest.mark.parametrize("temperature", ["0", "-300", "nan", "inf"])
def test_nonpositive_or_nonfinite_temperature_is_an_error(torsion_model, tmp_path, capsys,
                                                          temperature):
    out = tmp_path / "fes.npz"
    rc = _run(torsion_model, out, f"--temperature={temperature}", "--grid", "2",
              "--samples", "2")
    assert rc == 2
    line = _error_line(capsys)
    assert "Expected --temperature > 0 K" in line, line
    assert list(tmp_path.iterdir()) == []


def test_nonpositive_temperature_is_reported_before_the_model_is_read(tmp_path, capsys):
    """A bad --temperature is an argument error; it needs no model file to be detected."""
    out = tmp_path / "fes.npz"
    rc = _run(tmp_path / "missing.pt", out, "--temperature", "-5")
    assert rc == 2
    line = _error_line(capsys)
    assert "--temperature > 0 K" in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_model_file_is_a_model_file_error(torsion_model, tmp_path, capsys, damage):
    data = torsion_model.read_bytes()
    bad = tmp_path / "model.pt"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(bytes(range(256)) * 64)
    else:
        bad.write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a readable ccg model file"):
        read_model_file(bad)
    out = tmp_path / "fes.npz"
    rc = _run(bad, out, "--temperature", "300", "--grid", "2", "--samples", "2")
    assert rc == 2
    line = _error_line(capsys)
    assert "not a readable ccg model file" in line and "truncated or corrupt" in line, line
    assert not out.exists()


def test_wrong_format_version_is_a_model_file_error(torsion_model, tmp_path, capsys):
    bad = tmp_path / "model.pt"
    rewrite_model_file(torsion_model, bad,
                       lambda header, _: header.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}"):
        read_model_file(bad)
    out = tmp_path / "fes.npz"
    rc = _run(bad, out, "--temperature", "300", "--grid", "2", "--samples", "2")
    assert rc == 2
    line = _error_line(capsys)
    assert f"format version {FORMAT_VERSION + 1}" in line
    assert f"reads version {FORMAT_VERSION}" in line
    assert not out.exists()


def test_not_a_model_file_is_a_model_file_error(torsion_model, tmp_path, capsys):
    """A valid torch file that is not a ccg model (e.g. a training checkpoint)."""
    bad = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "flow_state": {}}, bad)
    out = tmp_path / "fes.npz"
    rc = _run(bad, out, "--temperature", "300", "--grid", "2", "--samples", "2")
    assert rc == 2
    line = _error_line(capsys)
    assert "ccg model file" in line and "checkpoint.pt is not a model" in line, line
    assert not out.exists()


def test_missing_model_file(tmp_path, capsys):
    rc = _run(tmp_path / "nope.pt", tmp_path / "fes.npz", "--temperature", "300")
    assert rc == 2
    assert "Model file not found" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_grid_for_a_bead_map_model_is_an_error(bead_model, tmp_path, capsys):
    out = tmp_path / "fes.npz"
    rc = _run(bead_model, out, "--temperature", "300", "--grid", "4", "--samples", "2")
    assert rc == 2
    line = _error_line(capsys)
    assert "torsion CG map" in line and "--frames" in line, line
    assert not out.exists()


def test_temperature_outside_training_range_warns(torsion_model, tmp_path, capsys):
    out = tmp_path / "fes.npz"
    with pytest.warns(UserWarning, match=r"outside the model's training range \[300.0, 600.0\]"):
        rc = _run(torsion_model, out, "--temperature", "700", "--grid", "2", "--samples", "2")
    assert rc == 0
    assert out.is_file()
    capsys.readouterr()


def test_temperature_inside_training_range_does_not_warn(torsion_model, tmp_path, recwarn):
    out = tmp_path / "fes.npz"
    assert _run(torsion_model, out, "--temperature", "450", "--grid", "2", "--samples", "2") == 0
    assert not [w for w in recwarn if "training range" in str(w.message)]
    assert out.is_file()


def test_missing_output_folder_is_an_error_before_any_work(torsion_model, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "fes.npz"
    rc = _run(torsion_model, out, "--temperature", "300", "--grid", "2", "--samples", "2")
    assert rc == 2
    assert "does not exist" in _error_line(capsys)
