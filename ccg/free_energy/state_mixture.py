"""A z proposal for estimation that follows the joint states: a mixture over metastable joint
states of products of per-torsion histograms.

A product of per-torsion (or per-residue) histograms (`ProductTorusProposal`) draws each
residue's state independently. When the residues are coupled (a helix: every residue alpha-R at
once), the product draws the common joint states too rarely and the rare ones too often, and
the proposal part of the joint ESS is small. This proposal keeps one product per joint state s
(the string of per-group labels of `ccg.free_energy.states`, e.g. "AAB" for alpha-R, alpha-R,
beta):

    rho(z) = lam base(z | T) + (1 - lam) sum_s pi_s prod_i [(1 - eps) h_si(z_i) + eps / 2 pi],

with pi_s the joint state's weight share and h_si the histogram (piecewise-constant density,
`n_bins` bins, smoothed over neighbouring bins) of torsion i over the samples in state s, both
from importance-weighted joint samples. The `base` share lam (a product proposal) keeps every
state that the fit did not see reachable; eps keeps every torsion's tails. The density is
normalized and known, so it can stand wherever a z proposal does (`sample_joint`,
`joint_ess_parts`).

`state_mixture_proposal` fits it to a model at one temperature: rounds of joint samples, each
round drawn from the latest fit and weighted by its own density, pooled, refitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ccg._checks import check_temperature
from ccg.errors import ConfigError
from ccg.free_energy.joint import JointSamples, pilot_proposal, sample_joint
from ccg.free_energy.projections import bin_index
from ccg.free_energy.states import StateGroup, default_groups, joint_states
from ccg.model import BackmappingModel

__all__ = ["StateMixtureProposal", "fit_state_mixture", "state_mixture_proposal"]

TWO_PI = 2 * math.pi


class StateMixtureProposal:
    """lam base(z | T) + (1 - lam) sum_s pi_s prod_i [(1 - eps) h_si(z_i) + eps / 2 pi].

    Args:
        log_pi: log pi_s [K], the joint states' shares (normalized).
        log_bins: log of h_si's bin probabilities [K, d, n_bins] (each [s, i] normalized; bin b
            covers [-pi + b w, -pi + (b + 1) w), w = 2 pi / n_bins).
        explore: eps in (0, 1], the uniform share of each torsion.
        base: a proposal with `sample` and `log_prob` (any temperature), or None.
        base_share: lam in [0, 1) (0 when base is None).
        states: the joint states' names [K] (for reports).
    """

    def __init__(self, log_pi: torch.Tensor, log_bins: torch.Tensor, *, explore: float = 0.05,
                 base=None, base_share: float = 0.0, states: Sequence[str] = ()):
        if log_bins.ndim != 3 or log_pi.shape != log_bins.shape[:1]:
            raise ValueError(f"Expected log_pi [K] and log_bins [K, d, n_bins]; got "
                             f"{list(log_pi.shape)} and {list(log_bins.shape)}.")
        if not 0.0 < explore <= 1.0:
            raise ValueError(f"explore must be in (0, 1] (keeps rho > 0); got {explore}.")
        if not 0.0 <= base_share < 1.0 or (base is None and base_share > 0):
            raise ValueError(f"base_share must be in [0, 1), and 0 without a base; got "
                             f"{base_share}.")
        self.log_pi = log_pi.double()
        self.log_bins = log_bins.double()
        self.explore, self.base, self.base_share = float(explore), base, float(base_share)
        self.states = list(states)
        self.cg_dim = int(log_bins.shape[1])
        self.n_bins = int(log_bins.shape[2])

    @property
    def n_states(self) -> int:
        return int(self.log_pi.shape[0])

    def _bins(self, z: torch.Tensor) -> torch.Tensor:
        wrapped = torch.remainder(z.double() + math.pi, TWO_PI)
        return torch.clamp((wrapped / (TWO_PI / self.n_bins)).long(), 0, self.n_bins - 1)

    def log_prob(self, z: torch.Tensor, temperature_k: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """log rho(z) [n] (per rad^d) of z [n, d] (rad); T [n] (K) goes to the base only."""
        if z.ndim != 2 or z.shape[1] != self.cg_dim:
            raise ValueError(f"Expected z of shape [n, {self.cg_dim}] (rad); got "
                             f"{list(z.shape)}.")
        log_bins = self.log_bins.to(z.device).permute(1, 2, 0)  # [d, n_bins, K]
        per = log_bins[torch.arange(self.cg_dim, device=z.device)[None, :], self._bins(z)]
        keep = math.log1p(-self.explore) if self.explore < 1 else -math.inf
        dens = torch.logaddexp(keep + per + math.log(self.n_bins / TWO_PI),
                               torch.full_like(per, math.log(self.explore / TWO_PI)))
        mix = torch.logsumexp(dens.sum(1) + self.log_pi.to(z.device), dim=1)  # [n]
        if self.base is None or self.base_share == 0:
            return mix
        base = self.base.log_prob(z, temperature_k).to(device=z.device, dtype=torch.float64)
        return torch.logaddexp(math.log1p(-self.base_share) + mix,
                               math.log(self.base_share) + base)

    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] in rad, drawn on the generator's device."""
        where = generator.device
        kw = {"generator": generator, "dtype": torch.float64, "device": where}
        pi = torch.exp(self.log_pi.to(where))
        state = torch.multinomial(pi, n, replacement=True, generator=generator)  # [n]
        probs = torch.exp(self.log_bins.to(where)[state]).reshape(n * self.cg_dim, self.n_bins)
        bins = torch.multinomial(probs, 1, replacement=True, generator=generator)
        bins = bins.reshape(n, self.cg_dim)
        inside = -math.pi + (bins + torch.rand(n, self.cg_dim, **kw)) * (TWO_PI / self.n_bins)
        uniform = TWO_PI * torch.rand(n, self.cg_dim, **kw) - math.pi
        z = torch.where(torch.rand(n, self.cg_dim, **kw) < self.explore, uniform, inside)
        if self.base is not None and self.base_share > 0:
            # every row gets a base draw and a mask picks: no host sync for the count, and a
            # histogram draw costs nothing beside the energy evaluation each z goes on to
            temps = None if temperature_k is None else temperature_k.to(where)
            from_base = self.base.sample(n, generator, torch.float64, where, temperature_k=temps)
            z = torch.where(torch.rand(n, 1, **kw) < self.base_share, from_base, z)
        return z.to(dtype=dtype, device=device)


