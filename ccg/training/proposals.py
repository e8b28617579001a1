"""Proposals rho(z) over CG space and pi(T) over temperatures for data-free training.

Every proposal draws a batch with an explicit `torch.Generator`, so a seeded run is
reproducible, and returns tensors of the requested dtype/device. All z proposals share one
signature, `sample(n, generator, dtype, device, temperature_k=None)`: the trainer passes each
row's training temperature [n] (K), which only temperature-aware proposals use.
"""

from __future__ import annotations

import abc
import math
from pathlib import Path

import torch

from ccg._checks import check_finite, check_temperature
from ccg.errors import ConfigError
from ccg.model import BackmappingModel
from ccg.registry import Registry
from ccg.systems.analytic import AnalyticSystem
from ccg.training.md_proposal import proposal_frames

T_SAMPLING = ("beta", "log", "uniform")
"""How training temperatures are drawn (`TemperatureSampler`)."""

MAX_ADAPTIVE_DIMS = 3
"""The adaptive grid's limit on CG torsions (its cells grow as n_bins ** cg_dim)."""

Z_PROPOSALS: Registry = Registry("z proposal")
"""Named z proposals (`[train] z_proposal`): builders `(model, **settings) -> ZProposal` with
the keyword settings of `uniform_proposal`, registered at the end of this module."""


