"""Model files: save/load round trips (analytic and alanine dipeptide), the specific error for
each kind of bad file, and atomic writes that never leave a partial file."""

from __future__ import annotations

import os
import stat

import pytest
import safetensors.torch
import torch
from conftest import rewrite_model_file

from ccg import RunConfig, TrainingError, build_model, load_cg_model
from ccg.io.atomic import atomic_path, atomic_torch_save, check_output_path
from ccg.io.model_file import (
    FORMAT_VERSION,
    ModelFileError,
    load_model,
    read_model_file,
    save_model,
)
from ccg.systems import system_to_config
from ccg.systems.analytic import DoubleWell2D
from ccg.systems.openmm_system import OpenMMSystem


def _perturbed(model):
    """The model with every flow weight moved off its (identity) initialization, so a load that
    dropped the weights could not reproduce the original's densities."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    model.flow.eval()
    return model


def _double_well_model():
    torch.manual_seed(0)
    config = RunConfig.from_dict({
        "system": {"name": "double-well"}, "map": {"cg": "split"},
        "flow": {"n_layers": 2, "hidden": 16, "n_blocks": 1},
        "train": {"steps": 1, "t_min": 320.0, "t_max": 480.0},
    })
    return _perturbed(build_model(config)), config


@pytest.fixture(scope="module")
def alanine_model():
    torch.manual_seed(0)
    config = RunConfig()
    config.train.steps = 1
    return _perturbed(build_model(config)), config


def _assert_same_model(original, loaded, z, temperature):
    """Identical samples, densities and energies for the same generator."""
    a = original.sample(z, temperature, generator=torch.Generator().manual_seed(3))
    b = loaded.sample(z, temperature, generator=torch.Generator().manual_seed(3))
    for name in ("r", "x", "log_q", "log_jac", "energy_kjmol", "finite"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(loaded.log_prob_x(a.x, temperature),
                               original.log_prob_x(a.x, temperature), rtol=0, atol=0)


def test_analytic_model_round_trip(tmp_path):
    model, config = _double_well_model()
    path = save_model(tmp_path / "model.pt", model, metrics={"final_ess": 0.5},
                      run_config=config.to_dict())
    loaded = load_model(path)
    assert isinstance(loaded.system, DoubleWell2D)
    assert loaded.t_ref == 320.0 and loaded.t_range == (320.0, 480.0)
    assert loaded.metrics == {"final_ess": 0.5}
    assert RunConfig.from_dict(loaded.run_config).to_dict() == config.to_dict()
    assert loaded.flow.config() == model.flow.config()
    assert not loaded.flow.training
    z = torch.linspace(-3.0, 3.0, 50)[:, None]
    _assert_same_model(model, loaded, z, 400.0)
    # the perturbation is what makes this a test of the stored weights
    torch.manual_seed(1)
    fresh = build_model(config)
    x = model.sample(z, 400.0, generator=torch.Generator().manual_seed(0)).x
    assert not torch.allclose(fresh.log_prob_x(x, 400.0), loaded.log_prob_x(x, 400.0))


def test_alanine_phi_psi_model_round_trip(tmp_path, alanine_model):
    model, config = alanine_model
    loaded = load_model(save_model(tmp_path / "model.pt", model, run_config=config.to_dict()))
    assert isinstance(loaded.system, OpenMMSystem) and loaded.system.n_atoms == 22
    assert loaded.cg_map.config() == model.cg_map.config()
    assert loaded.flow.config() == model.flow.config()
    z = torch.tensor([[-1.4, 1.2], [-1.4, -0.6], [1.0, -1.0], [3.0, 3.1]]).repeat(8, 1)
    _assert_same_model(model, loaded, z, 450.0)


def test_load_in_float64(tmp_path):
    model, _ = _double_well_model()
    loaded = load_model(save_model(tmp_path / "model.pt", model), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in loaded.flow.parameters())
    z = torch.linspace(-2.0, 2.0, 20)[:, None]
    x = model.sample(z, 400.0, generator=torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(loaded.log_prob_x(x.double(), 400.0).float(),
                               model.log_prob_x(x, 400.0), rtol=0, atol=1e-4)


def _legacy_payload(model) -> dict:
    """What ccg 0.1 wrote with torch.save (format version 1)."""
    path_payload = {
        "format": "ccg-model", "format_version": 1, "ccg_version": "0.1.0",
        "system": system_to_config(model.system), "map": model.cg_map.config(),
        "flow": model.flow.config(),
        "flow_state": {k: v.detach().cpu() for k, v in model.flow.state_dict().items()},
        "t_ref": model.t_ref, "t_range": list(model.t_range), "metrics": {}, "run_config": {},
    }
    return path_payload


def test_file_from_before_the_scale_tril_buffer_loads_unchanged(tmp_path):
    """Files written before the base gained `scale_tril` (diagonal bases, ccg 0.1 pickles)
    still load, safely and with a warning, and sample exactly as the model that was saved."""
    model, _ = _double_well_model()
    payload = _legacy_payload(model)
    removed = [k for k in payload["flow_state"] if k.endswith("scale_tril")]
    assert removed
    for key in removed:
        del payload["flow_state"][key]
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="ccg 0.1 model file"):
        loaded = load_model(path)
    _assert_same_model(model, loaded, torch.linspace(-2.0, 2.0, 20)[:, None], 400.0)


class _RunsCode:
    """A pickle that calls a function when it is loaded (what a malicious model file does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_model_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    model, _ = _double_well_model()
    payload = _legacy_payload(model)
    payload["metrics"] = {"x": _RunsCode(marker)}
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match=r"Refused to load .*could run code"):
        load_model(path)
    with pytest.raises(ModelFileError, match="Refused to load"):
        load_cg_model(path)
    assert not marker.exists()
    # the same object as a training checkpoint: refused too, nothing run
    from ccg.training.trainer import read_checkpoint

    torch.save({"step": 1, "modules": {}, "optimizer": _RunsCode(marker)}, path)
    with pytest.raises(TrainingError, match="Refused to load"):
        read_checkpoint(path)
    assert not marker.exists()
    # and pickle itself would have run it: the test object is live
    import pickle

    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


