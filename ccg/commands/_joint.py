"""What `ccg free-energy --project` and `ccg states` share: a flow model's joint samples at one
temperature, drawn through a pilot-fitted product proposal, with their ESS reported."""

from __future__ import annotations

import argparse

import torch

import ccg
from ccg.errors import ConfigError


def add_joint_arguments(p: argparse.ArgumentParser) -> None:
    """--joint-samples, --pilot-samples, --pilot-sharpness and --pilot-blocks."""
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


def check_pilot_sharpness(value: float) -> None:
    """ConfigError unless --pilot-sharpness is in (0, 1] (checked before any work)."""
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"--pilot-sharpness must be in (0, 1] (1: each torsion's marginal; "
                          f"0.5: flatter); got {value}.")


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
    proposal = ccg.pilot_proposal(model, args.temperature, n_samples=args.pilot_samples,
                                  sharpness=args.pilot_sharpness, blocks=args.pilot_blocks,
                                  generator=gen)
    samples = ccg.sample_joint(model, args.temperature, args.joint_samples, proposal=proposal,
                               generator=gen, progress=not args.no_progress)
    bad = f", {samples.n_nonfinite} non-finite (weight 0)" if samples.n_nonfinite else ""
    print(f"{len(samples)} joint samples at {args.temperature} K over {model.cg_dim} CG "
          f"coordinates: joint ESS {samples.ess:.3f} ({samples.ess * len(samples):.0f} "
          f"effective), reverse-KL gap {samples.reverse_kl:.3g} nats{bad}")
    return samples