class ZProposal(abc.ABC):
    """A proposal rho(z) over CG space for training.

    Subclasses implement `sample`; proposals that learn from the trainer's estimates override
    `observe`, and those with state to checkpoint override `state_dict` / `load_state_dict`.
    """

    cg_dim: int

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] CG points (temperature_k: each row's training T [n] in K, or None)."""

    def log_prob(self, z: torch.Tensor, temperature_k: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """log rho(z | T) [n] of z [n, cg_dim] (a normalized density; proposals that cannot
        evaluate theirs raise NotImplementedError, and cannot weight joint samples)."""
        raise NotImplementedError(f"{type(self).__name__} has no normalized density; use the "
                                  '"uniform" or "product" z proposal for joint samples.')

    def observe(self, z: torch.Tensor, temperature_k: torch.Tensor,  # noqa: B027
                log_w: torch.Tensor) -> None:
        """Record a step's importance weights: z [n, d], T [n] (K), log_w [n, K] (no-op here)."""

    @staticmethod
    def reduce(values: torch.Tensor) -> torch.Tensor:
        """Combine per-process statistics (identity; the trainer sets an all-reduce when
        several processes train together)."""
        return values

    def state_dict(self) -> dict:
        """State to checkpoint (none here)."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027
        """Restore `state_dict()` output (nothing to restore here)."""


class UniformTorus(ZProposal):
    """z uniform on [-pi, pi)^d (torsion CG maps)."""

    def __init__(self, cg_dim: int):
        self.cg_dim = int(cg_dim)

    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] in rad (the same at every temperature)."""
        u = torch.rand(n, self.cg_dim, generator=generator, dtype=torch.float64,
                       device=generator.device)
        return (2 * math.pi * u - math.pi).to(dtype=dtype, device=device)

    def log_prob(self, z: torch.Tensor, temperature_k: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """-cg_dim log(2 pi) for every row of z [n, cg_dim]; [n] float64."""
        return torch.full((z.shape[0],), -self.cg_dim * math.log(2 * math.pi),
                          dtype=torch.float64, device=z.device)


class UniformBox(ZProposal):
    """z uniform in a box [low, high] per dimension (analytic systems)."""

    def __init__(self, low, high):
        self.low = torch.as_tensor(low, dtype=torch.float64).reshape(-1)
        self.high = torch.as_tensor(high, dtype=torch.float64).reshape(-1)
        if self.low.shape != self.high.shape or bool((self.high <= self.low).any()):
            raise ValueError(
                f"Expected low < high elementwise with equal shapes; got low={self.low.tolist()}, "
                f"high={self.high.tolist()}."
            )
        self.cg_dim = self.low.numel()

    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] (the same at every temperature)."""
        u = torch.rand(n, self.cg_dim, generator=generator, dtype=torch.float64,
                       device=generator.device)
        low, high = self.low.to(u.device), self.high.to(u.device)
        return (low + u * (high - low)).to(dtype=dtype, device=device)

    def log_prob(self, z: torch.Tensor, temperature_k: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """-log(box volume) inside the box, -inf outside; z [n, cg_dim] -> [n] float64."""
        low, high = self.low.to(z.device), self.high.to(z.device)
        inside = ((z.double() >= low) & (z.double() <= high)).all(1)
        value = -float(torch.log(self.high - self.low).sum())
        return torch.where(inside, value, -math.inf).double()


class FrameProposal(ZProposal):
    """z drawn uniformly from a fixed set of CG frames [N, cg_dim] (bead maps, CG samples)."""

    def __init__(self, frames: torch.Tensor):
        if frames.ndim != 2 or frames.shape[0] == 0:
            raise ValueError(
                f"Expected CG frames of shape [N, cg_dim] with N >= 1; got {list(frames.shape)}."
            )
        check_finite(frames, "CG frames")
        self.frames = frames.detach().to(torch.float64)
        self.cg_dim = frames.shape[1]

    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] (the same at every temperature)."""
        idx = torch.randint(self.frames.shape[0], (n,), generator=generator,
                            device=generator.device)
        return self.frames[idx.cpu()].to(dtype=dtype, device=device)


class TemperatureSampler:
    """Training temperatures in [t_low, t_max]: uniform in beta, in log T, or in T.

    With `anneal_fraction > 0` the lower bound starts at t_max and decreases linearly to
    t_min over that fraction of the run (progress in [0, 1] is passed to `sample`). With
    `values`, temperatures are drawn uniformly from that list instead (for example only 300 and
    600 K, to test how the model transfers to the temperatures between).
    """

    def __init__(self, t_min: float, t_max: float, mode: str = "beta", anneal_fraction=0.0,
                 values: list[float] | None = None):
        check_temperature(t_min, "t_min")
        check_temperature(t_max, "t_max")
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min} K) is above t_max ({t_max} K); swap them.")
        if mode not in T_SAMPLING:
            raise ValueError(f'Unknown temperature sampling "{mode}". Must be one of '
                             f"{list(T_SAMPLING)}.")
        self.t_min, self.t_max, self.mode = float(t_min), float(t_max), mode
        self.anneal_fraction = float(anneal_fraction)
        self.values = None
        if values is not None:
            for v in values:
                check_temperature(v, "t_values")
            self.values = torch.tensor([float(v) for v in values], dtype=torch.float64)
            if self.values.numel() == 0:
                raise ValueError("t_values is empty; give at least one temperature or None.")

    def lower_bound(self, progress: float) -> float:
        if self.anneal_fraction <= 0:
            return self.t_min
        frac = min(1.0, progress / self.anneal_fraction)
        return self.t_max + frac * (self.t_min - self.t_max)

    def sample(self, n: int, generator: torch.Generator, dtype, device, progress: float = 1.0):
        """[n] temperatures in K."""
        if self.values is not None:
            idx = torch.randint(len(self.values), (n,), generator=generator,
                                device=generator.device)
            return self.values.to(idx.device)[idx].to(dtype=dtype, device=device)
        low, high = self.lower_bound(progress), self.t_max
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
        if self.mode == "beta":
            t = 1.0 / (1.0 / high + u * (1.0 / low - 1.0 / high))
        elif self.mode == "log":
            t = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            t = low + u * (high - low)
        return t.to(dtype=dtype, device=device)


