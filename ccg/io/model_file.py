"""Model files: one self-describing file per trained backmapping model.

A model file (`model.pt`, written atomically) is a safetensors file (`ccg.io.tensor_file`: no
pickle, nothing executed on loading, a checksum) whose tensors are the flow's weights
(`flow_state.<name>`) and whose JSON header holds:

- `format` = "ccg-model", `format_version`, `ccg_version`;
- `system`: what is needed to rebuild U(x) (for OpenMM systems the serialized System, the PDB
  text, force-field names and createSystem options);
- `map`, `flow`: the configurations of the CG map and the flow;
- `t_ref`, `t_range` (K), `metrics` (training summary) and `run_config`.

`load_model(path)` validates all of it and rebuilds a ready-to-sample `BackmappingModel`.
Files of ccg 0.1 (format version 1, a torch pickle) still load, safely and with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ccg._version import __version__
from ccg.errors import ModelFileError
from ccg.flows import flow_from_config
from ccg.io.tensor_file import read_tensor_file, split_state, write_tensor_file
from ccg.mapping import map_from_config
from ccg.model import BackmappingModel
from ccg.systems.registry import system_from_config, system_to_config

FORMAT = "ccg-model"
FORMAT_VERSION = 2
"""The version written: 2 = safetensors + JSON header (1 = a torch pickle, ccg 0.1)."""
READABLE_VERSIONS = (1, 2)
_REQUIRED = ("format", "format_version", "system", "map", "flow", "flow_state", "t_ref", "t_range")


def save_model(path: str | Path, model: BackmappingModel, *, metrics: dict | None = None,
               run_config: dict | None = None) -> Path:
    """Write `model` to `path` atomically (safetensors + JSON header); returns the path.

    `metrics` and `run_config` (default: the model's own) are stored with it.
    """
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ccg_version": __version__,
        "system": system_to_config(model.system),
        "map": model.cg_map.config(),
        "flow": model.flow.config(),
        "t_ref": model.t_ref,
        "t_range": list(model.t_range),
        "metrics": model.metrics if metrics is None else metrics,
        "run_config": model.run_config if run_config is None else run_config,
    }
    tensors = {f"flow_state.{k}": v for k, v in model.flow.state_dict().items()}
    return write_tensor_file(path, header, tensors)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Read and validate the raw payload of a model file: the header's entries plus
    `flow_state` (the flow's state_dict)."""
    path = Path(path)
    payload, tensors = read_tensor_file(path)
    if tensors:
        payload["flow_state"] = split_state(tensors, "flow_state")
    if payload.get("format") == "ccg-cg-model":
        raise ModelFileError(
            f"{path} is a CG model file (F_theta from `ccg cycle`): it gives free energies and "
            "CG dynamics, not atoms. Give the flow model instead (model.pt from `ccg train`, or "
            "flow.pt next to the cg_model.pt)."
        )
    if payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is not a ccg model file (expected format '{FORMAT}'). A training "
            "checkpoint.pt is not a model; use the model.pt next to it."
        )
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{path} has model-file format version {version}; this ccg "
            f"({__version__}) reads version {FORMAT_VERSION}. Use the ccg version that "
            f"wrote it ({payload.get('ccg_version', 'unknown')}) or retrain."
        )
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise ModelFileError(f"{path} is missing the entries {missing}; it is corrupt.")
    return payload


def stored_flow_state(payload: dict[str, Any], flow: torch.nn.Module) -> dict[str, Any]:
    """The flow weights of a `read_model_file` payload, completed for `flow` (the flow its
    configuration builds): files written before the base gained `scale_tril` (diagonal
    bases) get the built flow's own diag(scale) factor, exactly what they used."""
    state = dict(payload["flow_state"])
    for key, value in flow.state_dict().items():
        if key.endswith("standardize.scale_tril") and key not in state:
            state[key] = value
    return state


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> BackmappingModel:
    """Rebuild the `BackmappingModel` stored at `path` (validated), on `device`, in `dtype`.

    Nothing in the file is executed. Raises FileNotFoundError for a missing file and
    `ModelFileError` for anything that is not an intact ccg model file.
    """
    payload = read_model_file(path)
    system = system_from_config(payload["system"])
    cg_map = map_from_config(payload["map"], system)
    flow = flow_from_config(payload["flow"])
    state = stored_flow_state(payload, flow)
    stored = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    flow.to(stored)  # load the weights exactly as stored, then cast to `dtype`
    try:
        flow.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{path}: the stored weights do not fit the flow ({err}).") from None
    model = BackmappingModel(system, cg_map, flow, t_ref=payload["t_ref"],
                             t_range=tuple(payload["t_range"]))
    model.metrics = payload.get("metrics", {})
    model.run_config = payload.get("run_config", {})
    model.flow.to(device=device, dtype=dtype)
    model.cg_map.to(device=device)
    model.flow.eval()
    return model
