"""`ccg cycle`: refine a backmapping flow and fit the CG free-energy model F_theta(z, T)."""

from __future__ import annotations

import argparse

import ccg
from ccg.commands._common import (
    add_overwrite,
    add_resources,
    apply_resources,
    check_output_folder,
)


def add_parser(sub) -> None:
    """Register `ccg cycle`; the defaults are those of `ccg.CycleConfig`."""
    c = ccg.CycleConfig()
    p = sub.add_parser(
        "cycle", help="the cycle: fit a CG free-energy model F_theta(z, T) and refine the flow",
        description="Iterate: sample z from F_theta (Langevin) and an exploration proposal -> "
        "fine-tune the flow on those z -> estimate beta F, mean forces and <U>_z there -> refit "
        "F_theta; until F_theta predicts the new estimates (which it was not fitted to) within "
        "their statistical error at every temperature (--chi2-max) and their median ESS "
        "reaches --ess-target, or the budget ends (--minutes, --iterations). Writes flow.pt, "
        "cg_model.pt, metrics.json, cycle.png into --out after every iteration (--resume "
        "continues). Without --init a flow is first "
        "trained as `ccg train` would (--initial-minutes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init", help="flow model.pt to start from (from `ccg train`)")
    p.add_argument("--initial-minutes", type=float, default=10.0,
                   help="without --init: minutes of initial `ccg train` (default system)")
    p.add_argument("--system", help="without --init: bundled system (as in `ccg train`)")
    p.add_argument("--cg", help="without --init: CG map (as in `ccg train`)")
    p.add_argument("--cg-frames", help="bead maps: CG frames for the exploration proposal")
    p.add_argument("--temperatures", type=float, nargs="+", metavar="T",
                   default=c.temperatures, help="estimation temperatures (K)")
    p.add_argument("--iterations", type=int, default=c.iterations,
                   help="at most this many iterations (default: as many as --minutes allows; "
                   "6 without --minutes)")
    p.add_argument("--minutes", type=float, help="time budget of the iterations")
    p.add_argument("--points", type=int, default=c.points_per_temperature,
                   help="points per temperature per iter.")
    p.add_argument("--samples", type=int, default=c.samples_per_point,
                   help="flow samples per point")
    p.add_argument("--explore-fraction", type=float, default=c.explore_fraction,
                   help="share of points from the exploration proposal (rest from F_theta)")
    p.add_argument("--finetune-steps", type=int, default=c.finetune_steps,
                   help="flow steps per iteration")
    p.add_argument("--finetune-lr", type=float, default=c.finetune_lr,
                   help="learning rate of the flow's fine-tuning")
    p.add_argument("--finetune-at-estimation-temperatures", action="store_true",
                   help="fine-tune the flow only at --temperatures (transfer studies)")
    p.add_argument("--langevin-steps", type=int, default=c.langevin_steps,
                   help="CG Langevin steps per walker on F_theta, per temperature and iter.")
    p.add_argument("--walkers", type=int, default=c.langevin_walkers,
                   help="CG Langevin walkers per temperature")
    p.add_argument("--fit-steps", type=int, default=c.fit_steps,
                   help="F_theta fit steps (first iter.)")
    p.add_argument("--cg-hidden", type=int, default=c.hidden,
                   help="hidden units of each F_theta member (a 6-D peptide needs 128)")
    p.add_argument("--chi2-max", type=float, default=c.chi2_max,
                   help="convergence: F_theta's largest held-out reduced chi-square (values, "
                   "forces, <U>) at every temperature")
    p.add_argument("--ess-target", type=float, default=c.ess_target,
                   help="convergence: median ESS")
    p.add_argument("--seed", type=int, default=c.seed, help="random seed")
    p.add_argument("--out", default="runs/cycle", help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out after its last finished iteration")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_resources(p, device="cpu")
    p.set_defaults(func=run)


def _cycle_config(args: argparse.Namespace) -> ccg.CycleConfig:
    return ccg.CycleConfig(
        temperatures=list(args.temperatures), iterations=args.iterations, minutes=args.minutes,
        points_per_temperature=args.points, samples_per_point=args.samples,
        explore_fraction=args.explore_fraction, finetune_steps=args.finetune_steps,
        finetune_lr=args.finetune_lr,
        train_only_at_estimation_temperatures=args.finetune_at_estimation_temperatures,
        langevin_steps=args.langevin_steps, langevin_walkers=args.walkers,
        fit_steps=args.fit_steps, hidden=args.cg_hidden, chi2_max=args.chi2_max,
        ess_target=args.ess_target,
        seed=args.seed,
    ).validate()


def _initial_run_config(args: argparse.Namespace) -> ccg.RunConfig:
    """How the initial flow is trained when there is no --init."""
    config = ccg.RunConfig()
    if args.system:
        config.system.name = args.system
        config.system.validate()
        config.map.cg = config.system.default_map
    if args.cg:
        config.map.cg = args.cg
    config.train.minutes = args.initial_minutes
    if args.finetune_at_estimation_temperatures:
        config.train.t_values = list(args.temperatures)
    return config.validate()


def run(args: argparse.Namespace) -> int:
    config = _cycle_config(args)
    out = check_output_folder(args.out, "--out", overwrite=args.overwrite, resume=args.resume,
                              finished=("cg_model.pt", "flow.pt"),
                              resumable=("cycle_state.pt", "initial/checkpoint.pt"))
    device = apply_resources(args)
    init = run_config = None
    if args.init and not args.resume:
        init = ccg.load_model(args.init, device=device)
    elif not args.resume:
        run_config = _initial_run_config(args)
        run_config.train.device = str(device)
    cycle = ccg.run_cycle(out, config, init=init, run_config=run_config,
                          cg_frames=args.cg_frames, resume=args.resume,
                          progress=not args.no_progress)
    if cycle.metrics:
        initial = cycle.initial_evaluations
        extra = "" if initial is None else f" (+ {initial / 1e6:.2f} M for the initial flow)"
        held_out = cycle.metrics[-1]["held_out"]
        worst = max((ccg.worst_chi2(ccg.HeldOutScore(**s)) for s in held_out.values()),
                    default=float("nan"))
        if cycle.converged:
            state = (f"converged: F_theta predicts new estimates within their noise at every "
                     f"temperature (largest held-out chi2 {worst:.2f} <= {config.chi2_max:g})")
        else:
            state = (f"not converged (largest held-out chi2 {worst:.2f}, target "
                     f"{config.chi2_max:g}; median ESS {cycle.metrics[-1]['median_ess']:.2f}, "
                     f"target {config.ess_target:g})")
        print(f"{state}; {cycle.iteration} iterations, {cycle.evaluations / 1e6:.2f} M energy "
              f"evaluations{extra}, {cycle.elapsed_s:.0f} s")
    print(f"flow:     {out / 'flow.pt'}\nCG model: {out / 'cg_model.pt'}\n"
          f"metrics:  {out / 'metrics.json'}\nplot:     {out / 'cycle.png'}")
    return 0