class AdaptiveTorusProposal(ZProposal):
    """z on the torus, concentrated where the flow itself finds low free energy at each T.

    The trainer reports every step's per-(z, T) importance-sampling estimates of beta F
    (`observe`). The proposal keeps, for each of `n_bands` temperature bands (uniform in beta
    over [t_min, t_max]), a running (exponentially averaged) beta F on a grid of `n_bins` per
    torsion. Reduced free energies of different temperatures are never mixed: beta F carries a
    temperature-dependent constant (entropy of the fast coordinates) that would swamp the
    differences between bins.

    `sample(n, ..., temperature_k=T)` draws each row's z for its own temperature: a fraction
    `1 - explore` from exp(-sharpness * beta F) of that temperature's band (normalized per band,
    uniformly inside the bin), the rest uniformly on the torus, so no region is abandoned.
    `sharpness < 1` flattens the Boltzmann factor so that the whole populated region (not only
    the deepest basin) gets training points. Without temperatures, z is drawn from the average
    over bands. Bins a band has not observed yet count as its lowest beta F, so they keep being
    proposed until measured. Until `warmup` steps have been observed the proposal is uniform.
    """

    def __init__(self, cg_dim: int, t_min: float, t_max: float, *, n_bins: int = 24,
                 n_bands: int = 4, explore: float = 0.3, decay: float = 0.9, warmup: int = 100,
                 sharpness: float = 0.5):
        check_temperature(t_min, "t_min")
        check_temperature(t_max, "t_max")
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min} K) is above t_max ({t_max} K); swap them.")
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1]; got {explore}.")
        if not 0.0 < sharpness <= 1.0:
            raise ValueError(f"sharpness must be in (0, 1] (1: Boltzmann); got {sharpness}.")
        if int(cg_dim) > MAX_ADAPTIVE_DIMS:
            raise ConfigError(
                f'[train] z_proposal = "adaptive" keeps n_bins ** cg_dim cells: {n_bins} ** '
                f"{cg_dim} = {int(n_bins) ** int(cg_dim):,} per temperature band for this map's "
                f"{cg_dim} CG torsions (at most {MAX_ADAPTIVE_DIMS}). Use z_proposal = "
                '"product" (per-torsion histograms, any number of torsions; `ccg train '
                '--z-proposal product`) or "uniform".')
        self.cg_dim, self.n_bins, self.explore = int(cg_dim), int(n_bins), float(explore)
        self.decay, self.warmup, self.sharpness = float(decay), int(warmup), float(sharpness)
        # band edges uniform in beta = 1 / T (inner edges only)
        inv = torch.linspace(1.0 / t_max, 1.0 / t_min, int(n_bands) + 1, dtype=torch.float64)
        self.inner_edges = 1.0 / inv[1:-1]  # descending temperatures
        self.beta_f = torch.full((int(n_bands), self.n_bins ** self.cg_dim), math.nan,
                                 dtype=torch.float64)
        self.n_observed = 0
        self._uniform = UniformTorus(cg_dim)

    def _to(self, device: torch.device) -> None:
        """Keep the running map on the device of the training tensors (no host copies)."""
        if self.beta_f.device != device:
            self.beta_f = self.beta_f.to(device)
            self.inner_edges = self.inner_edges.to(device)

    def _bin_index(self, z: torch.Tensor) -> torch.Tensor:
        width = 2 * math.pi / self.n_bins
        idx = torch.clamp(((z.double() + math.pi) / width).long(), 0, self.n_bins - 1)
        weights = self.n_bins ** torch.arange(self.cg_dim - 1, -1, -1, device=z.device)
        return (idx * weights).sum(1)

    def _band_index(self, temperature_k: torch.Tensor) -> torch.Tensor:
        """Band 0 holds the highest temperatures."""
        t = temperature_k.double()
        return (t[:, None] < self.inner_edges.to(t.device)[None, :]).sum(1)

    def observe(self, z: torch.Tensor, temperature_k: torch.Tensor, log_w: torch.Tensor) -> None:
        """Record estimates: z [n, d], T [n] (K), log_w [n, K] of each (z, T)'s samples.

        Sums and counts per cell go through `reduce` first (the trainer sets it to an
        all-reduce when several processes train together), so every process keeps the same map.
        """
        self._to(z.device)
        k = log_w.shape[1]
        beta_f = -(torch.logsumexp(log_w.double(), 1) - math.log(k))
        ok = torch.isfinite(beta_f)
        cell = self._band_index(temperature_k) * self.beta_f.shape[1] + self._bin_index(z)
        flat = self.beta_f.view(-1)
        sums = torch.zeros_like(flat).index_add_(0, cell, torch.where(ok, beta_f, 0.0))
        counts = torch.zeros_like(flat).index_add_(0, cell, ok.double())
        sums, counts = self.reduce(sums), self.reduce(counts)
        hit = counts > 0
        mean = sums / counts.clamp_min(1.0)
        updated = torch.where(torch.isnan(flat), mean, self.decay * flat + (1 - self.decay) * mean)
        flat.copy_(torch.where(hit, updated, flat))
        self.n_observed += 1

    def band_probabilities(self) -> torch.Tensor:
        """Bin probabilities [n_bands, n_bins ** cg_dim] of the adaptive part: per band,
        softmax(-sharpness * beta F_band); uniform for a band with no observation yet."""
        seen = ~torch.isnan(self.beta_f)
        lowest = torch.where(seen, self.beta_f, torch.inf).min(1, keepdim=True).values
        lowest = torch.where(torch.isfinite(lowest), lowest, torch.zeros_like(lowest))
        f = torch.where(seen, self.beta_f, lowest)
        return torch.softmax(-self.sharpness * (f - lowest), 1)

    def probabilities(self) -> torch.Tensor | None:
        """The bin probabilities [n_bins ** cg_dim] averaged over the observed bands (None
        before any observation)."""
        observed = (~torch.isnan(self.beta_f)).any(1)
        if not bool(observed.any()):
            return None
        return self.band_probabilities()[observed].mean(0)

    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] in rad; with `temperature_k` [n] (K), row i is drawn for its own T.
        Drawn on the generator's device."""
        where = generator.device
        if self.n_observed < self.warmup:
            return self._uniform.sample(n, generator, dtype, device)
        self._to(where)
        if temperature_k is None:
            average = self.probabilities()
            if average is None:
                return self._uniform.sample(n, generator, dtype, device)
            log_p, band = torch.log(average)[None], torch.zeros(n, dtype=torch.long,
                                                               device=where)
        else:
            if temperature_k.shape != (n,):
                raise ValueError(f"Expected temperature_k of shape [{n}] (K); got "
                                 f"{list(temperature_k.shape)}.")
            log_p = torch.log(self.band_probabilities())
            band = self._band_index(temperature_k.to(where))
        kw = {"generator": generator, "dtype": torch.float64, "device": where}
        explore = torch.rand(n, **kw) < self.explore
        bins = draw_cells(log_p, band, torch.rand(n, **kw))
        powers = self.n_bins ** torch.arange(self.cg_dim - 1, -1, -1, device=where)
        cells = (bins[:, None] // powers) % self.n_bins
        u = torch.rand(cells.shape, **kw)
        z = -math.pi + (cells + u) * (2 * math.pi / self.n_bins)
        z_uniform = self._uniform.sample(n, generator, torch.float64, where)
        z = torch.where(explore[:, None], z_uniform, z)
        return z.to(dtype=dtype, device=device)

    def state_dict(self) -> dict:
        return {"beta_f": self.beta_f.cpu().clone(), "n_observed": self.n_observed}

    def load_state_dict(self, state: dict) -> None:
        self.beta_f = state["beta_f"].clone().to(self.beta_f.device)
        self.n_observed = int(state["n_observed"])


@Z_PROPOSALS.register("uniform")
def uniform_proposal(model: BackmappingModel, *, t_min: float, t_max: float,
                     sharpness: float = 0.5, cg_frames: str | Path | None = None,
                     seed: int = 0) -> ZProposal:
    """z uniform over the CG space: on the torus (torsion maps), in the system's `cg_bounds`
    box (analytic systems), or over CG frames (bead maps: the trajectory `cg_frames`, else
    frames of a short OpenMM Langevin run at `t_max`; see `ccg.training.md_proposal`).
    `t_min` and `sharpness` are for the adaptive proposal (K; the same keywords for every
    entry of `Z_PROPOSALS`)."""
    if bool(model.cg_map.z_circular.all()):
        return UniformTorus(model.cg_dim)
    if isinstance(model.system, AnalyticSystem):
        low, high = model.system.cg_bounds
        return UniformBox(low, high)
    return FrameProposal(proposal_frames(model, cg_frames, t_max, seed=seed))


def draw_cells(log_p: torch.Tensor, row: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Cells drawn by inverse CDF: for each entry of `row` (any shape, int), a cell of the
    distribution log_p[row] (log_p [n_rows, n_cells], normalized or not), using the uniform
    u (same shape as row). One search in the rows' CDFs laid end to end, row k's on
    (k, k + 1]; a cell of probability zero is never drawn (right-sided search)."""
    n_rows, n_cells = log_p.shape
    cdf = torch.cumsum(torch.softmax(log_p.double(), dim=1), dim=1)
    cdf = cdf / cdf[:, -1:]
    offset = torch.arange(n_rows, dtype=torch.float64, device=log_p.device)[:, None]
    flat = (cdf + offset).reshape(-1)
    u = u.double().clamp(max=1.0 - 1e-9)  # row + u stays below row + 1 after rounding
    index = torch.searchsorted(flat, (row.double() + u).reshape(-1), right=True)
    return (index.reshape(row.shape) - row * n_cells).clamp(0, n_cells - 1)
