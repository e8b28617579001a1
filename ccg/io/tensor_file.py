"""ccg's model-file container: tensors in safetensors plus a JSON header, with a checksum.

A file is a standard safetensors file (readable by any safetensors reader) whose metadata holds

    "ccg"     the header: JSON text (the model's configuration, format name and version, ...)
    "sha256"  a SHA-256 checksum over the header text and every tensor (name, dtype, shape,
              bytes), so a truncated or altered file is an error rather than a wrong model.

Nothing in it is executed when it is read: safetensors holds raw tensor bytes, and the header
is parsed as JSON. Files written by ccg 0.1 (`torch.save` pickles) are read with
`torch.load(weights_only=True)`, which refuses anything but plain data and tensors (a pickle
built to run code is refused, not run), and with a warning to re-save them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ccg.errors import ModelFileError
from ccg.io.atomic import atomic_path, refused_global

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container (ccg 0.1 files)
_MAX_HEADER = 100_000_000


def checksum(header_text: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the header text and the tensors' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256(header_text.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_tensor_file(path: str | Path, header: dict[str, Any],
                      tensors: dict[str, torch.Tensor]) -> Path:
    """Write `tensors` (moved to the CPU) and the JSON-serializable `header` to `path`,
    atomically."""
    text = json.dumps(header, sort_keys=True)
    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    metadata = {"ccg": text, "sha256": checksum(text, cpu)}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(cpu, str(tmp), metadata=metadata)
    return Path(path)


def read_tensor_file(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, tensors) of a file written by `write_tensor_file` (or a ccg 0.1 pickle).

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: not a readable ccg file (truncated, random bytes, a checksum that does
            not match, or a pickle that holds more than plain data and tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}. `ccg train` writes model.pt, "
                                "`ccg cycle` writes flow.pt and cg_model.pt.")
    with open(path, "rb") as handle:
        start = handle.read(9)
    if start.startswith(_ZIP_MAGIC):
        return _read_legacy(path)
    if len(start) < 9 or start[8:9] != b"{" or struct.unpack("<Q", start[:8])[0] > _MAX_HEADER:
        raise ModelFileError(f"{path} is not a readable ccg model file (neither safetensors nor "
                             "a ccg 0.1 file). It may be truncated or corrupt; retrain or copy "
                             "it again.")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a readable ccg model file ({err}). It may be "
                             "truncated or corrupt; retrain or copy it again.") from None
    if "ccg" not in metadata:
        raise ModelFileError(f"{path} is a safetensors file but not a ccg model file (no ccg "
                             "header). A checkpoint.pt is not a model; use the model.pt next "
                             "to it.")
    if metadata.get("sha256") != checksum(metadata["ccg"], tensors):
        raise ModelFileError(f"{path} fails its checksum: the file was altered or damaged after "
                             "it was written. Retrain or copy it again.")
    try:
        header = json.loads(metadata["ccg"])
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path} has an unreadable header ({err}).") from None
    return header, tensors


def _read_legacy(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A ccg 0.1 model file (a torch.save pickle), read without executing code."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f"Refused to load {path}: it is a pickle that holds objects other than plain data "
            f"and tensors, so loading it could run code ({refused_global(err)}). ccg model "
            "files never do; do not use this file."
        ) from None
    except Exception as err:  # torch raises many types for corrupt files
        raise ModelFileError(
            f"{path} is not a readable ccg model file ({type(err).__name__}: {err}). "
            "It may be truncated or corrupt; retrain or copy it again."
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), str):
        raise ModelFileError(f"{path} is not a ccg model file (no format entry). A "
                             "checkpoint.pt is not a model; use the model.pt next to it.")
    tensors = {}
    for key in ("flow_state", "state"):  # the weights of a flow / a CG model
        if isinstance(payload.get(key), dict):
            tensors = {f"{key}.{k}": v for k, v in payload.pop(key).items()}
    warnings.warn(f"{path} is a ccg 0.1 model file (a pickle, read safely as plain data). "
                  "Re-save it in the current format with ccg.save_model / ccg.save_cg_model.",
                  UserWarning, stacklevel=3)
    return payload, tensors


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors stored under `prefix.` (a module's state_dict), with the prefix removed."""
    start = f"{prefix}."
    return {name[len(start):]: t for name, t in tensors.items() if name.startswith(start)}
