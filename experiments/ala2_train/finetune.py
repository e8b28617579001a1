"""Continue training a trained model for a few steps with changed loss settings, then
evaluate it as evaluate.py does: does a setting help at the end of training?

Usage: python experiments/ala2_train/finetune.py MODEL --out DIR [--steps 400] [--lr 1e-4]
       [--renyi-alpha 0.5]

The run's own config (from the model file) with: `steps`, a cosine schedule from `lr` to
lr / 10, and `renyi_alpha`. The adaptive z proposal restarts from uniform. Evaluated as
evaluate.py does (`populated_ess` of common.py).
"""

from __future__ import annotations

import argparse

import torch
from common import populated_ess

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", required=True, help="folder for the checkpoint and metrics")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--renyi-alpha", type=float, default=1.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 450.0, 600.0])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ccg.load_model(args.model)
    config = ccg.RunConfig.from_dict(model.run_config)
    train = config.train
    train.steps, train.minutes, train.lr, train.lr_final = args.steps, None, args.lr, args.lr / 10
    train.renyi_alpha = args.renyi_alpha
    config.validate()
    loss = ccg.ReverseKL(model, energy_cut=train.energy_cut, renyi_alpha=train.renyi_alpha,
                         group_size=train.samples_per_z)
    proposal = ccg.build_proposal(config, model)
    ccg.Trainer(model, loss, proposal, train, args.out, progress=False).run()
    for temperature in args.temperatures:
        row = populated_ess(model, temperature)
        print(f"renyi_alpha {args.renyi_alpha}, {args.steps} steps at lr {args.lr}: "
              f"{temperature:.0f} K, {row['populated']} points, median ESS "
              f"{row['median_ess']:.3f}, 10th pct {row['p10_ess']:.3f}")


if __name__ == "__main__":
    main()
