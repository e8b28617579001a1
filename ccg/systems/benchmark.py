"""Throughput of energy + forces: the batched torch path against a per-configuration OpenMM loop.

`benchmark_energy` times, in one run and for each batch size B:

- "openmm loop": `setPositions` + `getState(getEnergy, getForces)` per configuration, on
  OpenMM's CPU platform (Threads=1) and on its Reference platform (timed on at most
  `openmm_max_configs` configurations; the rate is per configuration). For a small molecule
  the Reference platform is much faster per call (the CPU platform has a large fixed cost per
  evaluation); ratios are against the faster of the two loops, measured in the same run;
- "torch eager": `system.energy(x)` plus forces by autograd backward, in `dtype`;
- "torch compiled" (with `compile=True`): the same through `torch.compile` of the torch terms;
- "torch compiled + C++ GB kernel" (with `compile=True`, CPU, systems with a generalized Born
  term): what `System.compile_energy` runs, the compiled terms with GB on the C++ kernel
  (`OpenMMSystem.use_gb_kernel`);
  the first call's compile time is reported separately (`compile_s`), not in the rate (with
  inductor's on-disk cache warm from an earlier run it is much shorter than a cold compile);
- the torch rows again on a CUDA device when one is present (`devices`), timed with
  `torch.cuda.synchronize()` around each call.

The methods are timed in interleaved rounds (each round calls every method once: an OpenMM
loop over the next chunk of at most 128 configurations, a torch evaluation of the whole batch)
and each keeps its best round, so that on cores shared with other processes all methods
sample the same stretches of time. Configurations are the reference positions plus Gaussian
noise (0.005 nm).
"""

from __future__ import annotations

import copy
import itertools
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


def _energy_and_forces(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    xg = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(xg).sum(), xg)
    if grad.shape != x.shape:  # pragma: no cover - guards against silently timing nothing
        raise RuntimeError("autograd returned forces of the wrong shape")


def _compiled_timer(system: OpenMMSystem, x: torch.Tensor) -> tuple[Callable[[], None], float]:
    """A timer step of `torch.compile`'d energy + forces at x, and the first call's seconds
    (the compilation)."""
    compiled = torch.compile(partial(system.energy, validate=False), dynamic=False)
    start = time.perf_counter()
    _energy_and_forces(compiled, x)
    return (lambda: _energy_and_forces(compiled, x)), time.perf_counter() - start


def _openmm_loop(context: openmm.Context, chunk: np.ndarray) -> None:
    """setPositions + getState(energy, forces) for each configuration of `chunk`."""
    for conf in chunk:
        context.setPositions(conf)
        state = context.getState(getEnergy=True, getForces=True)
        state.getPotentialEnergy()
        state.getForces(asNumpy=True)


def _interleaved_best(timers: dict[str, tuple[Callable[[], Any], bool]],
                      repeats: int) -> dict[str, float]:
    """Best wall time (s) of each timer over `repeats` rounds; every round calls each timer
    once, so all methods sample the same stretches of time (fair on shared cores)."""
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeats):
        for name, (step, cuda) in timers.items():
            best[name] = min(best[name], _time(step, cuda))
    return best


def _time(step: Callable[[], Any], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


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
        repeats: interleaved timing rounds (each method keeps its best).
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
    kernel_system = None  # what `compile_energy` runs: compiled, GB on the C++ kernel
    if compile:
        kernel_system = copy.copy(system)
        if not kernel_system.use_gb_kernel():
            kernel_system = None
    warm_up = _configurations(system, 256, seed + 1)
    for context in contexts.values():
        _openmm_loop(context, warm_up)  # the CPU platform's first calls are slower
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    loop_names = {"CPU": "openmm loop (CPU platform, 1 thread)",
                  "Reference": "openmm loop (Reference platform)"}
    rows: list[dict[str, Any]] = []
    try:
        for batch in sizes:
            positions = _configurations(system, batch, seed)
            n_loop = min(batch, openmm_max_configs, 128)
            chunks = [positions[k:k + n_loop] for k in range(0, batch - n_loop + 1, n_loop)]
            chunks = chunks[:max(1, min(len(chunks), openmm_max_configs // n_loop))]
            # (step, cuda, configurations per call, compile seconds)
            timers: dict[str, tuple[Callable[[], Any], bool, int, float | None]] = {}
            for name, context in contexts.items():
                cycle = itertools.cycle(chunks)  # each round times the next chunk
                timers[loop_names[name]] = (
                    lambda c=context, it=cycle: _openmm_loop(c, next(it)), False, n_loop, None)
            dtype_name = str(dtype).removeprefix("torch.")
            for device in devices:
                x = torch.as_tensor(positions, dtype=dtype, device=device)
                suffix = "" if device == "cpu" else f" {device}"
                cuda = device.startswith("cuda")
                timers[f"torch eager {dtype_name}{suffix}"] = (
                    lambda x=x: _energy_and_forces(system.energy, x), cuda, batch, None)
                if compile:
                    step, compile_s = _compiled_timer(system, x)
                    timers[f"torch compiled {dtype_name}{suffix}"] = (
                        step, cuda, batch, compile_s)
                if compile and kernel_system is not None and not cuda:
                    step, compile_s = _compiled_timer(kernel_system, x)
                    timers[f"torch compiled + C++ GB kernel {dtype_name}"] = (
                        step, False, batch, compile_s)
            for step, cuda, _, _ in timers.values():  # warm-up
                _time(step, cuda)
            best = _interleaved_best({k: (v[0], v[1]) for k, v in timers.items()}, repeats)
            rates = {k: timers[k][2] / t for k, t in best.items()}
            openmm_rate = max(rates[n] for n in loop_names.values())
            for name, (_, _, _, compile_s) in timers.items():
                rows.append(_row(batch, name, rates[name], openmm_rate, compile_s))
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
