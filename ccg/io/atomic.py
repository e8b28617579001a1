"""Atomic file writes: write to a temporary file in the target folder, then rename; and
reading run states (checkpoints) back without executing code.

A crash or an exception never leaves a partial or corrupt output behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ccg.errors import TrainingError


def check_output_path(path: str | Path) -> Path:
    """Return `path` as a Path; raise FileNotFoundError if its folder does not exist."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Output folder {parent} does not exist (for {path}). Create it first "
            f"(mkdir -p {parent}) or choose another path."
        )
    return path


def _current_umask() -> int:
    """The process umask (os.umask only reads it by setting it; restored at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    The temporary file keeps `path`'s extension (or `suffix`) so format-sniffing writers
    (mdtraj, matplotlib, numpy) see the right one. On error it is removed.
    """
    path = check_output_path(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file owner-only (0o600); give it the mode open() would have.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def refused_global(err: Exception) -> str:
    """What torch's safe unpickler refused (e.g. "posix.system"), from its error message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return f"it names {found.group(1)}" if found else "objects of unknown kind"


def load_torch_state(path: str | Path, what: str = "checkpoint") -> object:
    """A run state written by `atomic_torch_save` (a checkpoint), read on the CPU with
    `torch.load(weights_only=True)`: plain data and tensors only, nothing executed.

    Raises:
        TrainingError: missing, unreadable, or holding objects that could run code (refused).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"No {what} to resume from at {path}. Run without --resume.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise TrainingError(
            f"Refused to load {path}: it holds objects that are not plain data and tensors, so "
            f"loading it could run code ({refused_global(err)}). ccg's {what}s never do; "
            "start afresh in a new --out folder."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise TrainingError(
            f"The {what} {path} cannot be read ({type(err).__name__}: {err}); it may be "
            "truncated. Start afresh in a new --out folder (or with --overwrite)."
        ) from None
