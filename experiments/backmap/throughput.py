"""Backmapping throughput: the real `ccg backmap` command, end to end, on a long trajectory.

Usage:
    OMP_NUM_THREADS=1 python experiments/backmap/throughput.py MODEL [MODEL ...] \
        --md experiments/ala2_reference/data/md_300K.npz [--frames 10000] [-k 1 16] \
        [--input dcd|csv] [--threads 1] [--workdir DIR]

Writes a CG input of `--frames` frames into a work folder (a temporary one by default):
`dcd` = the held-out MD frames (key `frames`) repeated to the requested length, as an
atomistic DCD with a PDB topology (works for torsion and bead maps); `csv` = their (phi, psi)
in rad (torsion maps only). For every model and K it then runs

    ccg backmap MODEL --cg INPUT [--top top.pdb] --temperature T --samples-per-frame K \
        --select weighted --out OUT.dcd

as a subprocess with OMP_NUM_THREADS = MKL_NUM_THREADS = --threads, and reports the wall time,
frames/s end to end, the start-up (the same command on a 1-frame input, best of two: imports,
model loading, OpenMM set-up), frames/s without it, frames per CPU second of the command (robust
to other processes sharing the cores) and its peak memory (max RSS). Each output is
checked for one frame per input frame (the CSV sidecar) and then deleted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mdtraj
import numpy as np
import torch

import ccg


def ccg_command() -> list[str]:
    exe = shutil.which("ccg") or str(Path(sys.executable).with_name("ccg"))
    return [exe] if Path(exe).is_file() else [sys.executable, "-m", "ccg.cli"]


def timed_run(cmd: list[str], threads: int, n_frames: int) -> tuple[float, float, float]:
    """Run a `ccg backmap` command line; returns (wall s, CPU s, peak RSS in GB) of it.

    Checks that the sidecar lists n_frames frames, then deletes the outputs.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.decode()[-2000:]}")
    traj = Path(cmd[cmd.index("--out") + 1])
    sidecar = traj.with_suffix(".csv")
    n_out = len(np.loadtxt(sidecar, delimiter=",", skiprows=1, ndmin=2))
    if n_out != n_frames:
        raise RuntimeError(f"{traj}: {n_out} frames, expected {n_frames}")
    traj.unlink()
    sidecar.unlink()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024**2


def write_inputs(workdir: Path, md: str, n_frames: int, kind: str, model) -> dict:
    """The CG input files: {'n': path, '1': path, 'top': path or None}."""
    system = model.system
    x = np.load(md)["frames"]
    x = np.concatenate([x] * (-(-n_frames // len(x))))[:n_frames]
    if kind == "csv":
        if getattr(model.cg_map, "cg_atom_indices", None) is not None:
            raise ValueError("--input csv is for torsion maps; use --input dcd for bead maps.")
        z = model.cg_map.coarse_grain(torch.as_tensor(x, dtype=torch.float64)).numpy()
        paths = {"n": workdir / f"z{n_frames}.csv", "1": workdir / "z1.csv", "top": None}
        np.savetxt(paths["n"], z, delimiter=",")
        np.savetxt(paths["1"], z[:1], delimiter=",")
        return paths
    paths = {"n": workdir / f"md{n_frames}.dcd", "1": workdir / "md1.dcd",
             "top": workdir / "top.pdb"}
    traj = mdtraj.Trajectory(x, system.topology)
    traj[0].save_pdb(str(paths["top"]))
    traj.save_dcd(str(paths["n"]))
    traj[0].save_dcd(str(paths["1"]))
    return paths


def backmap_cmd(model_path: str, inputs: dict, size: str, k: int, args, workdir: Path
                ) -> list[str]:
    """The `ccg backmap` command line for input `size` ("1" or "n") and K = k."""
    cmd = [*ccg_command(), "backmap", model_path, "--cg", str(inputs[size]),
           "--temperature", str(args.temperature), "--samples-per-frame", str(k),
           "--select", "weighted", "--out", str(workdir / f"out_{size}.dcd")]
    if inputs["top"] is not None:
        cmd += ["--top", str(inputs["top"])]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--md", default="experiments/ala2_reference/data/md_300K.npz")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("-k", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--input", choices=["dcd", "csv"], default="dcd")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", help="keep the inputs here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ccg_throughput_")
        workdir = Path(tmp.name)
    rows = []
    try:
        for model_path in args.models:
            model = ccg.load_model(model_path)
            inputs = write_inputs(workdir, args.md, args.frames, args.input, model)
            startup = min(timed_run(backmap_cmd(model_path, inputs, "1", 1, args, workdir),
                                    args.threads, 1)[:2] for _ in range(2))
            for k in args.k:
                wall, cpu, rss = timed_run(
                    backmap_cmd(model_path, inputs, "n", k, args, workdir), args.threads,
                    args.frames)
                net = wall - startup[0]
                rows.append((model_path, k, wall, cpu, startup, args.frames / wall,
                             args.frames / net if net > 0 else float("nan"),
                             args.frames / cpu, rss))
                print(f"{model_path} K={k}: {wall:.1f} s", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"\n{args.frames} frames ({args.input} input), {args.temperature:g} K, weighted, "
          f"{args.threads} thread(s)\n")
    print("| model | K | wall (s) | CPU (s) | start-up wall / CPU (s) | frames/s end to end | "
          "frames/s without start-up | frames per CPU s | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_path, k, wall, cpu, (s_wall, s_cpu), rate, net, per_cpu, rss in rows:
        print(f"| {model_path} | {k} | {wall:.1f} | {cpu:.1f} | {s_wall:.1f} / {s_cpu:.1f} "
              f"| {rate:,.0f} | {net:,.0f} | {per_cpu:,.0f} | {rss:.2f} |")


if __name__ == "__main__":
    main()
