"""Throughput of energy + forces: the batched torch path against a per-configuration OpenMM loop.

`benchmark_energy` times, in one run and for each batch size B:

- "openmm loop": `setPositions` + `getState(getEnergy, getForces)` per configuration, on
  OpenMM's CPU platform (Threads=1) and on its Reference platform (timed on at most
  `openmm_max_configs` configurations; the rate is per configuration). For a small molecule
  the Reference platform is much faster per call (the CPU platform has a large fixed cost per
  evaluation); ratios are against the faster of the two loops, measured in the same run;
- "torch eager": `system.energy(x)` plus forces by autograd backward, in `dtype`;
- "torch compiled" (with `compile=True`): the same through `torch.compile` of the torch terms;
  the first call's compile time is reported separately (`compile_s`), not in the rate (with
  inductor's on-disk cache warm from an earlier run it is much shorter than a cold compile);
- the torch rows again on a CUDA device when one is present (`devices`), timed with
  `torch.cuda.synchronize()` around each call.

Configurations are the reference positions plus Gaussian noise (0.005 nm).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import openmm
import torch

from ccg.systems._openmm_bridge import make_context
from ccg.systems.openmm_system import OpenMMSystem

NOISE_NM = 0.005
"""Standard deviation of the Gaussian perturbation of the reference positions (nm)."""


def _configurations(system: OpenMMSystem, batch: int, seed: int) -> np.ndarray:
    reference = system.reference_positions
    if reference is None:
        raise ValueError(
            "benchmark_energy needs reference positions; build the system with positions=... "
            "or from a PDB."
        )
    rng = np.random.default_rng(seed)
    return reference[None] + rng.normal(0.0, NOISE_NM, size=(batch, *reference.shape))


def _best_time(step: Callable[[], Any], repeats: int, cuda: bool = False) -> float:
    """Best wall time (s) of `repeats` calls after one warm-up call."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _energy_and_forces(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    xg = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(xg).sum(), xg)
    if grad.shape != x.shape:  # pragma: no cover - guards against silently timing nothing
        raise RuntimeError("autograd returned forces of the wrong shape")


def _openmm_rate(context: openmm.Context, positions: np.ndarray, repeats: int) -> float:
    """Configurations per second of the OpenMM loop: the best of `repeats` passes over chunks
    of at most 128 configurations (robust to other processes sharing the cores)."""
    chunks = np.array_split(positions, max(1, len(positions) // 128))

    def loop(chunk: np.ndarray) -> None:
        for conf in chunk:
            context.setPositions(conf)
            state = context.getState(getEnergy=True, getForces=True)
            state.getPotentialEnergy()
            state.getForces(asNumpy=True)

    return max(len(c) / _best_time(lambda c=c: loop(c), repeats) for c in chunks)


def benchmark_energy(
    system: OpenMMSystem,
    batch_sizes: Sequence[int] = (256, 1024, 4096),
    *,
    n_threads: int = 1,
    compile: bool = False,
    dtype: torch.dtype = torch.float32,
    repeats: int = 10,
    seed: int = 0,
    openmm_max_configs: int = 1024,
    devices: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Time energy + forces per method and batch size.

    Args:
        system: the system (reference positions required).
        batch_sizes: batch sizes B to time.
        n_threads: torch threads (`torch.set_num_threads`, restored afterwards); OpenMM always
            runs with Threads=1.
        compile: also time the `torch.compile`'d torch path (compile time reported apart).
        dtype: dtype of the torch paths (float32 is what training uses).
        repeats: timed repetitions per measurement (the best is kept).
        seed: seed of the perturbed configurations.
        openmm_max_configs: at most this many configurations per OpenMM loop timing.
        devices: torch devices of the torch rows; None: "cpu", and "cuda" when available.

    Returns:
        One row per (B, method): {"batch_size", "method", "configs_per_s", "ratio_vs_openmm",
        "seconds_per_batch", "compile_s"}; ratio = configs_per_s / the faster OpenMM loop's
        at that B.
    """
    if not isinstance(system, OpenMMSystem):
        raise TypeError(f"Expected an OpenMMSystem; got {type(system).__name__}.")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"Expected batch_sizes as positive ints; got {list(batch_sizes)}.")
    if repeats < 1 or n_threads < 1:
        raise ValueError(f"Expected repeats >= 1 and n_threads >= 1; got {repeats}, {n_threads}.")
    if devices is None:
        devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    devices = [str(torch.device(d)) for d in devices]
    contexts = {name: make_context(system.openmm_system, name, n_threads=1)
                for name in ("CPU", "Reference")}
    warm_up = _configurations(system, 512, seed + 1)
    for context in contexts.values():
        _openmm_rate(context, warm_up, 1)  # the CPU platform's first calls are slower
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    rows: list[dict[str, Any]] = []
    try:
        for batch in sizes:
            positions = _configurations(system, batch, seed)
            loops = {name: _openmm_rate(context, positions[:openmm_max_configs], repeats)
                     for name, context in contexts.items()}
            openmm_rate = max(loops.values())
            rows.append(_row(batch, "openmm loop (CPU platform, 1 thread)", loops["CPU"],
                             openmm_rate))
            rows.append(_row(batch, "openmm loop (Reference platform)", loops["Reference"],
                             openmm_rate))
            dtype_name = str(dtype).removeprefix("torch.")
            for device in devices:
                x = torch.as_tensor(positions, dtype=dtype, device=device)
                suffix = "" if device == "cpu" else f" {device}"
                methods: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], float | None]]
                methods = [(f"torch eager {dtype_name}{suffix}", system.energy, None)]
                if compile:
                    torch.compiler.reset()
                    compiled = torch.compile(partial(system.energy, validate=False),
                                             dynamic=False)
                    start = time.perf_counter()
                    _energy_and_forces(compiled, x)
                    methods.append((f"torch compiled {dtype_name}{suffix}", compiled,
                                    time.perf_counter() - start))
                cuda = device.startswith("cuda")
                for name, energy, compile_s in methods:
                    seconds = _best_time(lambda e=energy, x=x: _energy_and_forces(e, x), repeats,
                                         cuda)
                    rows.append(_row(batch, name, batch / seconds, openmm_rate, compile_s))
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def _row(
    batch: int, method: str, rate: float, openmm_rate: float, compile_s: float | None = None
) -> dict[str, Any]:
    return {
        "batch_size": batch,
        "method": method,
        "configs_per_s": rate,
        "ratio_vs_openmm": rate / openmm_rate,
        "seconds_per_batch": batch / rate,
        "compile_s": compile_s,
    }


def format_energy_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of `benchmark_energy` rows."""
    lines = [
        "| B | method | configs/s | vs fastest OpenMM loop | s/batch | compile s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        compile_s = "" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"
        lines.append(
            f"| {r['batch_size']} | {r['method']} | {r['configs_per_s']:,.0f} | "
            f"{r['ratio_vs_openmm']:.2f}x | {r['seconds_per_batch']:.4f} | {compile_s} |"
        )
    return "\n".join(lines)


__all__ = ["NOISE_NM", "benchmark_energy", "format_energy_table"]
