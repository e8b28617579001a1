"""Joint samples (z, r) of the model and their importance weights; the joint ESS.

Where `estimate_free_energy` draws many r at a few given z, a joint sample draws z from a
normalized proposal rho(z | T) and one r ~ q(r | z, T), with the weight of the joint density:

    log w = -u(z, r) - log q(r | z, T) - log rho(z | T),   u = beta U(X(z, r)) - log|J|,

so that E[w f(z)] = ∫ f(z) exp(-beta F(z, T)) dz for any f: projections of F onto a few CG
coordinates and populations of states are weighted sums over the samples
(`ccg.free_energy.projections`, `ccg.free_energy.states`), whatever the number of CG
coordinates. The joint ESS = (sum w)^2 / (N sum w^2) in (0, 1] measures the flow and the
proposal together: it is 1 only when q(r | z) = p(r | z) and rho(z) ∝ exp(-beta F(z));
`joint_ess_parts` tells the two shares apart.

The proposal is any object with `sample(n, generator, dtype, device, temperature_k)` and
`log_prob(z, temperature_k)` (`ccg.training.proposals`); `pilot_proposal` fits a
`ProductTorusProposal` to the model at one temperature from a few rounds of joint samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ccg._checks import check_temperature
from ccg.errors import ConfigError
from ccg.free_energy.ais import ais_sample
from ccg.free_energy.tails import pareto_k, psis_log_weights
from ccg.model import BackmappingModel
from ccg.training.product_proposal import ProductTorusProposal, model_blocks


@dataclass
class JointSamples:
    """Joint samples at one temperature (numpy, float64).

    Attributes:
        z: CG coordinates [N, cg_dim] (rad for torsions).
        log_w: joint log-weights [N] (-inf for non-finite samples: weight 0).
        temperature_k: T in K.
        cg_names: names of the CG coordinates, in z order.
    """

    z: np.ndarray
    log_w: np.ndarray
    temperature_k: float
    cg_names: list[str]

    def __len__(self) -> int:
        return int(self.log_w.shape[0])

    @property
    def n_nonfinite(self) -> int:
        """Samples with weight 0 (non-finite energy or density)."""
        return int((~np.isfinite(self.log_w)).sum())

    @property
    def ess(self) -> float:
        """Normalized joint ESS (sum w)^2 / (N sum w^2) in (0, 1] (0 if no finite weight)."""
        return ess_of(self.log_w)

    @property
    def pareto_k(self) -> float:
        """The Pareto shape k of the largest weights (`ccg.free_energy.tails.pareto_k`): < 0.5,
        the error bars are honest; >= 0.7, a few weights decide the estimates, another seed
        gives other numbers and the error bars are too small."""
        return pareto_k(self.log_w)

    def smoothed(self) -> JointSamples:
        """The same samples with Pareto-smoothed weights (`ccg.free_energy.tails.
        psis_log_weights`): the few largest weights replaced by the quantiles of the Pareto
        tail fitted to them. Less noise for a small bias; `pareto_k` says whether to trust
        either."""
        log_w, _ = psis_log_weights(self.log_w)
        return JointSamples(self.z, log_w, self.temperature_k, list(self.cg_names))

    @property
    def reverse_kl(self) -> float:
        """The reverse-KL gap KL(q || p) of the joint model, in nats (>= 0, 0 iff q = p).

        q(z, r) is the z proposal times the flow, p the Boltzmann distribution over (z, r);
        with w = p~ / q (`log_w`, p~ unnormalized) KL(q || p) = log E_q[w] - E_q[log w],
        estimated by sample means over the finite weights (`n_nonfinite` counts the rest,
        whose log w is -inf: where they occur the gap is infinite). Biased low for small N, as
        log mean w is. The global quality figure of the Boltzmann-generator literature, next
        to the joint `ess`; nan if no weight is finite.
        """
        finite = np.isfinite(self.log_w)
        if not finite.any():
            return math.nan
        a = self.log_w[finite]
        return float(np.logaddexp.reduce(a) - math.log(a.size) - a.mean())

    def weights(self) -> tuple[np.ndarray, float]:
        """(w / max w [N], log max w): weights scaled to at most 1, and the scale."""
        finite = np.isfinite(self.log_w)
        if not finite.any():
            raise ValueError("No joint sample has a finite weight: the flow or the proposal "
                             "put every sample where the energy is not finite.")
        top = float(self.log_w[finite].max())
        return np.where(finite, np.exp(self.log_w - top), 0.0), top

    def select(self, index: np.ndarray) -> JointSamples:
        """The samples at `index` (an integer or boolean array)."""
        return JointSamples(self.z[index], self.log_w[index], self.temperature_k,
                            list(self.cg_names))


def ess_of(log_w: np.ndarray) -> float:
    """Normalized ESS (sum w)^2 / (N sum w^2) of log-weights [N] (-inf: weight 0)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = np.isfinite(log_w)
    if log_w.size == 0 or not finite.any():
        return 0.0
    a = log_w[finite]
    log_ess = 2 * np.logaddexp.reduce(a) - np.logaddexp.reduce(2 * a)
    return float(np.exp(log_ess) / log_w.size)


