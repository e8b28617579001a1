"""Timing of a reverse-KL training step and of its parts, for `ccg bench flow`.

All numbers come from one process, measured back to back, so the ratios between flow backends
and between the parts of a step are meaningful on a noisy machine.
"""

from __future__ import annotations

import time

import torch

from ccg.training.build import build_model
from ccg.training.config import RunConfig
from ccg.training.losses import ReverseKL


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
