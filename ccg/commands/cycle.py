"""`ccg cycle`: refine a backmapping flow and fit the CG free-energy model F_theta(z, T)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "cycle", help="the cycle: fit a CG free-energy model F_theta(z, T) and refine the flow",
        description="Iterate: sample z from F_theta (Langevin) and an exploration proposal -> "
        "fine-tune the flow on those z -> estimate beta F, mean forces and <U>_z there -> refit "
        "F_theta; until F_theta changes less than --tol on the visited points and their median "
        "ESS reaches --ess-target. Writes flow.pt, cg_model.pt, metrics.json, cycle.png into "
        "--out after every iteration (--resume continues). Without --init a flow is first "
        "trained as `ccg train` would (--initial-minutes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init", help="flow model.pt to start from (from `ccg train`)")
    p.add_argument("--initial-minutes", type=float, default=10.0,
                   help="without --init: minutes of initial `ccg train` (default system)")
    p.add_argument("--system", help="without --init: bundled system (as in `ccg train`)")
    p.add_argument("--cg", help="without --init: CG map (as in `ccg train`)")
    p.add_argument("--cg-frames", help="bead maps: CG frames for the exploration proposal")
    p.add_argument("--temperatures", type=float, nargs="+", metavar="T",
                   default=[300.0, 400.0, 500.0, 600.0], help="estimation temperatures (K)")
    p.add_argument("--iterations", type=int, default=6, help="at most this many iterations")
    p.add_argument("--minutes", type=float, help="time budget of the iterations")
    p.add_argument("--points", type=int, default=192, help="points per temperature per iter.")
    p.add_argument("--samples", type=int, default=128, help="flow samples per point")
    p.add_argument("--explore-fraction", type=float, default=0.5,
                   help="share of points from the exploration proposal (rest from F_theta)")
    p.add_argument("--finetune-steps", type=int, default=300, help="flow steps per iteration")
    p.add_argument("--finetune-lr", type=float, default=2e-4)
    p.add_argument("--finetune-at-estimation-temperatures", action="store_true",
                   help="fine-tune the flow only at --temperatures (transfer studies)")
    p.add_argument("--fit-steps", type=int, default=1500, help="F_theta fit steps (first iter.)")
    p.add_argument("--tol", type=float, default=0.1, help="convergence: change of F_theta (kT)")
    p.add_argument("--ess-target", type=float, default=0.5, help="convergence: median ESS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/cycle", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from ccg.cycle import CycleConfig

    return CycleConfig(
        temperatures=list(args.temperatures), iterations=args.iterations, minutes=args.minutes,
        points_per_temperature=args.points, samples_per_point=args.samples,
        explore_fraction=args.explore_fraction, finetune_steps=args.finetune_steps,
        finetune_lr=args.finetune_lr,
        train_only_at_estimation_temperatures=args.finetune_at_estimation_temperatures,
        fit_steps=args.fit_steps, tol_kt=args.tol, ess_target=args.ess_target, seed=args.seed,
    ).validate()


def _initial_model(args: argparse.Namespace, out: Path):
    """The flow to start from, and the RunConfig that describes it."""
    from ccg.io.model_file import load_model
    from ccg.train.config import RunConfig
    from ccg.train.run import train

    if args.init:
        model = load_model(args.init)
        config = RunConfig.from_dict(model.run_config) if model.run_config else RunConfig()
    else:
        config = RunConfig()
        if args.system:
            config.system.name = args.system
            config.map.cg = "split" if args.system != "alanine-dipeptide" else config.map.cg
        if args.cg:
            config.map.cg = args.cg
        config.train.minutes = args.initial_minutes
        if args.finetune_at_estimation_temperatures:
            config.train.t_values = list(args.temperatures)
        config.validate()
        print(f"no --init: training an initial flow for {args.initial_minutes} min -> "
              f"{out / 'initial'}/")
        model, summary = train(config, out / "initial", progress=not args.no_progress)
        model.run_config, model.metrics = config.to_dict(), summary
    if args.cg_frames:
        config.map.cg_frames = args.cg_frames
    return model, config.validate()


def run(args: argparse.Namespace) -> int:
    from ccg.cycle import Cycle
    from ccg.train.run import build_proposal

    config = _config(args)
    out = Path(args.out)
    if args.resume:
        from ccg.io.model_file import load_model
        from ccg.train.config import RunConfig

        flow = load_model(out / "flow.pt") if (out / "flow.pt").is_file() else None
        if flow is None:
            raise FileNotFoundError(f"Nothing to resume in {out} (no flow.pt). Run without "
                                    "--resume.")
        run_config = RunConfig.from_dict(flow.run_config) if flow.run_config else RunConfig()
        if args.cg_frames:
            run_config.map.cg_frames = args.cg_frames
        explore = build_proposal(run_config.validate(), flow)
        cycle = Cycle.resume(out, explore, config, progress=not args.no_progress)
        print(f"resuming {out} after iteration {cycle.iteration}")
    else:
        model, run_config = _initial_model(args, out)
        explore = build_proposal(run_config, model)
        cycle = Cycle(model, explore, config, out, progress=not args.no_progress)
    cycle.run()
    last = cycle.metrics[-1] if cycle.metrics else None
    state = "converged" if cycle.converged else "not converged"
    if last:
        initial = cycle.initial_evaluations
        extra = "" if initial is None else f" (+ {initial / 1e6:.2f} M for the initial flow)"
        print(f"{state} after {cycle.iteration} iterations, "
              f"{cycle.evaluations / 1e6:.2f} M energy evaluations{extra}, "
              f"{cycle.elapsed_s:.0f} s")
    print(f"flow:     {out / 'flow.pt'}\nCG model: {out / 'cg_model.pt'}\n"
          f"metrics:  {out / 'metrics.json'}\nplot:     {out / 'cycle.png'}")
    return 0
