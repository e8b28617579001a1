"""The subcommands of `ccg`: one module each, with `add_parser(subparsers)` and `run(args)`.

Each `run` validates its inputs, calls the public API (`import ccg`) and prints where its
outputs are. `COMMANDS` is the order `ccg --help` lists them in.
"""

from ccg.commands import backmap, bench, cycle, free_energy, info, simulate, states, train

COMMANDS = (info, bench, train, free_energy, states, backmap, cycle, simulate)
"""Subcommand modules, in help order."""

__all__ = ["COMMANDS"]
