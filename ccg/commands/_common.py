"""What every subcommand shares: --threads, --device and --overwrite, and the checks of output
paths that run before any work (so a finished result is never replaced silently and a bad
path fails in a second, not after an hour)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from ccg._checks import check_device
from ccg.errors import ConfigError

MIN_FREE_MB = 50
"""An output folder needs at least this much free disk space."""


def available_cores() -> int:
    """The CPU cores this process may use (its affinity mask; all cores where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def add_resources(p: argparse.ArgumentParser, *, threads: int | None = None,
                  device: str | None = "auto") -> None:
    """--threads (default: the cores this process may use, or `threads`) and --device (default
    `device`; None: the configuration's)."""
    default = threads if threads is not None else available_cores()
    p.add_argument("--threads", type=int, default=default,
                   help=f"torch threads (default: {default}"
                   + (", the cores this process may use)" if threads is None else ")"))
    where = "the config's [train] device, else auto" if device is None else device
    p.add_argument("--device", default=device,
                   help=f"auto (the GPU when there is one), cpu, cuda or cuda:N (default: "
                   f"{where})")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist (default: refuse and change nothing)")


def apply_resources(args: argparse.Namespace, device: str | None = None) -> torch.device:
    """Set the torch thread count; return the device of --device (or `device` when --device
    is not given), checked."""
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1; got {args.threads}.")
    torch.set_num_threads(args.threads)
    spec = args.device if args.device is not None else device
    return check_device("auto" if spec is None else spec, "--device")


def check_number(value: float | None, flag: str, *, minimum: float | None = None,
                 above: float | None = None) -> None:
    """ConfigError naming `flag` unless value >= minimum (or > above); None passes."""
    if value is None:
        return
    if minimum is not None and not value >= minimum:
        raise ConfigError(f"{flag} must be >= {minimum:g}; got {value}.")
    if above is not None and not value > above:
        raise ConfigError(f"{flag} must be > {above:g}; got {value}.")


def check_writable_folder(folder: Path, flag: str) -> None:
    """The folder exists, is a folder, can be written and has room."""
    if not folder.exists():
        raise ConfigError(f"{flag}: the folder {folder} does not exist. Create it first "
                          f"(mkdir -p {folder}) or choose another {flag}.")
    if not folder.is_dir():
        raise ConfigError(f"{flag}: {folder} is a file, not a folder. Choose another {flag}.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{flag}: cannot write in {folder} ({err.strerror or err}). Choose a "
                          f"writable {flag}.") from None
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise ConfigError(f"{flag}: only {free_mb:.0f} MB free on the disk of {folder}; ccg "
                          f"needs at least {MIN_FREE_MB} MB for its outputs. Free some space or "
                          f"choose another {flag}.")


def check_output_file(path: str | Path, flag: str, *, overwrite: bool,
                      suffixes: Iterable[str] | None = None) -> Path:
    """An output file path, checked before any work: a known extension, a writable folder
    with room, and (without --overwrite) no existing file of that name."""
    path = Path(path)
    allowed = None if suffixes is None else sorted(set(suffixes))
    if path.is_dir():
        example = path / ("out" + (allowed[0] if allowed else ""))
        raise ConfigError(f"{flag} {path} is a folder; give a file name inside it "
                          f"(e.g. {example}).")
    if allowed is not None and path.suffix.lower() not in allowed:
        raise ConfigError(f"{flag} {path.name}: unsupported extension "
                          f"'{path.suffix or '(none)'}'; use one of {allowed}.")
    check_writable_folder(path.parent if str(path.parent) else Path("."), flag)
    if path.exists() and not overwrite:
        raise ConfigError(f"{flag} {path} exists already. Nothing was changed. Use --overwrite "
                          f"to replace it, or choose another {flag}.")
    return path


def check_plot_file(path: str | Path, flag: str, *, overwrite: bool) -> Path:
    """`check_output_file` for a figure: any suffix matplotlib can write (.png, .pdf, .svg,
    ...). matplotlib is imported here, not at start-up (0.5-0.8 s of every command)."""
    from matplotlib.figure import Figure

    suffixes = tuple(f".{s}" for s in Figure().canvas.get_supported_filetypes())
    return check_output_file(path, flag, overwrite=overwrite, suffixes=suffixes)


def check_output_folder(path: str | Path, flag: str, *, overwrite: bool, resume: bool,
                        finished: Iterable[str], resumable: Iterable[str]) -> Path:
    """A run's output folder, checked before any work (missing folders on its path are fine:
    the run creates them; the deepest existing one must be a writable folder with room).

    `finished` are the files of a completed run, `resumable` those a run leaves to be resumed.
    Without --overwrite or --resume a folder holding either is refused (naming both flags);
    --resume needs a resumable file there.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder. Choose another {flag}.")
    existing = path  # missing folders are created (like mkdir -p) by the run itself
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    check_writable_folder(existing if str(existing) else Path("."), flag)
    present = [name for name in (*finished, *resumable) if (path / name).exists()]
    can_resume = [name for name in resumable if (path / name).exists()]
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues "
                          "the run in the folder, --overwrite starts a new one there. Give one.")
    if resume and not can_resume:
        raise ConfigError(f"{flag} {path} holds nothing to resume (no {' or '.join(resumable)}). "
                          "Run without --resume.")
    if present and not (resume or overwrite):
        raise ConfigError(f"{flag} {path} already holds a run ({', '.join(present)}). Nothing "
                          "was changed. Use --resume to continue it, --overwrite to replace it, "
                          f"or choose another {flag}.")
    return path
