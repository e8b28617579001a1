"""Does a training step wait for the GPU? Runs steps of the default alanine-dipeptide run on
CUDA under `torch.cuda.set_sync_debug_mode("error")`, which raises at any operation that
synchronizes the host with the device (.item(), a copy to the CPU, nonzero, boolean masks),
and prints the step time with and without reading the metrics every step.

    python experiments/bench/sync_check.py --batch-size 1024 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1024, help="n_z x 16 samples")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--out", default="runs/sync_check", help="trainer folder")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; this check needs one")
    config = ccg.RunConfig.from_dict({"train": {
        "n_z": args.batch_size // 16, "samples_per_z": 16, "steps": 10_000,
        "device": "cuda", "grad_clip_relative": 3.0, "grad_skip_relative": 10.0,
        "ema_decay": 0.999}}).validate()
    model = ccg.build_model(config)
    trainer = ccg.Trainer(model, ccg.ReverseKL(model, energy_cut=config.train.energy_cut),
                          ccg.build_proposal(config, model), config.train, args.out,
                          progress=False)
    for _ in range(30):  # warm-up: thresholds from step 20 on, allocator settled
        trainer.train_step()
        trainer.step += 1
    trainer.flush()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
            trainer.step += 1
        launched = time.perf_counter() - start
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    print(f"{args.steps} steps at B = {args.batch_size} under sync_debug_mode('error'): no "
          f"synchronizing operation; launched in {1e3 * launched / args.steps:.1f} ms per step, "
          f"done in {1e3 * total / args.steps:.1f} ms per step")
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
        trainer.step += 1
        trainer.flush()  # reading every step, as before
    torch.cuda.synchronize()
    print(f"reading the metrics every step: {1e3 * (time.perf_counter() - start) / args.steps:.1f}"
          " ms per step")


if __name__ == "__main__":
    main()
