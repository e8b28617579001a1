"""`ccg bench energy|flow`: throughput benchmarks with ratios measured in the same run."""

from __future__ import annotations

import argparse

import torch

from ccg.io.atomic import atomic_write_text


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark named by `args.what`, print a markdown table, optionally save it."""
    sizes = tuple(int(s) for s in str(args.batch_sizes).split(",") if s.strip())
    if not sizes or min(sizes) < 1:
        raise ValueError(f"Expected --batch-sizes as positive integers like 256,1024; got "
                         f"'{args.batch_sizes}'.")
    torch.set_num_threads(args.threads)
    if args.what == "energy":
        from ccg.systems import alanine_dipeptide
        from ccg.systems.benchmark import benchmark_energy, format_table

        rows = benchmark_energy(alanine_dipeptide(), sizes, n_threads=args.threads,
                                compile=args.compile)
        table = format_table(rows)
    else:
        from ccg.train.benchmark import benchmark_flow_backends, format_flow_table

        table = format_flow_table(benchmark_flow_backends(sizes, n_threads=args.threads))
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    return 0
