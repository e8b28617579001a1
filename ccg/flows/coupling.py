"""nflows-based layers: mixed circular/linear rational-quadratic coupling, circular shifts.

All layers act in internal units (circular dims in [-π, π], linear dims standardized) and
follow the ccg convention: `forward(x, context)` maps base -> data, `inverse(y, context)` maps
data -> base, and both return (output [B, dim], log|det| of the applied map [B]).

The spline is the rational-quadratic spline of nflows: by default computed by ccg's branch-free
`ccg.flows.spline.rq_spline` (no host sync: the step compiles whole), or by nflows' own
`rational_quadratic_spline` (`spline="nflows"`, the reference it is tested against). The
conditioner is nflows' `ResidualNet`. Linear dims use the spline with identity tails outside
[-tail_bound, tail_bound] exactly as nflows' `unconstrained_rational_quadratic_spline` defines
it, evaluated without its boolean masking (see `linear_tail_spline`).
"""

from __future__ import annotations

import math

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_DERIVATIVE,
    rational_quadratic_spline,
)
from torch import nn
from torch.nn import functional as F

from ccg.flows.base import FLOW_BACKENDS, PI, ConditionalFlow, wrap_angle
from ccg.flows.layout import coupling_stack
from ccg.flows.spline import rq_spline

SPLINES = {"ccg": rq_spline, "nflows": rational_quadratic_spline}
"""The spline implementations: ccg's branch-free one and nflows' reference."""

# softplus^-1(1 - min_derivative): an unnormalized derivative of 0 from the network means slope 1.
_IDENTITY_DERIVATIVE = math.log(math.expm1(1.0 - DEFAULT_MIN_DERIVATIVE))


def linear_tail_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    inverse: bool,
    tail_bound: float,
    spline=rq_spline,
) -> tuple[torch.Tensor, torch.Tensor]:
    """nflows' RQ spline on [-tail_bound, tail_bound] with identity tails outside.

    The same map as nflows' `unconstrained_rational_quadratic_spline(..., tails="linear")`
    (boundary slopes 1, identity outside the interval), computed on every element with the
    inputs clamped into the interval and the identity selected by `torch.where`, instead of by
    boolean indexing: no data-dependent shapes, ~10 % less time per training step.

    Args:
        x: [B, n] inputs; widths, heights: [B, n, K] unnormalized; derivatives: [B, n, K - 1]
            unnormalized inner-knot derivatives.
        spline: the spline function (`SPLINES`).
    Returns:
        (y [B, n], log|dy/dx| [B, n]); 0 in the tails.
    """
    inside = (x >= -tail_bound) & (x <= tail_bound)
    derivatives = F.pad(derivatives, (1, 1), value=_IDENTITY_DERIVATIVE)  # slope 1 at the ends
    y, logdet = spline(
        x.clamp(-tail_bound, tail_bound), widths, heights, derivatives, inverse=inverse,
        left=-tail_bound, right=tail_bound, bottom=-tail_bound, top=tail_bound,
    )
    return torch.where(inside, y, x), torch.where(inside, logdet, torch.zeros_like(logdet))


