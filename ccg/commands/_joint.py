"""What `ccg free-energy --project` and `ccg states` share: a flow model's joint samples at one
temperature, drawn through a pilot-fitted product proposal, with their ESS reported."""

from __future__ import annotations

import argparse

import torch

import ccg
from ccg.errors import ConfigError
from ccg.free_energy.tails import PARETO_K_BAD
from ccg.training.product_proposal import model_blocks


def add_joint_arguments(p: argparse.ArgumentParser) -> None:
    """--joint-samples, --pilot-samples, --pilot-sharpness, --pilot-blocks,
    --pilot-cooperative, --pilot-states, --psis and --ais-steps."""
    p.add_argument("--joint-samples", type=int, default=65536,
                   help="joint samples (z from a proposal, one r ~ q(r | z, T) each) that are "
                   "reweighted into projections and populations")
    p.add_argument("--pilot-samples", type=int, default=8192,
                   help="joint samples per round (6 rounds) that fit the product proposal first")
    p.add_argument("--pilot-sharpness", type=float, default=1.0,
                   help="the proposal follows each torsion's marginal to this power, in (0, 1]: "
                   "1 for a well-trained flow; try 0.5 when the joint ESS is tiny and the "
                   "per-z ESS low (the marginals are then learned from a few heavy weights)")
    p.add_argument("--pilot-blocks", choices=("torsion", "residue"), default="torsion",
                   help="the proposal's histograms: one per torsion, or one 2-D histogram per "
                   "residue's (phi, psi) (keeps their coupling; other torsions 1-D)")
    p.add_argument("--pilot-cooperative", type=float, default=0.0,
                   help="share of the proposal's z drawn with one histogram cell shared by "
                   "every block (all residues helical, all extended: joint states the product "
                   "of the blocks makes rare), in [0, 1)")
    p.add_argument("--pilot-states", type=int, default=0,
                   help="R > 0: after the product proposal, fit a mixture over the joint states "
                   "(per-residue Ramachandran labels; halves of each torsion elsewhere) in R "
                   "rounds of 16,384 joint samples, and draw from it: follows residues that "
                   "change state together; 0: the product proposal alone")
    p.add_argument("--psis", action="store_true",
                   help="Pareto-smooth the largest weights before estimating (less noise where "
                   "a few weights dominate, for a small bias; JointSamples.smoothed())")
    p.add_argument("--ais-steps", type=int, default=0,
                   help="K > 0: move each r through K annealed MALA stages toward p(r | z) "
                   "(sharper weights where the flow is poor, K energy and force evaluations "
                   "more per sample); 0: the flow's samples as drawn")


def check_joint_arguments(args: argparse.Namespace) -> None:
    """ConfigError unless --pilot-sharpness, --pilot-cooperative, --pilot-states and
    --ais-steps are in range (checked before any work)."""
    if not 0.0 < args.pilot_sharpness <= 1.0:
        raise ConfigError(f"--pilot-sharpness must be in (0, 1] (1: each torsion's marginal; "
                          f"0.5: flatter); got {args.pilot_sharpness}.")
    if not 0.0 <= args.pilot_cooperative < 1.0:
        raise ConfigError(f"--pilot-cooperative must be in [0, 1) (0: off; 0.3: a third of the "
                          f"z share one cell); got {args.pilot_cooperative}.")
    if args.pilot_states < 0:
        raise ConfigError(f"--pilot-states must be >= 0 (0: off; 3: three rounds of the joint-"
                          f"state mixture); got {args.pilot_states}.")
    if args.ais_steps < 0:
        raise ConfigError(f"--ais-steps must be >= 0 (0: plain importance sampling); got "
                          f"{args.ais_steps}.")


def load_flow_model(path: str, device: torch.device, flag_hint: str):
    """The flow model at `path`; ConfigError for a CG model file or a non-torsion map."""
    if ccg.file_kind(path) == "cg":
        raise ConfigError(f"{path} is a CG model (F_theta from `ccg cycle`); {flag_hint} needs "
                          "the flow model (model.pt from `ccg train`) whose joint samples it "
                          "reweights.")
    model = ccg.load_model(path, device=device)
    if not bool(model.cg_map.z_circular.all()):
        raise ConfigError(f"{flag_hint} needs CG coordinates on the torus (a torsion map, or a "
                          "periodic analytic system); this model's CG coordinates "
                          f"({', '.join(model.cg_map.cg_names)}) are Cartesian/linear.")
    return model


def draw_joint(model, args: argparse.Namespace, device: torch.device) -> ccg.JointSamples:
    """Fit the pilot proposal, draw --joint-samples joint samples, print their ESS."""
    gen = torch.Generator(device).manual_seed(args.seed)
    if args.pilot_cooperative:
        blocks = model_blocks(model, args.pilot_blocks) or [(i,) for i in range(model.cg_dim)]
        if len({len(block) for block in blocks}) > 1:
            raise ConfigError(f"--pilot-cooperative shares one cell between the proposal's "
                              f"blocks, which must then be of one size; --pilot-blocks "
                              f"{args.pilot_blocks} gives blocks of sizes "
                              f"{sorted({len(b) for b in blocks})} for this map. Use "
                              "--pilot-blocks torsion, or --pilot-cooperative 0.")
    proposal = ccg.pilot_proposal(model, args.temperature, n_samples=args.pilot_samples,
                                  sharpness=args.pilot_sharpness, blocks=args.pilot_blocks,
                                  generator=gen, cooperative=args.pilot_cooperative)
    if args.pilot_states:
        proposal = ccg.state_mixture_proposal(model, args.temperature, base=proposal,
                                              rounds=args.pilot_states, generator=gen)
    samples = ccg.sample_joint(model, args.temperature, args.joint_samples, proposal=proposal,
                               generator=gen, progress=not args.no_progress,
                               ais_steps=args.ais_steps)
    bad = f", {samples.n_nonfinite} non-finite (weight 0)" if samples.n_nonfinite else ""
    k = samples.pareto_k
    print(f"{len(samples)} joint samples at {args.temperature} K over {model.cg_dim} CG "
          f"coordinates: joint ESS {samples.ess:.3f} ({samples.ess * len(samples):.0f} "
          f"effective), Pareto k {k:.2f}, reverse-KL gap {samples.reverse_kl:.3g} nats{bad}")
    if k >= PARETO_K_BAD:
        print(f"warning: Pareto k {k:.2f} >= {PARETO_K_BAD}: a few weights decide these "
              "estimates, so another --seed gives other numbers and the error bars are too "
              "small. More --joint-samples help slowly; --pilot-states (a proposal that "
              "follows the joint states), --psis (smoothed weights), --ais-steps or a "
              "longer-trained flow help more.")
    if args.psis:
        samples = samples.smoothed()
        print(f"Pareto-smoothed weights: joint ESS {samples.ess:.3f} "
              f"({samples.ess * len(samples):.0f} effective)")
    return samples
