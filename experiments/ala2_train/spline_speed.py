"""Step time with ccg's mask-free linear-tail spline against nflows' masked one, side by side.

Usage: python experiments/ala2_train/spline_speed.py [--repeats 20] [--threads 2]

Both compute the same map (tests/test_flows.py checks values, log|det| and gradients to
1e-12); `ccg.flows.coupling.linear_tail_spline` evaluates every element with the inputs
clamped and selects the identity tails with `torch.where`, where nflows'
`unconstrained_rational_quadratic_spline` uses boolean indexing. One default trainer
(alanine dipeptide, B = 1024), steps timed alternately with either function patched in.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline
from step_costs import print_ratios, time_interleaved

import ccg.flows.coupling as coupling
from ccg import build_model, build_proposal
from ccg.training.config import RunConfig
from ccg.training.losses import ReverseKL
from ccg.training.trainer import Trainer


def _masked(x, widths, heights, derivatives, *, inverse, tail_bound):
    return unconstrained_rational_quadratic_spline(
        x, widths, heights, derivatives, inverse=inverse, tails="linear", tail_bound=tail_bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = RunConfig()
    config.train.steps = 1
    torch.manual_seed(0)
    model = build_model(config)
    versions = {"nflows masked (before)": _masked, "mask-free (now)": coupling.linear_tail_spline}
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, ReverseKL(model), build_proposal(config, model), config.train,
                          out, progress=False)

        def step_with(spline):
            def step():
                coupling.linear_tail_spline = spline
                trainer.train_step()
            return step

        seconds = time_interleaved({name: step_with(fn) for name, fn in versions.items()},
                                   args.repeats)
    print_ratios(seconds, "nflows masked (before)", "linear-tail spline")

if __name__ == "__main__":
    main()
