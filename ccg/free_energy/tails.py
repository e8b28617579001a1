"""How heavy the tail of importance weights is: the Pareto shape k of the largest weights.

The ESS says how many samples the weights are worth; it cannot say whether that figure itself
is stable. If the largest weights follow a generalized Pareto tail with shape k, the weights
have a finite variance only for k < 1/2, and a finite mean only for k < 1. The diagnostic of
Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto
smoothed importance sampling", JMLR 2024) fits k to the M = min(N / 5, 3 sqrt(N)) largest
weights:

    k < 0.5        the central limit theorem holds: error bars from the weights are honest;
    0.5 <= k < 0.7 the estimate converges, slowly; the error bars are somewhat optimistic;
    k >= 0.7       a few weights decide the estimate: a new seed gives other numbers, and the
                   error bars are too small.

The fit is the empirical-Bayes estimate of Zhang and Stephens (Technometrics 51, 2009):
the profile likelihood of the GPD over a grid of theta = -k / sigma, averaged with weights
proportional to the likelihood, then k from theta, shrunk towards 1/2 by a weak prior worth
10 observations (as in the PSIS paper). For large M the shrinkage vanishes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pareto_k", "psis_log_weights", "tail_size"]

PARETO_K_GOOD = 0.5
"""Below this the weights have a finite variance: standard errors are reliable."""
PARETO_K_BAD = 0.7
"""At or above this a few weights decide the estimate (PSIS's threshold for large N)."""
PRIOR_OBSERVATIONS = 10.0
"""Weight of the prior k = 1/2 in observations."""


def tail_size(n: int) -> int:
    """M, the number of largest weights the tail fit uses: min(ceil(N / 5), ceil(3 sqrt N))."""
    return int(min(math.ceil(0.2 * n), math.ceil(3.0 * math.sqrt(n))))


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """(shape k, scale sigma) of a generalized Pareto fitted to exceedances x [M] >= 0
    (ascending, largest > 0); k shrunk towards 1/2, sigma from the unshrunk fit."""
    m = x.size
    n_grid = 30 + int(math.sqrt(m))
    quartile = x[max(int(m / 4 + 0.5) - 1, 0)]
    j = np.arange(1, n_grid + 1, dtype=np.float64)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(n_grid / (j - 0.5))) / (3.0 * quartile)
    # GPD: 1 - F(x) = (1 - theta x) ** (-1 / k), theta = -k / sigma; for fixed theta the
    # likelihood is largest at k(theta) = mean log(1 - theta x), where it is
    # m (log(-theta / k) - k - 1)
    k = np.log1p(-theta[:, None] * x[None, :]).mean(1)
    log_lik = m * (np.log(-theta / k) - k - 1.0)
    weights = np.exp(log_lik - log_lik.max())
    weights /= weights.sum()
    theta_hat = float((theta * weights).sum())
    k_hat = float(np.log1p(-theta_hat * x).mean())
    sigma = -k_hat / theta_hat
    return (m * k_hat + PRIOR_OBSERVATIONS * 0.5) / (m + PRIOR_OBSERVATIONS), sigma


def pareto_k(log_w: np.ndarray) -> float:
    """The Pareto shape k of the largest importance weights (see the module docstring).

    Args:
        log_w: log-weights [N] (any constant offset; -inf: weight 0, left out).

    Returns:
        k (heavier tail: larger; < 0.5 good, >= 0.7 unreliable); nan with fewer than 20
        finite weights or fewer than 5 of the largest M above the threshold (no tail to
        fit).
    """
    return psis_log_weights(log_w)[1]


def psis_log_weights(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed log-weights and the tail's shape k (Vehtari et al.).

    The M = `tail_size` largest weights are replaced by the quantiles (j - 1/2) / M of the
    generalized Pareto fitted to their excess over the next largest weight (in their order,
    none above the largest raw weight): the ratio estimates lose most of the noise of their
    few largest terms for a small bias, which vanishes as N grows while k < 1. Reliable for
    k < 0.7 (`PARETO_K_BAD`); above, the smoothed estimates are still less noisy than the raw
    ones, but neither can be trusted.

    Args:
        log_w: log-weights [N] (any constant offset; -inf: weight 0, kept).

    Returns:
        (smoothed log-weights [N], k); where k is nan (`pareto_k`), the weights unchanged.
    """
    a = np.asarray(log_w, dtype=np.float64)
    out = a.copy()
    finite = np.flatnonzero(np.isfinite(a))
    if finite.size < 20:
        return out, math.nan
    m = tail_size(finite.size)
    order = finite[np.argsort(a[finite])]
    top = a[order[-1]]
    w = np.exp(a[order[-(m + 1):]] - top)  # the threshold, then the M largest (ascending)
    x = w[1:] - w[0]  # exceedances over the threshold
    positive = x[x > 0]  # ties with the threshold carry no tail
    if positive.size < 5:
        return out, math.nan
    k, sigma = _gpd_fit(positive / positive[-1])  # the shape does not depend on x's unit
    p = (np.arange(1, m + 1) - 0.5) / m
    if abs(k) > 1e-12:
        quantiles = sigma * np.expm1(-k * np.log1p(-p)) / k
    else:
        quantiles = -sigma * np.log1p(-p)
    smoothed = np.minimum(w[0] + positive[-1] * quantiles, 1.0)
    out[order[-m:]] = np.log(smoothed) + top
    return out, k
