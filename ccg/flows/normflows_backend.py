"""normflows-based layers: `CircularCoupledRationalQuadraticSpline` and `PeriodicShift`, guarded.

normflows conventions (1.7.3, checked in its source): a layer's `forward` maps base -> data and
returns log|det| of that map, `inverse` maps data -> base, the same as ccg's internal convention.

Two hazards of `CircularCoupledRationalQuadraticSpline`, handled here:

1. Mixed circular/linear tails (a `tails` list): inputs outside [-tail_bound, tail_bound] are
   mapped to 0 with log|det| 0 instead of passed through. That is silently wrong for any linear
   value past the spline box (a Gaussian base produces such values, more so when heated). The
   guard restores the identity tail: where a linear input is outside the box, the output is the
   input (log|det| 0 is then already correct). It wraps both the coupling's unconditional
   elementwise spline on the identity dims (whose output feeds the conditioner in the inverse
   direction) and the transformed dims. Circular dims never leave [-π, π]: the base is uniform
   there, shifts wrap, and `ConditionalFlow.log_prob` gives -inf to inputs outside [-π, π].
2. With a per-dim tensor `tail_bound`, the periodic-feature scale is indexed by positions within
   the identity dims instead of by dim, so features of circular dims can lose periodicity. The
   backend therefore uses one scalar bound, π, for every dim, and rescales linear dims so that
   ±π internal units are ±tail_bound standardized units (`unit = π / tail_bound`).
"""

from __future__ import annotations

import torch
from normflows.flows import CircularCoupledRationalQuadraticSpline, PeriodicShift
from torch import nn

from ccg.flows.base import FLOW_BACKENDS, PI, ConditionalFlow
from ccg.flows.layout import coupling_stack


class _LinearTailGuard(nn.Module):
    """Wrap an elementwise normflows spline so linear inputs outside [-π, π] pass unchanged.

    `linear` is a BoolTensor over the wrapped transform's features. Calls accept an optional
    context, as normflows' coupling passes one to its unconditional transform.
    """

    def __init__(self, inner: nn.Module, linear: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("linear", linear.clone())

    def _guard(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(self.linear & (x.abs() > PI), x, y)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, logdet = self.inner(x)
        return self._guard(x, y), logdet

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.inner.inverse(y)
        return self._guard(y, x), logdet


class NormflowsCoupling(nn.Module):
    """normflows `CircularCoupledRationalQuadraticSpline` with the linear-tail guard.

    Args:
        transform: BoolTensor [dim], True on transformed dims.
        circular: BoolTensor [dim].
        context_dim, hidden, n_blocks, n_bins: see `ConditionalFlow`.

    Acts in internal units: every dim's spline box is [-π, π]. forward: base -> data.
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
    ) -> None:
        super().__init__()
        ind_circ = torch.nonzero(circular).flatten().tolist()
        self.layer = CircularCoupledRationalQuadraticSpline(
            num_input_channels=len(circular),
            num_blocks=n_blocks,
            num_hidden_channels=hidden,
            ind_circ=ind_circ,
            num_context_channels=context_dim,
            num_bins=n_bins,
            tail_bound=PI,
            mask=transform.to(torch.uint8),
            init_identity=True,
        )
        prqct = self.layer.prqct
        prqct.unconditional_transform = _LinearTailGuard(
            prqct.unconditional_transform, ~circular[prqct.identity_features]
        )
        self.register_buffer("guard", transform & ~circular)

    def _fix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(self.guard & (x.abs() > PI), x, y)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: x [B, dim] -> (y [B, dim], log|dy/dx| [B])."""
        y, logdet = self.layer(x, context)
        return self._fix(x, y), logdet

    def inverse(self, y: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base: y [B, dim] -> (x [B, dim], log|dx/dy| [B])."""
        x, logdet = self.layer.inverse(y, context)
        return self._fix(y, x), logdet


class NormflowsShift(nn.Module):
    """normflows `PeriodicShift` on the circular dims (bound π), with the ccg call signature."""

    def __init__(self, shift: torch.Tensor, circular: torch.Tensor) -> None:
        super().__init__()
        ind = torch.nonzero(circular).flatten()
        self.shift = PeriodicShift(ind.tolist(), bound=PI, shift=shift[ind].clone())

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift forward: x [B, dim] -> (y [B, dim], zeros [B])."""
        return self.shift(x)

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift back: y [B, dim] -> (x [B, dim], zeros [B])."""
        return self.shift.inverse(y)


@FLOW_BACKENDS.register("normflows")
class NormflowsFlow(ConditionalFlow):
    """`ConditionalFlow` built from normflows layers: [coupling, periodic shift] x n_layers.

    Same arguments, masks and shifts as `NflowsFlow`. Internally linear dims are in units of
    tail_bound / π standardized units (see the module docstring); the base and the final
    de-standardization account for it, so densities are in r units like every flow.
    """

    backend = "normflows"

    def _unit(self) -> float:
        return PI / self.tail_bound

    def _build_layers(self) -> list[nn.Module]:
        return coupling_stack(
            self.standardize.circular,
            self.n_layers,
            lambda mask, circular: NormflowsCoupling(
                mask, circular, self.context_dim, hidden=self.hidden, n_blocks=self.n_blocks,
                n_bins=self.n_bins,
            ),
            NormflowsShift,
        )
