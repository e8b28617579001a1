"""Timing of the training step, for `ccg bench flow` (its parts, per flow backend) and
`ccg bench train` (the real `Trainer.train_step` per device, batch size and compile mode).

All numbers come from one process, measured back to back (interleaved where several settings
are compared), so the ratios are meaningful on a noisy machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence

import torch

from ccg.training.build import build_model, build_proposal
from ccg.training.config import RunConfig
from ccg.training.losses import ReverseKL
from ccg.training.trainer import Trainer


def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def profile_step(model, batch_size: int, *, temperature_k: float = 300.0, repeats: int = 3,
                 seed: int = 0) -> dict[str, float]:
    """Seconds per call of: flow sample, X(z, r), energy, and a full loss + backward step.

    The parts are timed forward-only with autograd recording (as in training); `backward` is
    the full step minus the three forward parts.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.flow.parameters()).dtype
    z = (2 * torch.pi * torch.rand(batch_size, model.cg_dim, generator=gen) - torch.pi).to(dtype)
    temps = torch.full((batch_size,), float(temperature_k), dtype=dtype)
    loss = ReverseKL(model)
    ctx = model.context(z, temps)
    r, _ = model.flow.sample(ctx)
    x, _ = model.cg_map.merge(z, r.detach())

    def flow_part():
        model.flow.sample(ctx)

    def ic_part():
        model.cg_map.merge(z, r.detach())

    def energy_part():
        model.system.energy(x.detach().requires_grad_(True))

    def step():
        model.flow.zero_grad(set_to_none=True)
        loss(z, temps).loss.backward()

    t_flow = _timeit(flow_part, repeats)
    t_ic = _timeit(ic_part, repeats)
    t_energy = _timeit(energy_part, repeats)
    t_step = _timeit(step, repeats)
    return {
        "batch_size": batch_size,
        "step_s": t_step,
        "flow_s": t_flow,
        "internal_coordinates_s": t_ic,
        "energy_s": t_energy,
        "backward_s": max(0.0, t_step - t_flow - t_ic - t_energy),
    }


def benchmark_flow_backends(batch_sizes=(1024,), *, n_threads: int = 1,
                            backends=("nflows", "normflows"), repeats: int = 3) -> list[dict]:
    """One reverse-KL step (sample + log q + X(z, r) + energy + backward) per backend.

    Alanine dipeptide, CG = (phi, psi), the default flow size; float32; one thread unless said.
    Rows carry the time of each part and the ratio of the step time to the first backend's.
    """
    torch.set_num_threads(n_threads)
    rows = []
    for batch_size in batch_sizes:
        base = None
        for backend in backends:
            config = RunConfig()
            config.train.steps = 1
            config.flow.backend = backend
            torch.manual_seed(0)
            model = build_model(config)
            row = profile_step(model, batch_size, repeats=repeats)
            row["backend"] = backend
            row["parameters"] = sum(p.numel() for p in model.flow.parameters())
            base = base or row["step_s"]
            row["step_vs_first"] = row["step_s"] / base
            rows.append(row)
    return rows


def format_flow_table(rows: list[dict]) -> str:
    """Markdown table of `benchmark_flow_backends` rows."""
    head = ("| backend | B | parameters | step (s) | flow sample (s) | X(z, r) (s) | energy (s) "
            "| backward (s) | step / first |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['batch_size']} | {r['parameters']} | {r['step_s']:.3f} | "
            f"{r['flow_s']:.3f} | {r['internal_coordinates_s']:.4f} | {r['energy_s']:.4f} | "
            f"{r['backward_s']:.3f} | {r['step_vs_first']:.2f} |"
        )
    return "\n".join(lines)


def _trainer(batch_size: int, device: str, compile_mode: str, folder: str,
             samples_per_z: int = 16, system: str | None = None) -> Trainer:
    """The default run's trainer at one batch size: alanine dipeptide, (phi, psi), or the
    registered `system` with its own default map."""
    config = RunConfig()
    if system is not None:
        config.system.name = system
        config.system.validate()
        config.map.cg = config.system.default_map
    config.train.steps = 10**9
    config.train.n_z = max(1, batch_size // samples_per_z)
    config.train.samples_per_z = samples_per_z
    config.train.device, config.train.compile = device, compile_mode
    config.train.checkpoint_every = config.train.checkpoint_minutes = 10**9
    torch.manual_seed(0)
    model = build_model(config)
    loss = ReverseKL(model, energy_cut=config.train.energy_cut, group_size=samples_per_z)
    return Trainer(model, loss, build_proposal(config, model), config.train, folder,
                   progress=False)


def _synchronized(step, device: str) -> float:
    start = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def benchmark_training(batch_sizes: Sequence[int] = (1024,), *, devices: Sequence[str] = ("cpu",),
                       compile_modes: Sequence[str] = ("none", "flow"), repeats: int = 5,
                       warmup: int = 3, system: str | None = None) -> list[dict]:
    """Seconds per `Trainer.train_step` of the default run (proposal, flow, X(z, r), energy,
    loss, backward, clipping, Adam), for every device x batch size x compile mode
    (`[train] compile`); `system`: a registered system instead of alanine dipeptide.

    The settings of one (device, batch size) are timed interleaved, step by step, after
    `warmup` steps (the first of which, compiling, is reported as `first_step_s`); rows give
    the median step, samples/s and the ratio to the eager step of the same device and batch.
    """
    rows = []
    for device in devices:
        for batch_size in batch_sizes:
            with tempfile.TemporaryDirectory() as folder:
                trainers = {mode: _trainer(batch_size, device, mode, folder, system=system)
                            for mode in compile_modes}
                first = {}
                for mode, trainer in trainers.items():
                    first[mode] = _synchronized(trainer.train_step, device)
                    for _ in range(warmup - 1):
                        trainer.train_step()
                times: dict[str, list[float]] = {mode: [] for mode in trainers}
                for _ in range(repeats):
                    for mode, trainer in trainers.items():
                        times[mode].append(_synchronized(trainer.train_step, device))
            eager = statistics.median(times["none"]) if "none" in times else None
            for mode, values in times.items():
                step = statistics.median(values)
                rows.append({
                    "device": device, "batch_size": batch_size, "compile": mode,
                    "step_s": step, "samples_per_s": batch_size / step,
                    "first_step_s": first[mode],
                    "vs_eager": None if eager is None else step / eager,
                })
    return rows


def format_training_table(rows: list[dict]) -> str:
    """Markdown table of `benchmark_training` rows."""
    lines = ["| device | B | compile | step (ms) | samples/s | first step (s) | vs eager |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["vs_eager"] is None else f"{r['vs_eager']:.2f}"
        lines.append(f"| {r['device']} | {r['batch_size']} | {r['compile']} | "
                     f"{1e3 * r['step_s']:.1f} | {r['samples_per_s']:,.0f} | "
                     f"{r['first_step_s']:.1f} | {ratio} |")
    return "\n".join(lines)
