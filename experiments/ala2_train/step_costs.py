"""Relative cost of one training step for settings that change it, measured side by side.

Usage: python experiments/ala2_train/step_costs.py [--repeats 6] [--only "4 layers" ...]

Builds one trainer per setting in one process and times their steps interleaved, so the
host's noise cancels in the ratios (printed against the first setting timed: the 8-layer,
B = 1024 step unless `--only` names others).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch

import ccg

SETTINGS = {
    "8 layers": ({"n_layers": 8}, {}),
    "4 layers": ({"n_layers": 4}, {}),
    "6 layers": ({"n_layers": 6}, {}),
    "8 layers, 16 bins": ({"n_layers": 8, "n_bins": 16}, {}),
    "8 layers, B = 512": ({"n_layers": 8}, {"samples_per_z": 8}),
    "8 layers, path gradient": ({"n_layers": 8}, {"path_gradient": True}),
    "4 layers, forward_weight 1": ({"n_layers": 4}, {"forward_weight": 1.0}),
    "4 layers, scale_after_layers": ({"n_layers": 4, "scale_after_layers": True}, {}),
}


def _trainer(flow: dict, train: dict, out: str) -> ccg.Trainer:
    config = ccg.RunConfig()
    config.train.steps = 1
    for key, value in flow.items():
        setattr(config.flow, key, value)
    for key, value in train.items():
        setattr(config.train, key, value)
    config.validate()
    model = ccg.build_model(config)
    loss = ccg.ReverseKL(model, energy_cut=config.train.energy_cut,
                         path_gradient=config.train.path_gradient,
                         forward_weight=config.train.forward_weight,
                         group_size=config.train.samples_per_z)
    proposal = ccg.build_proposal(config, model)
    return ccg.Trainer(model, loss, proposal, config.train, out, progress=False)


def time_interleaved(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Mean seconds per call of each callable, after one warm-up call each, timed in turn
    (round-robin) so that slow stretches of a noisy host hit all of them alike."""
    for step in steps.values():
        step()
    total = dict.fromkeys(steps, 0.0)
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            total[name] += time.perf_counter() - start
    return {name: seconds / repeats for name, seconds in total.items()}


def print_ratios(seconds: dict[str, float], base: str, label: str) -> None:
    """Markdown table: seconds per step and the ratio to `base`."""
    print(f"| {label} | step (s) | step / {base} |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} | {value / seconds[base]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), metavar="SETTING",
                        help="time only these settings (the first is the baseline of the ratios); "
                             f"choices: {', '.join(SETTINGS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or list(SETTINGS)
    with tempfile.TemporaryDirectory() as out:
        trainers = {name: _trainer(*SETTINGS[name], out) for name in names}
        seconds = time_interleaved({name: tr.train_step for name, tr in trainers.items()},
                                   args.repeats)
    print_ratios(seconds, names[0], "setting")

if __name__ == "__main__":
    main()
