"""CG model files (`cg_model.pt`): a fitted F_theta(z, T), self-describing like model files.

The same container as model files (`ccg.io.tensor_file`: safetensors + a JSON header, no
pickle): tensors `state.<name>` (the weights), and a header with `format` = "ccg-cg-model",
`format_version`, `ccg_version`, the `system` and `map` configurations (the map provides the
CG features; the system its topology), the model's `config` (t_ref, t_range, architecture)
and `metrics`.
`load_cg_model(path)` validates it and rebuilds the `FreeEnergyModel` (with its `system`).
`file_kind(path)` tells a flow model file from a CG model file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ccg._version import __version__
from ccg.errors import ModelFileError
from ccg.free_energy.cg_model import FreeEnergyModel
from ccg.io.model_file import FORMAT as FLOW_FORMAT
from ccg.io.tensor_file import read_tensor_file, split_state, write_tensor_file
from ccg.mapping import map_from_config
from ccg.systems.registry import system_from_config, system_to_config

FORMAT = "ccg-cg-model"
FORMAT_VERSION = 2
"""The version written: 2 = safetensors + JSON header (1 = a torch pickle, ccg 0.1)."""
READABLE_VERSIONS = (1, 2)
_REQUIRED = ("format", "format_version", "system", "map", "config", "state")


def save_cg_model(path: str | Path, model: FreeEnergyModel, system=None, *,
                  metrics: dict | None = None) -> Path:
    """Write a FreeEnergyModel and the system its map belongs to (default: `model.system`) to
    `path` atomically."""
    system = model.system if system is None else system
    if system is None:
        raise ValueError("save_cg_model needs the system the CG map belongs to: pass system=... "
                         "or build the FreeEnergyModel with system=...")
    header: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ccg_version": __version__,
        "system": system_to_config(system), "map": model.cg_map.config(),
        "config": model.config(), "metrics": metrics or {},
    }
    tensors = {f"state.{k}": v for k, v in model.state_dict().items()}
    return write_tensor_file(path, header, tensors)


def _read(path: Path) -> dict[str, Any]:
    """The header entries plus `state` (or `flow_state` for a flow model file)."""
    payload, tensors = read_tensor_file(path)
    for prefix in ("state", "flow_state"):
        state = split_state(tensors, prefix)
        if state:
            payload[prefix] = state
    return payload


def file_kind(path: str | Path) -> str:
    """"flow" for a `ccg train` model.pt, "cg" for a `ccg cycle` cg_model.pt; else an error."""
    path = Path(path)
    payload = _read(path)
    fmt = payload.get("format")
    if fmt == FLOW_FORMAT:
        return "flow"
    if fmt == FORMAT:
        return "cg"
    raise ModelFileError(f"{path} is neither a ccg model file (format '{FLOW_FORMAT}') nor a "
                         f"CG model file (format '{FORMAT}'). A checkpoint.pt is not a model.")


def load_cg_model(path: str | Path, *, dtype: torch.dtype = torch.float64) -> FreeEnergyModel:
    """Rebuild the FreeEnergyModel stored at `path` (validated), with its `system`. Nothing in
    the file is executed."""
    path = Path(path)
    payload = _read(path)
    if payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a CG model file (expected format '{FORMAT}'; a "
                             "flow model.pt backmaps, a cg_model.pt from `ccg cycle` simulates).")
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{path} has CG-model format version {version}; this ccg ({__version__}) reads "
            f"version {FORMAT_VERSION}. Use the ccg version that wrote it "
            f"({payload.get('ccg_version', 'unknown')}) or rerun `ccg cycle`.")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise ModelFileError(f"{path} is missing the entries {missing}; it is corrupt.")
    system = system_from_config(payload["system"])
    cg_map = map_from_config(payload["map"], system)
    cfg = dict(payload["config"])
    model = FreeEnergyModel(cg_map, t_ref=cfg.pop("t_ref"), t_range=tuple(cfg.pop("t_range")),
                            system=system, **cfg).to(dtype)
    try:
        model.load_state_dict(payload["state"])
    except RuntimeError as err:
        raise ModelFileError(f"{path}: the stored weights do not fit the model ({err}).") from None
    model.eval()
    model.metrics = payload.get("metrics", {})
    return model
