"""A branch-free rational-quadratic spline (Durkan et al. 2019, "Neural Spline Flows").

The same monotone rational-quadratic map as nflows' `rational_quadratic_spline`, written so
that nothing depends on the data's values: no domain check that reads the inputs back to the
host (callers clamp into the interval), no boolean indexing, no assertion on the inverse's
discriminant. A step that uses it has fixed shapes and no host synchronization, so
`torch.compile` traces it whole and it can be captured in a CUDA graph. nflows' function stays
the reference: the tests compare the two to 1e-12 in values, log|det| and gradients (float64),
and `build_flow(spline="nflows")` uses it instead.

Parametrization of K bins on [left, right] x [bottom, top], from unnormalized network outputs:

    w = min_w + (1 - K min_w) softmax(uw),   h likewise,   d = min_d + softplus(ud)  (K + 1 knots)

In bin k with knots (x_k, y_k), width w_k, height h_k, slope s_k = h_k / w_k, knot derivatives
d_k, d_k+1 and t = (x - x_k) / w_k:

    y = y_k + h_k (s_k t^2 + d_k t (1 - t)) / (s_k + (d_k + d_k+1 - 2 s_k) t (1 - t))
    dy/dx = s_k^2 (d_k+1 t^2 + 2 s_k t (1 - t) + d_k (1 - t)^2) / (s_k + (...) t (1 - t))^2

and the inverse solves the quadratic in t for given y (the root in [0, 1]).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
"""The same minimum bin sizes and knot derivative as nflows' defaults."""


def _knots(unnormalized: torch.Tensor, low: float, high: float, minimum: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes [..., K] and knot positions [..., K + 1] on [low, high] (ends exact)."""
    k = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * k) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = low + (high - low) * knots
    knots = torch.cat([torch.full_like(knots[..., :1], low), knots[..., 1:-1],
                       torch.full_like(knots[..., :1], high)], dim=-1)
    return knots[..., 1:] - knots[..., :-1], knots


def _bin(knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index [..., 1] of the bin holding each value (the last bin holds its right end)."""
    k = knots.shape[-1] - 1
    index = (values[..., None] >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)
    return index.clamp(max=k - 1)


def rq_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    *,
    inverse: bool = False,
    left: float = 0.0,
    right: float = 1.0,
    bottom: float = 0.0,
    top: float = 1.0,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline map and its log|det|, elementwise.

    Args:
        inputs: [...] values inside [left, right] (forward) or [bottom, top] (inverse); values
            outside are not checked: clamp them first.
        unnormalized_widths, unnormalized_heights: [..., K].
        unnormalized_derivatives: [..., K + 1] (the knot derivatives, ends included).
        inverse: map y -> x instead of x -> y.

    Returns:
        (outputs [...], log|d outputs / d inputs| [...]).
    """
    widths, cumwidths = _knots(unnormalized_widths, left, right, min_bin_width)
    heights, cumheights = _knots(unnormalized_heights, bottom, top, min_bin_height)
    derivatives = min_derivative + F.softplus(unnormalized_derivatives)
    index = _bin(cumheights if inverse else cumwidths, inputs)

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, index)[..., 0]

    x_k, w_k = pick(cumwidths), pick(widths)
    y_k, h_k = pick(cumheights), pick(heights)
    slope = h_k / w_k
    d_k, d_next = pick(derivatives), derivatives[..., 1:].gather(-1, index)[..., 0]
    curvature = d_k + d_next - 2 * slope
    if inverse:
        shifted = inputs - y_k
        a = h_k * (slope - d_k) + shifted * curvature
        b = h_k * d_k - shifted * curvature
        c = -slope * shifted
        discriminant = (b * b - 4 * a * c).clamp_min(0.0)
        t = (2 * c) / (-b - torch.sqrt(discriminant))
        outputs = t * w_k + x_k
    else:
        t = (inputs - x_k) / w_k
    t_1mt = t * (1 - t)
    denominator = slope + curvature * t_1mt
    derivative = slope**2 * (d_next * t**2 + 2 * slope * t_1mt + d_k * (1 - t) ** 2)
    logabsdet = torch.log(derivative) - 2 * torch.log(denominator)
    if inverse:
        return outputs, -logabsdet
    return y_k + h_k * (slope * t**2 + d_k * t_1mt) / denominator, logabsdet
