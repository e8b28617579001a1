"""CG dynamics: overdamped Langevin on a free-energy model F_theta(z, T).

Many independent walkers move at once (batched). One step of size dt (ps) with diffusion
coefficient D (CG unit^2 / ps):

    z' = z - D beta grad_z F dt + sqrt(2 D dt) xi,      xi ~ N(0, 1)

wrapped onto [-pi, pi) on circular (torsion) dimensions; bead coordinates are not wrapped.
With `metropolis=True` (default) each move is accepted with the Metropolis-Hastings ratio of
the Gaussian proposals (MALA), so the walkers sample exp(-beta F_theta) exactly at any dt; with
`metropolis=False` the dynamics are plain Euler-Maruyama (bias O(dt)). A CG free energy fixes
the equilibrium distribution, not the time scale: D sets the clock.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ccg._checks import check_finite, check_shape, check_temperature


@dataclass
class LangevinResult:
    """frames [n_saved, n_walkers, cg_dim] (CG units), acceptance (fraction of accepted moves),
    beta_f [n_saved, n_walkers] of the saved frames, and the settings."""

    frames: torch.Tensor
    beta_f: torch.Tensor
    acceptance: float
    temperature_k: float
    dt_ps: float
    diffusion: float
    save_every: int

    def flat(self) -> torch.Tensor:
        """Frames as one table [n_walkers * n_saved, cg_dim], walker by walker (each walker's
        frames contiguous, in time order)."""
        return self.frames.transpose(0, 1).reshape(-1, self.frames.shape[-1])


def _wrap(z: torch.Tensor, circular: torch.Tensor) -> torch.Tensor:
    wrapped = torch.remainder(z + math.pi, 2 * math.pi) - math.pi
    return torch.where(circular, wrapped, z)


def _energy_and_grad(model, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """beta F [W] (ensemble mean) and its z-gradient [W, d] (detached)."""
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        beta_f = model.member_beta_f(zg, b).mean(0)
        (grad,) = torch.autograd.grad(beta_f.sum(), zg)
    return beta_f.detach(), grad.detach()


def simulate(model, z0: torch.Tensor, temperature_k: float, n_steps: int, *, dt_ps: float = 0.01,
             diffusion: float = 0.25, save_every: int = 100, metropolis: bool = True,
             generator: torch.Generator | None = None, progress: bool = False) -> LangevinResult:
    """Run overdamped Langevin on `model` (a FreeEnergyModel) from z0 [W, cg_dim] at T (K).

    Returns the frames every `save_every` steps (the first saved frame is after `save_every`
    steps). A warning is issued if T is outside the model's fitted temperature range.
    """
    check_shape(z0, (model.cg_dim,), "z0", "cg_dim")
    check_finite(z0, "z0")
    check_temperature(temperature_k)
    for name, value in (("n_steps", n_steps), ("save_every", save_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} as a positive integer; got {value!r}.")
    if save_every > n_steps:
        raise ValueError(f"save_every ({save_every}) is larger than n_steps ({n_steps}); "
                         "nothing would be saved.")
    if not (dt_ps > 0 and diffusion > 0 and math.isfinite(dt_ps * diffusion)):
        raise ValueError(f"Expected dt_ps > 0 and diffusion > 0; got {dt_ps}, {diffusion}.")
    t_min, t_max = model.t_range
    if not t_min <= temperature_k <= t_max:
        warnings.warn(f"T = {temperature_k} K is outside the CG model's fitted range "
                      f"[{t_min}, {t_max}] K; its free energies there are extrapolations.",
                      stacklevel=2)
    device = next(model.parameters()).device
    circular = model.cg_map.z_circular.to(device)
    z = _wrap(z0.to(device=device, dtype=model.dtype), circular)
    n_walkers = z.shape[0]
    b = torch.full((n_walkers,), model.t_ref / temperature_k, dtype=z.dtype, device=z.device)
    step = diffusion * dt_ps  # D dt; the noise variance per step is 2 D dt
    sigma = math.sqrt(2.0 * step)
    kw = {"dtype": z.dtype, "device": z.device, "generator": generator}
    energy, grad = _energy_and_grad(model, z, b)
    frames, energies = [], []
    accepted = torch.zeros((), dtype=torch.long, device=z.device)  # no host sync per step
    for i in tqdm(range(1, n_steps + 1), disable=not progress, desc="CG Langevin", unit="step"):
        mean = z - step * grad
        proposal = _wrap(mean + sigma * torch.randn(z.shape, **kw), circular)
        if metropolis:
            e_new, g_new = _energy_and_grad(model, proposal, b)
            back = _wrap(z - (proposal - step * g_new), circular)  # z - mean of the reverse move
            fwd = _wrap(proposal - mean, circular)
            log_q_fwd = -(fwd**2).sum(1) / (4 * step)
            log_q_back = -(back**2).sum(1) / (4 * step)
            log_alpha = -(e_new - energy) + log_q_back - log_q_fwd
            accept = torch.log(torch.rand(n_walkers, **kw)) < log_alpha
            accepted += accept.sum()
            z = torch.where(accept[:, None], proposal, z)
            energy = torch.where(accept, e_new, energy)
            grad = torch.where(accept[:, None], g_new, grad)
        else:
            z = proposal
            energy, grad = _energy_and_grad(model, z, b)
            accepted += n_walkers
        if i % save_every == 0:
            frames.append(z.clone())
            energies.append(energy.clone())
    return LangevinResult(frames=torch.stack(frames), beta_f=torch.stack(energies),
                          acceptance=int(accepted) / (n_steps * n_walkers),
                          temperature_k=float(temperature_k), dt_ps=dt_ps, diffusion=diffusion,
                          save_every=save_every)


def default_start(cg_model, n: int, generator: torch.Generator) -> torch.Tensor:
    """Starting points [n, cg_dim] (float64) for `simulate`: uniform on the torus for torsion
    maps, the reference structure's CG coordinates for bead maps, uniform in the training box
    for analytic systems. `cg_model.system` is the system its map belongs to."""
    d, device = cg_model.cg_dim, generator.device
    kw = {"generator": generator, "dtype": torch.float64, "device": device}
    if bool(cg_model.cg_map.z_circular.all()):
        return (torch.rand(n, d, **kw) * 2 - 1) * math.pi
    ref = cg_model.system.reference_positions
    if ref is not None:
        x = torch.as_tensor(ref, dtype=torch.float64).reshape(1, *cg_model.system.event_shape)
        z = cg_model.cg_map.coarse_grain(x.to(cg_model.cg_map.z_circular.device))
        return z.reshape(1, d).repeat(n, 1).to(device)
    low, high = (torch.as_tensor(b, dtype=torch.float64, device=device)
                 for b in cg_model.system.cg_bounds)
    return low + (high - low) * torch.rand(n, d, **kw)