def _smooth(hist: np.ndarray, width_bins: float) -> np.ndarray:
    """Circular convolution of hist [..., n_bins] with a wrapped Gaussian of sd `width_bins`
    bins (0: unchanged); keeps each row's sum."""
    if width_bins <= 0:
        return hist
    n_bins = hist.shape[-1]
    offsets = np.arange(n_bins)
    offsets = np.minimum(offsets, n_bins - offsets)
    kernel = np.exp(-0.5 * (offsets / width_bins) ** 2)
    kernel /= kernel.sum()
    return np.real(np.fft.ifft(np.fft.fft(hist, axis=-1) * np.fft.fft(kernel), axis=-1))


def fit_state_mixture(samples: JointSamples | Sequence[JointSamples],
                      groups: Sequence[StateGroup], *, n_bins: int = 36,
                      max_states: int = 64, smooth_bins: float = 1.0, explore: float = 0.05,
                      base=None, base_share: float = 0.1) -> StateMixtureProposal:
    """A `StateMixtureProposal` from importance-weighted joint samples.

    Args:
        samples: joint samples (one set, or several drawn from different proposals; their
            weights are pooled as they are, each set being an estimate of the same
            exp(-beta F)).
        groups: the state groups that label each sample's joint state
            (`ccg.free_energy.states.default_groups`).
        n_bins: histogram bins per torsion.
        max_states: the most joint states kept (by weight); the rest is left to the base.
        smooth_bins: sd (in bins) of the Gaussian that smooths each histogram (a state seen
            through a few heavy weights would otherwise be a spike).
        explore, base: as in `StateMixtureProposal`.
        base_share: the least share of the base (it also takes the weight of dropped states).
    """
    parts = [samples] if isinstance(samples, JointSamples) else list(samples)
    if not parts:
        raise ValueError("Expected at least one set of joint samples.")
    z = np.concatenate([p.z for p in parts])
    log_w = np.concatenate([p.log_w for p in parts])
    finite = np.isfinite(log_w)
    if not finite.any():
        raise ValueError("No joint sample has a finite weight; the state mixture cannot be "
                         "fitted.")
    z, log_w = z[finite], log_w[finite]
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    inverse, all_names = joint_states([g.assign(z) for g in groups], groups)
    mass = np.bincount(inverse, weights=w, minlength=len(all_names))
    order = np.argsort(-mass)[:max_states]
    order = order[mass[order] > 0]
    rank = np.full(len(all_names), -1)
    rank[order] = np.arange(len(order))
    row = rank[inverse]
    kept = row >= 0
    d = z.shape[1]
    bins = np.stack([bin_index(z[kept], (i,), n_bins) for i in range(d)], axis=1)
    flat = (row[kept, None] * d + np.arange(d)[None, :]) * n_bins + bins
    hist = np.bincount(flat.reshape(-1), weights=np.repeat(w[kept], d),
                       minlength=len(order) * d * n_bins).reshape(len(order), d, n_bins)
    hist = np.maximum(_smooth(hist, smooth_bins), 0.0)
    hist /= hist.sum(2, keepdims=True)
    covered = float(mass[order].sum())
    share = max(base_share, 1.0 - covered) if base is not None else 0.0
    with np.errstate(divide="ignore"):
        log_bins = torch.from_numpy(np.log(hist))
    log_pi = torch.from_numpy(np.log(mass[order] / covered))
    return StateMixtureProposal(log_pi, log_bins, explore=explore, base=base, base_share=share,
                                states=[all_names[j] for j in order])


