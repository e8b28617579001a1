"""The `ccg` command: `ccg info`, `ccg bench`, `ccg train`, `ccg free-energy`, `ccg states`,
`ccg backmap`, `ccg cycle`, `ccg simulate`.

The only place (with `ccg.commands`) that parses arguments. Each subcommand is a module of
`ccg.commands` with `add_parser` and `run`; errors a user can fix (`ccg.CCGError`, ValueError,
FileNotFoundError) become a one-paragraph message and exit code 2. The library's progress
messages (the `ccg` logger, INFO) are printed to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading

import ccg
from ccg.commands import COMMANDS

EPILOG = """examples:
  ccg info                                  versions, device, the default system
  ccg bench energy                          torch vs OpenMM energy+forces throughput
  ccg train --minutes 5 --out runs/ala2     train the default (alanine dipeptide, phi/psi)
  ccg train --config my.toml --resume       continue an interrupted run
  ccg free-energy runs/ala2/model.pt --temperature 300 --grid 36 --out fes.npz --plot fes.png
  ccg states runs/ala2/model.pt --temperature 300 --out states.npz --plot rama.png
  ccg backmap runs/ala2/model.pt --cg traj.h5 --temperature 300 --out atoms.pdb
  ccg cycle --init runs/ala2/model.pt --minutes 30 --out runs/cycle
  ccg simulate runs/cycle/cg_model.pt --temperature 300 --steps 20000 --out cg.npy
  ccg free-energy runs/cycle/cg_model.pt --temperature 450 --grid 36 --out fes_cg.npz
"""


def build_parser() -> argparse.ArgumentParser:
    """The `ccg` argument parser with every subcommand of `ccg.commands.COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="ccg",
        description="Invertible (cycle) coarse graining with conditional normalizing flows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


class _StdoutHandler(logging.Handler):
    """Prints log records to the current sys.stdout (which tests may have replaced)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout, flush=True)


def _show_library_messages() -> None:
    """Route the library's INFO messages (logger "ccg") to stdout, once per process."""
    logger = logging.getLogger("ccg")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _Terminated(Exception):
    """SIGTERM outside a training loop: unwinds like Ctrl-C, so temporary files go."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _resume_hint(argv: list[str]) -> str:
    words = [w for w in argv if w != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return "ccg " + " ".join(shlex.quote(w) for w in words)


def main(argv: list[str] | None = None) -> int:
    """Run `ccg` with `argv` (default: sys.argv[1:]); returns the exit code: 0, 2 for an
    error the user can fix (a one-paragraph message on stderr, nothing written), 128 + signal
    for SIGINT / SIGTERM."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(ccg.__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    _show_library_messages()
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 prints (not errors)
        sys.stdout = open(os.devnull, "w")
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except ccg.Interrupted as stop:
        print(f"ccg {args.command}: {stop}. Continue with: {_resume_hint(argv)}",
              file=sys.stderr)
        return stop.exit_code
    except (KeyboardInterrupt, _Terminated) as stop:
        signum = signal.SIGTERM if isinstance(stop, _Terminated) else signal.SIGINT
        print(f"ccg {args.command}: interrupted; no partial output was left.", file=sys.stderr)
        return 128 + signum
    except (ccg.CCGError, ValueError, FileNotFoundError) as err:
        print(f"ccg {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