def test_altered_model_file_fails_its_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF  # one byte of the last tensor
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="fails its checksum"):
        load_model(saved)


# --- bad files: each gets its own clear error --------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    model, _ = _double_well_model()
    return save_model(tmp_path / "model.pt", model)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Model file not found: .*nope\.pt"):
        load_model(tmp_path / "nope.pt")


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    message = r"not a readable ccg model file.*truncated or corrupt"
    with pytest.raises(ModelFileError, match=message):
        load_model(saved)


def test_garbage_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelFileError, match="not a readable ccg model file"):
        load_model(path)


@pytest.mark.parametrize(
    "payload",
    [
        {"step": 200, "modules": {"flow": {}}, "optimizer": {}},  # a training checkpoint
        {"weights": torch.zeros(3)},
        torch.zeros(3),
    ],
    ids=["checkpoint", "other-dict", "tensor"],
)
def test_non_model_file(tmp_path, payload):
    path = tmp_path / "checkpoint.pt"
    torch.save(payload, path)
    message = r"is not a ccg model file.*checkpoint\.pt is not a model"
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_trainer_checkpoint_is_not_a_model(tmp_path):
    from ccg.cli import main

    assert main(["train", "--system", "double-well", "--steps", "2", "--n-z", "4",
                 "--samples-per-z", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    load_model(tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match=r"use the model\.pt next to it"):
        load_model(tmp_path / "checkpoint.pt")


def test_wrong_format_version(saved):
    rewrite_model_file(saved, saved,
                       lambda header, _: header.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}; this ccg"):
        load_model(saved)


def test_missing_entry(saved):
    rewrite_model_file(saved, saved, lambda _, tensors: tensors.clear())
    with pytest.raises(ModelFileError, match=r"missing the entries \['flow_state'\]"):
        read_model_file(saved)


def test_weights_that_do_not_fit_the_flow(saved):
    rewrite_model_file(saved, saved, lambda header, _: header["flow"].update(hidden=24))
    with pytest.raises(ModelFileError, match="stored weights do not fit the flow"):
        load_model(saved)


# --- atomic writes -----------------------------------------------------------------------------


def _failing_save(obj, path, *args, **kwargs):
    """Writes half a file, then fails (a full disk, a kill during the write)."""
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04 partial")
    raise OSError("No space left on device")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    model, _ = _double_well_model()
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_model(tmp_path / "model.pt", model)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model, _ = _double_well_model()
    path = save_model(tmp_path / "model.pt", model)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError):
        atomic_torch_save({"anything": 1}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    monkeypatch.undo()
    load_model(path)


def test_exception_inside_atomic_path_removes_the_temporary(tmp_path):
    target = tmp_path / "plot.png"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".png")
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_has_the_mode_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    model, _ = _double_well_model()
    path = save_model(tmp_path / "model.pt", model)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_missing_output_folder_is_clear_error(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "model.pt"
    with pytest.raises(FileNotFoundError, match=r"Output folder .*folder does not exist"):
        check_output_path(missing)
    model, _ = _double_well_model()
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        save_model(missing, model)
    assert not (tmp_path / "no").exists()
    assert check_output_path(tmp_path / "ok.pt") == tmp_path / "ok.pt"
    assert check_output_path("relative.pt").name == "relative.pt"  # the working directory

