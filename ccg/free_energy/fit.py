"""Fitting F_theta(z, T) to flow-estimated observables: one multimodal, variance-weighted loss.

The data are importance-sampling estimates at points (z_i, T_i) (`ObservableSet`): beta F with
its standard error, the mean force grad_z F and <U>_z with theirs. The loss per point is a sum
of squared standardized residuals, all in reduced (k_B T) units:

    values   ((beta F_theta - beta F_hat) - c(T)) / s_F        c(T): the best shift per T
                                                               (one for all ensemble members)
    forces   beta (grad_z F_theta - grad_z F_hat) / (beta s_grad)           (per CG dim)
    energies beta (d(beta F_theta)/d beta - <U>_hat) / (beta s_U)

with s^2 = SE^2 + floor^2 (a floor keeps a few points with underestimated errors from
dominating). c(T) is the weighted mean residual of all points at exactly that temperature, so
values fix F only up to a per-temperature constant; <U>_z = d(beta F)/d beta fixes how F changes
with T. Points whose ESS is below `min_ess` are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from tqdm.auto import tqdm

from ccg.constants import KB_KJMOL_PER_K


@dataclass
class ObservableSet:
    """Observables at N points (float64, CPU). Units: z in the map's units, T in K, beta_f
    dimensionless, mean_force kJ/mol per CG unit [N, d], mean_energy kJ/mol; *_err are standard
    errors of the same shapes; ess [N]."""

    z: torch.Tensor
    temperature_k: torch.Tensor
    beta_f: torch.Tensor
    beta_f_err: torch.Tensor
    mean_force: torch.Tensor
    mean_force_err: torch.Tensor
    mean_energy: torch.Tensor
    mean_energy_err: torch.Tensor
    ess: torch.Tensor

    def __len__(self) -> int:
        return self.z.shape[0]

    @classmethod
    def from_estimates(cls, z: torch.Tensor, temperature_k: float, est) -> ObservableSet:
        """From `estimate_free_energy(..., mean_force=True)` at one temperature."""
        if est.mean_force is None:
            raise ValueError("The estimates have no mean force; call estimate_free_energy with "
                             "mean_force=True.")
        n = z.shape[0]
        return cls(z=z.detach().double().cpu(),
                   temperature_k=torch.full((n,), float(temperature_k), dtype=torch.float64),
                   beta_f=est.beta_f, beta_f_err=est.beta_f_err, mean_force=est.mean_force,
                   mean_force_err=est.mean_force_err, mean_energy=est.mean_energy_kjmol,
                   mean_energy_err=est.mean_energy_err, ess=est.ess)

    @classmethod
    def cat(cls, sets: list[ObservableSet]) -> ObservableSet:
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in sets]) for f in fields(cls)})

    def select(self, keep: torch.Tensor) -> ObservableSet:
        return ObservableSet(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FEATURE_CACHE_ELEMENTS = 2**25
"""At most this many elements (256 MB in float64) of point x feature x CG-dimension Jacobians
are kept by a fit; above it every step differentiates the features again."""


@dataclass
class FitConfig:
    """Optimization of F_theta: Adam with a cosine schedule on random minibatches."""

    steps: int = 2000
    """Optimization steps."""
    lr: float = 3e-3
    """Peak learning rate of the cosine schedule."""
    lr_final: float = 1e-5
    """Final learning rate."""
    batch_size: int = 1024
    """Points per minibatch (all of them when there are fewer)."""
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Weights of the value, force and energy terms."""
    floors: tuple[float, float, float] = (0.05, 0.1, 0.1)
    """Error floors in k_B T units: beta F, beta grad F (per CG unit), beta <U>."""
    min_ess: float = 0.02
    """Points whose estimate has a lower ESS are left out of the fit."""
    seed: int = 0
    """Seed of the minibatch draws."""


def _group_shift(residual: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor,
                 n_groups: int) -> torch.Tensor:
    """The weighted mean residual of each point's temperature group, per point ([M, B] -> same)."""
    shape = (residual.shape[0], n_groups)
    num = torch.zeros(shape, dtype=residual.dtype).index_add_(1, groups, residual * weight)
    den = torch.zeros(n_groups, dtype=residual.dtype).index_add_(0, groups, weight)
    return (num / den.clamp_min(1e-300))[:, groups]


