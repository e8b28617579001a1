"""The `ccg` command: `ccg info`, `ccg bench`, `ccg train`, ...

Each subcommand is a thin layer over the library; the heavy imports happen inside the
handlers so that `ccg --help` is instant.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  ccg info                                  versions, device, the default system
  ccg bench energy                          torch vs OpenMM energy+forces throughput
  ccg train --minutes 5 --out runs/ala2     train the default (alanine dipeptide, phi/psi)
  ccg train --config my.toml --resume       continue an interrupted run
  ccg free-energy runs/ala2/model.pt --temperature 300 --grid 36 --out fes.npz --plot fes.png
  ccg backmap runs/ala2/model.pt --cg traj.h5 --temperature 300 --out atoms.pdb
  ccg cycle --init runs/ala2/model.pt --minutes 30 --out runs/cycle
  ccg simulate runs/cycle/cg_model.pt --temperature 300 --steps 20000 --out cg.npy
  ccg free-energy runs/cycle/cg_model.pt --temperature 450 --grid 36 --out fes_cg.npz
"""


def _cmd_info(args: argparse.Namespace) -> int:
    from ccg.commands.info import info_text

    print(info_text(device=args.device))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ccg.commands.bench import run_bench

    return run_bench(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from ccg.train.run import train_command

    return train_command(args)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a backmapping flow data-free from the force field",
        description="Train q(r | z, T) by reverse KL against the atomistic energy (no MD data). "
        "With no arguments: alanine dipeptide, CG = (phi, psi), T in [300, 600] K. Flags "
        "override the values of --config.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="TOML file with [system], [map], [flow], [train] tables")
    p.add_argument("--system", help="bundled system: alanine-dipeptide, harmonic, double-well, "
                   "mueller-brown")
    p.add_argument("--cg", help="CG map: phi-psi, heavy-atoms, backbone (split for analytic)")
    p.add_argument("--cg-frames", help="bead maps: trajectory whose frames are the z proposal")
    p.add_argument("--minutes", type=float, help="wall-time budget of the optimization")
    p.add_argument("--steps", type=int, help="number of optimization steps")
    p.add_argument("--t-min", type=float, help="lowest training temperature (K)")
    p.add_argument("--t-max", type=float, help="highest training temperature (K)")
    p.add_argument("--t-values", type=float, nargs="+", metavar="T",
                   help="train only at these temperatures (K) instead of the whole range")
    p.add_argument("--z-proposal", choices=["uniform", "adaptive"],
                   help="torsion maps: z uniform on the torus, or adaptive (more z where the "
                   "flow's running estimate of F is low)")
    p.add_argument("--n-z", type=int, help="distinct (z, T) per step")
    p.add_argument("--samples-per-z", type=int, help="flow samples per (z, T)")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--backend", help="flow layers: nflows or normflows")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--dtype", choices=["float32", "float64"], help="training precision")
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccg",
        description="Invertible (cycle) coarse graining with conditional normalizing flows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="versions, device and the default system")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="benchmarks (energy, flow)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=["energy", "flow"], help="what to time")
    p.add_argument("--batch-sizes", default="256,1024,4096", help="comma-separated")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMM threads")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    p.set_defaults(func=_cmd_bench)

    _add_train(sub)
    from ccg.free_energy.cli import add_parser as add_free_energy

    add_free_energy(sub)
    from ccg.backmap import add_parser as add_backmap

    add_backmap(sub)
    from ccg.commands.cycle import add_parser as add_cycle
    from ccg.commands.simulate import add_parser as add_simulate

    add_cycle(sub)
    add_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import ccg

        print(ccg.__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    from ccg.train.trainer import TrainingError

    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TrainingError) as err:
        print(f"ccg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