def _check_ais_steps(ais_steps: int) -> None:
    if isinstance(ais_steps, bool) or not isinstance(ais_steps, int) or ais_steps < 0:
        raise ValueError(f"Expected ais_steps as an integer >= 0 (0: plain importance "
                         f"sampling); got {ais_steps!r}.")


def _flow_log_weights(model: BackmappingModel, z: torch.Tensor, temperature_k: float,
                      generator: torch.Generator, ais_steps: int) -> torch.Tensor:
    """log w(z, r) [B] of one r per row: a flow sample (ais_steps = 0) or an AIS sample."""
    with torch.no_grad():
        if ais_steps:
            return ais_sample(model, z, temperature_k, n_steps=ais_steps,
                              generator=generator).log_w
        return model.sample(z, temperature_k, generator=generator).log_weights


def _check_proposal(model: BackmappingModel, proposal) -> None:
    for name in ("sample", "log_prob"):
        if not callable(getattr(proposal, name, None)):
            raise TypeError(f"Expected a z proposal with sample() and log_prob(); "
                            f"{type(proposal).__name__} lacks {name}().")
    if getattr(proposal, "cg_dim", model.cg_dim) != model.cg_dim:
        raise ValueError(f"The proposal is for {proposal.cg_dim} CG coordinates; the model has "
                         f"{model.cg_dim}.")


def sample_joint(model: BackmappingModel, temperature_k: float, n_samples: int, *, proposal,
                 chunk_size: int = 16384, generator: torch.Generator | None = None,
                 ais_steps: int = 0, progress: bool = False) -> JointSamples:
    """Draw N joint samples z ~ rho(z | T), r ~ q(r | z, T) and their joint log-weights.

    Args:
        model: a trained `BackmappingModel`.
        temperature_k: T in K (> 0).
        n_samples: N, the number of joint samples (>= 2).
        proposal: the z proposal (normalized `log_prob`); see `pilot_proposal`.
        chunk_size: samples per batch through the flow (memory bound).
        generator: torch random generator (on the model's device); None: torch's default.
        ais_steps: 0: r ~ q(r | z, T) with its plain weight; K > 0: each r carried through K
            annealed MALA stages toward p(r | z, T) (`ccg.free_energy.ais`), K energy and force
            evaluations more per sample for a higher flow part of the joint ESS.

    Returns:
        `JointSamples` with z [N, cg_dim] and log_w [N] (numpy float64, on the CPU).
    """
    check_temperature(temperature_k)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"Expected n_samples as an integer >= 2; got {n_samples!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"Expected chunk_size as a positive integer; got {chunk_size!r}.")
    _check_proposal(model, proposal)
    _check_ais_steps(ais_steps)
    device = next(model.flow.parameters()).device
    generator = generator if generator is not None else torch.Generator(device).manual_seed(
        int(torch.randint(2**31, ())))
    zs, log_ws = [], []
    starts = range(0, n_samples, chunk_size)
    for start in tqdm(starts, disable=not progress, desc="joint samples", unit="chunk"):
        n = min(chunk_size, n_samples - start)
        temps = torch.full((n,), float(temperature_k), dtype=torch.float64, device=device)
        z = proposal.sample(n, generator, torch.float64, device, temperature_k=temps)
        log_w = _flow_log_weights(model, z, float(temperature_k), generator, ais_steps)
        log_rho = proposal.log_prob(z, temps).to(device=device, dtype=torch.float64)
        zs.append(z.cpu())
        log_ws.append((log_w.double() - log_rho).cpu())
    log_w = torch.cat(log_ws).numpy()
    log_w = np.where(np.isnan(log_w), -np.inf, log_w)
    return JointSamples(torch.cat(zs).numpy(), log_w, float(temperature_k),
                        list(model.cg_map.cg_names))


