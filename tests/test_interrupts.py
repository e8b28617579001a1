"""Kill and resume, as a user's machine would do it: `ccg train` and `ccg cycle` run as real
processes, are killed with SIGKILL (no chance to save anything) or stopped with SIGINT (Ctrl-C:
finish the step, save, exit 130) at a random moment, and `--resume` must end exactly where an
uninterrupted run ends: the same weights bit for bit and the same loss history, so the
optimizer and random state came back too. At most one checkpoint interval is lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ccg.io.tensor_file import read_tensor_file
from ccg.training.trainer import read_checkpoint

CHECKPOINT_EVERY = 10
TRAIN = ["train", "--system", "double-well", "--steps", "200", "--checkpoint-every",
         str(CHECKPOINT_EVERY), "--n-z", "16", "--samples-per-z", "4", "--dtype", "float64",
         "--no-progress", "--threads", "1", "--device", "cpu"]
CYCLE = ["cycle", "--iterations", "3", "--points", "16", "--samples", "8", "--finetune-steps",
         "5", "--fit-steps", "40", "--langevin-steps", "200", "--temperatures", "300", "600",
         "--no-progress", "--threads", "1"]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ccg", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    process = _start(args)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() - start < timeout, f"{path} did not appear"
        time.sleep(0.05)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_tensor_file(path)[1]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted training and cycle (the same commands, never stopped)."""
    folder = tmp_path_factory.mktemp("reference")
    _run([*TRAIN, "--out", str(folder / "train")])
    _run([*CYCLE, "--init", str(folder / "train" / "model.pt"), "--out", str(folder / "cycle")])
    return folder


def _losses(folder: Path) -> list[float]:
    return json.loads((folder / "metrics.json").read_text())["history"]["loss"]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_train_stopped_at_a_random_step_resumes_exactly(signum, reference, tmp_path):
    out = tmp_path / "run"
    process = _start([*TRAIN, "--out", str(out)])
    _wait_for(out / "checkpoint.pt", process)
    time.sleep(random.Random(signum).uniform(0.0, 0.6))  # somewhere past the first checkpoint
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    state = read_checkpoint(out / "checkpoint.pt")  # intact, whatever the moment
    assert 0 < state["step"] < 200, "the run ended before the signal: slow the run down"
    assert not (out / "model.pt").exists()
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        assert state["step"] % CHECKPOINT_EVERY == 0  # at most one interval was lost
    else:
        assert process.returncode == 130
        assert "Traceback" not in err
        assert f"stopped at step {state['step']}" in err and "--resume" in err
        assert len(state["metrics"]["loss"]) == state["step"]  # nothing lost at all
    resumed = _run([*TRAIN, "--out", str(out), "--resume"])
    assert "done: 200 steps" in resumed.stdout
    _assert_same_weights(out / "model.pt", reference / "train" / "model.pt")
    assert _losses(out) == _losses(reference / "train")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_cycle_stopped_in_an_iteration_resumes_exactly(signum, reference, tmp_path):
    out = tmp_path / "cycle"
    init = str(reference / "train" / "model.pt")
    process = _start([*CYCLE, "--init", init, "--out", str(out)])
    _wait_for(out / "cycle_state.pt", process)  # one iteration is saved
    time.sleep(random.Random(signum).uniform(0.0, 0.6))  # iterations 2 and 3 take ~1 s each
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130, err
        assert "Traceback" not in err and "--resume" in err
    done = torch.load(out / "cycle_state.pt", weights_only=True)["iteration"]
    assert 1 <= done < 3, "the cycle ended before the signal: slow it down"
    _run([*CYCLE, "--init", init, "--out", str(out), "--resume"])
    for name in ("cg_model.pt", "flow.pt"):
        _assert_same_weights(out / name, reference / "cycle" / name)
    ours = json.loads((out / "metrics.json").read_text())["iterations"]
    theirs = json.loads((reference / "cycle" / "metrics.json").read_text())["iterations"]
    drop = ("wall_time_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ours] == \
        [{k: v for k, v in r.items() if k not in drop} for r in theirs]
