"""Data-parallel training (PyTorch DDP, gloo on CPU) in the ordinary test suite: two processes
train the double well together through `ccg.train`; after every step both hold the same
parameters while each drew its own samples; one model file is written; the run resumes from
its checkpoint with two processes or with one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ccg
from ccg.training.trainer import Trainer


def _config(steps: int) -> ccg.RunConfig:
    return ccg.RunConfig.from_dict({
        "system": {"name": "double-well"}, "map": {"cg": "split"},
        "flow": {"n_layers": 2, "hidden": 16, "n_blocks": 1},
        "train": {"steps": steps, "n_z": 8, "samples_per_z": 4, "checkpoint_every": 2,
                  "dtype": "float64", "device": "cpu", "seed": 5},
    })


def _worker(rank: int, world: int, port: int, out: str, records: str, steps: int,
            resume: bool) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    seen: list[tuple[torch.Tensor, float]] = []
    step_once = Trainer.train_step

    def step_and_record(self):
        row = step_once(self)
        params = torch.cat([p.detach().flatten() for p in self.model.flow.parameters()])
        seen.append((params.clone(), row["loss"]))
        return row

    Trainer.train_step = step_and_record
    try:
        ccg.train(_config(steps), out, resume=resume, progress=False)
    finally:
        Trainer.train_step = step_once
        torch.save(seen, Path(records) / f"rank{rank}.pt")
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(world: int, out: Path, records: Path, steps: int, resume: bool = False):
    records.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, _free_port(), str(out), str(records), steps, resume),
             nprocs=world, join=True)
    return [torch.load(records / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_ranks_train_the_same_parameters_write_one_model_and_resume(tmp_path):
    out = tmp_path / "run"
    rank0, rank1 = _train(2, out, tmp_path / "first", steps=4)
    assert len(rank0) == len(rank1) == 4
    for (p0, loss0), (p1, loss1) in zip(rank0, rank1, strict=True):
        assert torch.equal(p0, p1)  # the same parameters after every step
        assert loss0 != loss1  # from different samples: each rank has its own random stream
    assert not torch.equal(rank0[0][0], rank0[-1][0])  # and they did move
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json",
                                                     "model.pt", "training.png"]
    model = ccg.load_model(out / "model.pt", dtype=torch.float64)
    final = torch.cat([p.detach().flatten() for p in model.flow.parameters()])
    torch.testing.assert_close(final, rank0[-1][0], rtol=0, atol=0)

    # resume with two ranks: continues at step 4, still in lockstep
    rank0, rank1 = _train(2, out, tmp_path / "second", steps=6, resume=True)
    assert len(rank0) == len(rank1) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rank0, rank1, strict=True))
    assert ccg.load_model(out / "model.pt").metrics["steps"] == 6

    # and with one rank (another number of processes)
    (single,) = _train(1, out, tmp_path / "third", steps=8, resume=True)
    assert len(single) == 2
    assert ccg.load_model(out / "model.pt").metrics["steps"] == 8


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_torchrun_command_line(tmp_path):
    """The documented command: torchrun --nproc_per_node 2 -m ccg train ... (on CPU, gloo)."""
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(_free_port()), "-m", "ccg", "train", "--system",
               "double-well", "--steps", "3", "--n-z", "4", "--samples-per-z", "2",
               "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done: 3 steps") == 1  # rank 0 alone prints
    assert ccg.load_model(out / "model.pt").metrics["steps"] == 3