def _flow_log_weights_per_z(model: BackmappingModel, z: torch.Tensor, temperature_k: float,
                            generator: torch.Generator, ais_steps: int,
                            r_per_z: int) -> torch.Tensor:
    """log w [n_z, r_per_z] (float64) of r_per_z flow (or AIS) samples at each z [n_z, d],
    without the z proposal's density, in chunks of about 16,384 samples."""
    rows = []
    chunk = max(1, 16384 // r_per_z)
    for start in range(0, z.shape[0], chunk):
        zc = z[start:start + chunk].repeat_interleave(r_per_z, 0)
        log_w = _flow_log_weights(model, zc, float(temperature_k), generator, ais_steps)
        rows.append(log_w.double().reshape(-1, r_per_z))
    return torch.cat(rows)


def pilot_proposal(model: BackmappingModel, temperature_k: float, *, n_samples: int = 8192,
                   rounds: int = 6, n_bins: int = 36, explore: float = 0.1,
                   sharpness: float = 1.0, blocks: str | Sequence[Sequence[int]] = "torsion",
                   generator: torch.Generator | None = None, ais_steps: int = 0,
                   cooperative: float = 0.0, r_per_z: int = 1) -> ProductTorusProposal:
    """A `ProductTorusProposal` fitted to the model at one temperature: `rounds` rounds of
    `n_samples` joint samples (n_samples // r_per_z points z from the proposal so far, starting
    uniform; r_per_z flow samples r at each) teach it the marginals of exp(-beta F) over each
    block of torsions. Needs a torsion CG map.

    `r_per_z` > 1 averages each z's weights over its r before they enter the histograms, so
    that one heavy flow weight does not decide a cell, at the price of fewer z per round.

    `blocks`: "torsion" (a 1-D histogram per torsion), "residue" (a 2-D histogram per
    residue's (phi, psi) pair, `ccg.mapping.peptide.residue_blocks`), or explicit index blocks.
    `ais_steps`: as in `sample_joint` (sharper weights for the histograms, at K times the cost).
    `cooperative`: the share of z drawn with one cell shared by every block
    (`ProductTorusProposal`), for joint states that the blocks' product makes rare.
    """
    if not bool(model.cg_map.z_circular.all()):
        raise ConfigError("Joint samples need CG coordinates on the torus (a torsion map): the "
                          "z proposal is a product of histograms over [-pi, pi). This model's "
                          "CG coordinates are Cartesian/linear.")
    for name, value in (("rounds", rounds), ("r_per_z", r_per_z)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} as a positive integer; got {value!r}.")
    if n_samples // r_per_z < 2:
        raise ValueError(f"Expected n_samples >= 2 * r_per_z (at least two z per round); got "
                         f"n_samples {n_samples}, r_per_z {r_per_z}.")
    _check_ais_steps(ais_steps)
    if isinstance(blocks, str):
        blocks = model_blocks(model, blocks)
    proposal = ProductTorusProposal(model.cg_dim, temperature_k, temperature_k, n_bins=n_bins,
                                    n_bands=1, explore=explore, decay=0.7, warmup=0,
                                    sharpness=sharpness, blocks=blocks,
                                    cooperative=cooperative)
    device = next(model.flow.parameters()).device
    generator = generator if generator is not None else torch.Generator(device).manual_seed(
        int(torch.randint(2**31, ())))
    n_z = n_samples // r_per_z
    temps = torch.full((n_z,), float(temperature_k), dtype=torch.float64, device=device)
    for _ in range(rounds):
        z = proposal.sample(n_z, generator, torch.float64, device, temperature_k=temps)
        # observe wants log w of (z, T) without the proposal's own density
        log_w = _flow_log_weights_per_z(model, z, temperature_k, generator, ais_steps, r_per_z)
        log_w = torch.where(torch.isnan(log_w), -math.inf, log_w)
        proposal.observe(z.cpu(), temps.cpu(), log_w.cpu())
    return proposal


def joint_ess(model: BackmappingModel, temperatures_k, *, n_samples: int = 16384,
              proposal=None, generator: torch.Generator | None = None) -> np.ndarray:
    """The joint ESS of the model at each temperature: [n_T] in (0, 1].

    Args:
        model: a trained `BackmappingModel`.
        temperatures_k: temperatures in K (a number or a sequence).
        n_samples: joint samples per temperature.
        proposal: the z proposal; None: `pilot_proposal` at each temperature (torsion maps).
    """
    temps = np.atleast_1d(np.asarray(temperatures_k, dtype=np.float64))
    out = np.empty(len(temps))
    for i, t in enumerate(temps):
        rho = proposal if proposal is not None else pilot_proposal(model, float(t),
                                                                   generator=generator)
        out[i] = sample_joint(model, float(t), n_samples, proposal=rho, generator=generator).ess
    return out


def joint_ess_parts(model: BackmappingModel, temperature_k: float, *, proposal, n_z: int = 4096,
                    r_per_z: int = 32, generator: torch.Generator | None = None,
                    ais_steps: int = 0) -> dict[str, float]:
    """Where the joint ESS is lost: in the z proposal or in the flow.

    n_z points z ~ rho(z | T), r_per_z flow samples r ~ q(r | z, T) at each, joint log-weights
    log w [n_z, r_per_z]. Returns:
        "joint": the ESS of all n_z * r_per_z weights (what `sample_joint` measures; with
            r_per_z > 1 slightly higher, as samples at one z share its weight E[w | z]);
        "proposal": the ESS of the per-z mean weights, an estimate of E[w | z] =
            exp(-beta F(z)) / rho(z): how well rho follows exp(-beta F) (biased low by the
            flow's noise when r_per_z is small against 1 / its per-z ESS);
        "flow": the mean per-z ESS of the r samples (the training's figure at these z);
        "flow_worst_1pct": the 1st percentile of the per-z ESS.
    For independent parts joint ~ proposal x flow. n_z, r_per_z >= 2. `ais_steps` as in
    `sample_joint` (the "flow" part is then that of the AIS samples).
    """
    check_temperature(temperature_k)
    for name, value in (("n_z", n_z), ("r_per_z", r_per_z)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"Expected {name} as an integer >= 2; got {value!r}.")
    _check_proposal(model, proposal)
    _check_ais_steps(ais_steps)
    device = next(model.flow.parameters()).device
    generator = generator if generator is not None else torch.Generator(device).manual_seed(
        int(torch.randint(2**31, ())))
    temps = torch.full((n_z,), float(temperature_k), dtype=torch.float64, device=device)
    z = proposal.sample(n_z, generator, torch.float64, device, temperature_k=temps)
    log_rho = proposal.log_prob(z, temps).to(device=device, dtype=torch.float64)
    log_w = _flow_log_weights_per_z(model, z, temperature_k, generator, ais_steps, r_per_z)
    log_w = (log_w - log_rho[:, None]).cpu().numpy()
    log_w = np.where(np.isnan(log_w), -np.inf, log_w)
    finite = np.isfinite(log_w)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.where(finite.any(1), np.where(finite, log_w, -np.inf).max(1), 0.0)
        w = np.where(finite, np.exp(log_w - top[:, None]), 0.0)
        per_z = np.where(w.sum(1) > 0, w.sum(1) ** 2 / (r_per_z * (w * w).sum(1)), 0.0)
    mean_log_w = np.log(np.maximum(w.mean(1), 1e-300)) + top
    mean_log_w = np.where(w.sum(1) > 0, mean_log_w, -np.inf)
    return {"joint": ess_of(log_w.reshape(-1)), "proposal": ess_of(mean_log_w),
            "flow": float(per_z.mean()), "flow_worst_1pct": float(np.quantile(per_z, 0.01))}


def log_normalizer(samples: JointSamples) -> tuple[float, float]:
    """log ∫ exp(-beta F(z)) dz (= -beta F of the whole CG space) and its standard error."""
    w, top = samples.weights()
    mean = float(w.mean())
    if mean <= 0:
        return -math.inf, math.inf
    se = float(w.std(ddof=1) / math.sqrt(len(w)) / mean)
    return math.log(mean) + top, se