def multimodal_loss(model, data: ObservableSet, config: FitConfig,
                    idx: torch.Tensor | None = None, *,
                    features: tuple[torch.Tensor, torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss (summed over ensemble members) on the points `idx` of `data`, and its parts
    (mean chi^2 per observation of each term, averaged over members). `features`: the CG
    features of all of `data`'s points and their Jacobian (`FreeEnergyModel.feature_jacobian`),
    so that the step differentiates the MLPs only; the same loss."""
    if idx is not None:
        data = data.select(idx)
        if features is not None:
            features = (features[0][idx], features[1][idx])
    dtype = model.dtype
    z, t = data.z.to(dtype), data.temperature_k.to(dtype)
    if features is None:
        obs = model.observables(z, t, create_graph=True, members=True)
    else:
        obs = model.observables_of_features(*features, t, create_graph=True, members=True)
    beta = 1.0 / (KB_KJMOL_PER_K * t)
    f_floor, g_floor, u_floor = config.floors
    w_v, w_g, w_u = config.weights
    # values, up to a constant per temperature
    _, groups = torch.unique(data.temperature_k, return_inverse=True)
    n_groups = int(groups.max()) + 1
    weight = 1.0 / (data.beta_f_err.to(dtype) ** 2 + f_floor**2)
    res = obs["beta_f"] - data.beta_f.to(dtype)
    # one shift per temperature for the whole ensemble (from its mean residual), so every member
    # is pinned to the data up to the same constant and the members' spread is meaningful
    res = res - _group_shift(res.detach().mean(0, keepdim=True), weight, groups, n_groups)
    chi_v = (weight * res**2).mean(1)
    # forces, in k_B T per CG unit
    var_g = (beta[:, None] * data.mean_force_err.to(dtype)) ** 2 + g_floor**2
    res_g = beta[:, None] * (obs["mean_force"] - data.mean_force.to(dtype))
    chi_g = (res_g**2 / var_g).mean((1, 2))
    # <U>_z = d(beta F)/d beta, in k_B T
    var_u = (beta * data.mean_energy_err.to(dtype)) ** 2 + u_floor**2
    res_u = beta * (obs["mean_energy_kjmol"] - data.mean_energy.to(dtype))
    chi_u = (res_u**2 / var_u).mean(1)
    total = (w_v * chi_v + w_g * chi_g + w_u * chi_u).sum()
    parts = {"values": float(chi_v.detach().mean()), "forces": float(chi_g.detach().mean()),
             "energies": float(chi_u.detach().mean())}
    return total, parts


def usable(data: ObservableSet, min_ess: float) -> torch.Tensor:
    """Mask [N] of points with finite observables and ESS >= min_ess."""
    finite = (torch.isfinite(data.beta_f) & torch.isfinite(data.beta_f_err)
              & torch.isfinite(data.mean_energy) & torch.isfinite(data.mean_energy_err)
              & torch.isfinite(data.mean_force).all(1) & torch.isfinite(data.mean_force_err).all(1))
    return finite & (data.ess >= min_ess)


def fit_free_energy_model(model, data: ObservableSet, config: FitConfig | None = None, *,
                          progress: bool = False) -> dict[str, list[float]]:
    """Fit `model` (a FreeEnergyModel, in place) to `data`; returns the loss history.

    Raises ValueError if fewer than 2 points are usable (finite, ESS >= min_ess).
    """

    config = config or FitConfig()
    keep = usable(data, config.min_ess)
    if int(keep.sum()) < 2:
        raise ValueError(
            f"Only {int(keep.sum())} of {len(data)} points have finite estimates with ESS >= "
            f"{config.min_ess}; estimate more points or train the flow longer.")
    data = data.select(keep)
    n = len(data)
    # the points are fixed: their features and Jacobians once, not at every step (unless the
    # Jacobians would not fit in memory: many bead coordinates times many points)
    features = None
    if n * model.cg_map.cg_feature_dim * model.cg_dim <= FEATURE_CACHE_ELEMENTS:
        features = model.feature_jacobian(data.z.to(model.dtype))
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: dict[str, list[float]] = {"loss": [], "values": [], "forces": [], "energies": []}
    model.train()
    for step in tqdm(range(config.steps), disable=not progress, desc="fit F_theta", unit="step"):
        frac = step / max(1, config.steps - 1)
        lr = config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + math.cos(math.pi * frac))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = None if n <= config.batch_size else torch.randperm(n, generator=gen)[
            :config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss, parts = multimodal_loss(model, data, config, idx, features=features)
        loss.backward()
        optimizer.step()
        history["loss"].append(float(loss.detach()))
        for key, value in parts.items():
            history[key].append(value)
    model.eval()
    history["n_points"] = [n]
    return history
