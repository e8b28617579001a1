"""`ccg bench energy|flow|train`: throughput benchmarks with ratios measured in the same run."""

from __future__ import annotations

import argparse

import torch

import ccg
from ccg._checks import check_device
from ccg.commands._common import add_overwrite, check_output_file
from ccg.io.atomic import atomic_write_text
from ccg.training.config import COMPILE_MODES


def add_parser(sub) -> None:
    """Register `ccg bench`."""
    p = sub.add_parser("bench", help="benchmarks (energy, flow, train)",
                       description="Time torch against OpenMM energies (energy), the parts of a "
                       "training step per flow backend (flow), or the whole training step per "
                       "device, batch size and compile mode, side by side (train).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=["energy", "flow", "train"], help="what to time")
    p.add_argument("--batch-sizes", default="256,1024,4096", help="comma-separated")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMM threads (1 by default, so tables compare across machines)")
    p.add_argument("--compile", action="store_true",
                   help="energy: also time torch.compile; train: compare eager with each "
                   "[train] compile mode (flow, energy, all)")
    p.add_argument("--devices", default="cpu", help="train: comma-separated devices "
                   "(cpu, cuda, cuda:N)")
    p.add_argument("--repeats", type=int, default=5, help="train: timed steps per setting")
    p.add_argument("--system", default="alanine-dipeptide",
                   help="energy, train: a registered molecular system "
                        "(ccg.systems.SYSTEMS), e.g. ala5-obc2, ala3-gbn2, chignolin-gbn2")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark named by `args.what`, print a markdown table, optionally save it."""
    sizes = tuple(int(s) for s in str(args.batch_sizes).split(",") if s.strip())
    if not sizes or min(sizes) < 1:
        raise ValueError(f"Expected --batch-sizes as positive integers like 256,1024; got "
                         f"'{args.batch_sizes}'.")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}.")
    if args.out:
        check_output_file(args.out, "--out", overwrite=args.overwrite)
    torch.set_num_threads(args.threads)
    if args.what == "energy":
        registry = ccg.SYSTEMS
        if registry.info(args.system)["kind"] != "molecular":  # info() names the valid ones
            molecular = [n for n in registry.names() if registry.info(n)["kind"] == "molecular"]
            raise ValueError(f'--system "{args.system}" is not a molecular system; '
                             f"the energy benchmark needs one of {molecular}.")
        system = registry.resolve(args.system)()
        rows = ccg.benchmark_energy(system, sizes, n_threads=args.threads, compile=args.compile)
        table = ccg.format_energy_table(rows)
    elif args.what == "flow":
        table = ccg.format_flow_table(ccg.benchmark_flow_backends(sizes, n_threads=args.threads))
    else:
        devices = [str(check_device(d.strip(), "--devices")) for d in args.devices.split(",")
                   if d.strip()]
        modes = COMPILE_MODES if args.compile else ("none",)
        table = ccg.format_training_table(ccg.benchmark_training(
            sizes, devices=devices, compile_modes=modes, repeats=args.repeats,
            system=args.system))
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    return 0