def state_mixture_proposal(model: BackmappingModel, temperature_k: float, *, base=None,
                           groups: Sequence[StateGroup] | None = None, rounds: int = 3,
                           n_samples: int = 16384, generator: torch.Generator | None = None,
                           **fit_kwargs) -> StateMixtureProposal:
    """Fit a `StateMixtureProposal` to a model at one temperature.

    Round 0 draws `n_samples` joint samples from `base` (None: `pilot_proposal(model, T)`, a
    product of per-torsion histograms); each later round draws from the mixture fitted to the
    pooled samples so far. `rounds` mixture fits in all (rounds * n_samples energy
    evaluations beyond the base's). `groups`: None: per-residue Ramachandran states where the
    map has (phi, psi) pairs, else each torsion's halves (`default_groups`). `fit_kwargs` go
    to `fit_state_mixture` (n_bins, max_states, smooth_bins, explore, base_share).
    """
    check_temperature(temperature_k)
    if not bool(model.cg_map.z_circular.all()):
        raise ConfigError("The state mixture proposal needs CG coordinates on the torus (a "
                          "torsion map); this model's CG coordinates are Cartesian/linear.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"Expected rounds as a positive integer; got {rounds!r}.")
    device = next(model.flow.parameters()).device
    generator = generator if generator is not None else torch.Generator(device).manual_seed(
        int(torch.randint(2**31, ())))
    if base is None:
        base = pilot_proposal(model, temperature_k, generator=generator)
    if groups is None:
        groups = default_groups(model.cg_map.cg_names,
                                getattr(model.cg_map, "torsion_atoms", None))
    pooled, proposal = [], base
    for _ in range(rounds):
        pooled.append(sample_joint(model, temperature_k, n_samples, proposal=proposal,
                                   generator=generator))
        proposal = fit_state_mixture(pooled, groups, base=base, **fit_kwargs)
    return proposal