class CircularShift(nn.Module):
    """x_c -> wrap(x_c + shift_c) on circular dims; linear dims unchanged; log|det| = 0."""

    def __init__(self, shift: torch.Tensor, circular: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.clone())
        self.register_buffer("circular", circular.clone())

    def _apply_shift(self, x: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.where(self.circular, wrap_angle(x + sign * self.shift), x)
        return y, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift forward: x [B, dim] -> (y [B, dim], zeros [B])."""
        return self._apply_shift(x, 1.0)

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift back: y [B, dim] -> (x [B, dim], zeros [B])."""
        return self._apply_shift(y, -1.0)


class RQSplineCoupling(nn.Module):
    """Conditional rational-quadratic spline coupling on mixed circular/linear dims.

    Transformed circular dims: a circular RQ spline on [-π, π] whose boundary derivatives are
    tied (slope at -π = slope at π, so the map is a smooth circle diffeomorphism). Transformed
    linear dims: an RQ spline on [-tail_bound, tail_bound] with identity (linear) tails.
    Conditioner: nflows `ResidualNet` on [cos, sin] of the identity circular dims, the identity
    linear dims, and the context. The last layer starts at zero: the layer starts as the identity.

    Args:
        transform: BoolTensor [dim], True on the dims this layer transforms.
        circular: BoolTensor [dim].
        context_dim, hidden, n_blocks, n_bins, tail_bound, spline: see `ConditionalFlow`.
    """

    def __init__(
        self,
        transform: torch.Tensor,
        circular: torch.Tensor,
        context_dim: int,
        *,
        hidden: int = 128,
        n_blocks: int = 2,
        n_bins: int = 8,
        tail_bound: float = 5.0,
        spline: str = "ccg",
    ) -> None:
        super().__init__()
        self.spline = SPLINES[spline]
        for name, sel in [
            ("id_circ", ~transform & circular),
            ("id_lin", ~transform & ~circular),
            ("tr_circ", transform & circular),
            ("tr_lin", transform & ~circular),
        ]:
            self.register_buffer(name, torch.nonzero(sel).flatten())
        self.n_bins = n_bins
        self.tail_bound = float(tail_bound)
        n_in = 2 * len(self.id_circ) + len(self.id_lin)
        self._n_circ_params = len(self.tr_circ) * 3 * n_bins
        n_out = self._n_circ_params + len(self.tr_lin) * (3 * n_bins - 1)
        self.net = ResidualNet(
            n_in, n_out, hidden, context_features=context_dim, num_blocks=n_blocks
        )
        nn.init.zeros_(self.net.final_layer.weight)
        nn.init.zeros_(self.net.final_layer.bias)

    def _spline_params(
        self, x: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalized spline parameters: circular [B, n_tc, 3K], linear [B, n_tl, 3K - 1]."""
        xc = x[:, self.id_circ]
        features = torch.cat([torch.cos(xc), torch.sin(xc), x[:, self.id_lin]], dim=1)
        params = self.net(features, context)
        b = x.shape[0]
        pc = params[:, : self._n_circ_params].reshape(b, len(self.tr_circ), 3 * self.n_bins)
        pl = params[:, self._n_circ_params :].reshape(b, len(self.tr_lin), 3 * self.n_bins - 1)
        return pc, pl

    def _transform(
        self, x: torch.Tensor, context: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_bins
        pc, pl = self._spline_params(x, context)
        y = x.clone()
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if len(self.tr_circ):
            d = pc[..., 2 * k :] + _IDENTITY_DERIVATIVE
            d = torch.cat([d, d[..., :1]], dim=-1)  # slope at π tied to slope at -π
            yc, ldc = self.spline(
                x[:, self.tr_circ].clamp(-PI, PI),
                pc[..., :k],
                pc[..., k : 2 * k],
                d,
                inverse=inverse,
                left=-PI,
                right=PI,
                bottom=-PI,
                top=PI,
            )
            y[:, self.tr_circ] = yc
            logdet = logdet + ldc.sum(dim=1)
        if len(self.tr_lin):
            yl, ldl = linear_tail_spline(
                x[:, self.tr_lin],
                pl[..., :k],
                pl[..., k : 2 * k],
                pl[..., 2 * k :] + _IDENTITY_DERIVATIVE,
                inverse=inverse,
                tail_bound=self.tail_bound,
                spline=self.spline,
            )
            y[:, self.tr_lin] = yl
            logdet = logdet + ldl.sum(dim=1)
        return y, logdet

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: x [B, dim] -> (y [B, dim], log|dy/dx| [B])."""
        return self._transform(x, context, inverse=False)

    def inverse(self, y: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base: y [B, dim] -> (x [B, dim], log|dx/dy| [B])."""
        return self._transform(y, context, inverse=True)


@FLOW_BACKENDS.register("nflows")
class NflowsFlow(ConditionalFlow):
    """`ConditionalFlow` built from nflows splines: [coupling, circular shift] x n_layers.

    See `ConditionalFlow` for the arguments. The shift after each coupling layer is skipped when
    there are no circular dims.
    """

    backend = "nflows"

    def _build_layers(self) -> list[nn.Module]:
        return coupling_stack(
            self.standardize.circular,
            self.n_layers,
            lambda mask, circular: RQSplineCoupling(
                mask, circular, self.context_dim, hidden=self.hidden, n_blocks=self.n_blocks,
                n_bins=self.n_bins, tail_bound=self.tail_bound, spline=self.spline,
            ),
            CircularShift,
        )
