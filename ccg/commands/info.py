"""`ccg info`: versions, device, and a summary of the default system."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

import torch

import ccg
from ccg._checks import check_compiler
from ccg.commands._common import available_cores
from ccg.errors import ConfigError


def add_parser(sub) -> None:
    """Register `ccg info`."""
    p = sub.add_parser("info", help="versions, device and the default system",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="the device to report on: auto, cpu, cuda "
                   "or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(info_text(device=args.device))
    return 0


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info_text(device: str = "cpu") -> str:
    """The text `ccg info` prints."""
    lines = [f"ccg {ccg.__version__} (Python {platform.python_version()})"]
    for name, dist in (("torch", "torch"), ("openmm", "openmm"), ("mdtraj", "mdtraj"),
                       ("normflows", "normflows"), ("nflows", "nflows"), ("numpy", "numpy")):
        lines.append(f"  {name:<10} {_version(dist)}")
    cuda = torch.cuda.is_available()
    gpu = f"cuda available: {torch.cuda.get_device_name(0)}" if cuda else "cuda not available"
    lines.append(f"device: {device} ({gpu})")
    lines.append(f"cores this process may use: {available_cores()} (the default of --threads)")
    try:
        check_compiler("all", torch.device("cpu"))
        lines.append("torch.compile on the CPU: a C++ compiler works (ccg train --compile)")
    except ConfigError:
        lines.append("torch.compile on the CPU: no working C++ compiler (ccg train --compile "
                     "needs one; eager training is unaffected)")
    if device.startswith("cuda") and not cuda:
        lines.append("  warning: --device cuda requested but no CUDA device is visible")
    lines.append("")
    lines.append("registered systems: " + ", ".join(ccg.SYSTEMS.names()))
    lines.append("registered CG maps: " + ", ".join(ccg.CG_MAPS.names()))
    lines.append("")
    lines.append("default system: alanine dipeptide (amber99sbildn, vacuum, NoCutoff, flexible)")
    lines.append(ccg.alanine_dipeptide().summary())
    return "\n".join(lines)
