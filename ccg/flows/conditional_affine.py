"""`ConditionalAffine`: an elementwise map whose shift and scale depend on the context only.

The coupling layers condition every spline on the context too, but each spline must then both
move and reshape its dim, inside its finite interval, through a network that also sees the
other half of r. This layer gives the flow a direct context -> (location, width) map per dim:
the gradient of the reverse KL with respect to the shift is the mean force on r at that z. It
helps where the conditional mean moves with z; it cannot correlate dims (the coupling layers
do that; see `experiments/peptide_reference/README.md` for a case where that is the limit).

On linear dims y = x · exp(a(c)) + b(c), on circular dims y = wrap(x + b(c)) (a rotation of
the circle). a and b come from an nflows `ResidualNet` on the context c = [CG features,
log(T / T_ref)], with a zero final layer (the identity at initialization) and |a| bounded by
`max_log_scale` through tanh. log|dy/dx| = Σ_linear a(c), shape [B].
"""

from __future__ import annotations

import torch
from nflows.nn.nets import ResidualNet
from torch import nn

from ccg.flows.standardize import wrap_angle


class ConditionalAffine(nn.Module):
    """y = x · exp(a(c)) + b(c) on linear dims, wrap(x + b(c)) on circular dims.

    Args:
        circular: BoolTensor [dim], True on circular dims.
        context_dim: width of a context row.
        hidden: hidden width of the ResidualNet.
        n_blocks: its residual blocks.
        max_log_scale: bound on |a| (a = max_log_scale · tanh(raw / max_log_scale)).
    """

    def __init__(self, circular: torch.Tensor, context_dim: int, hidden: int, n_blocks: int,
                 max_log_scale: float = 2.0) -> None:
        super().__init__()
        circular = torch.as_tensor(circular, dtype=torch.bool)
        self.register_buffer("circular", circular.clone())
        self.register_buffer("_lin", torch.nonzero(~circular).flatten(), persistent=False)
        self.dim = int(circular.numel())
        self.n_lin = int((~circular).sum())
        self.max_log_scale = float(max_log_scale)
        self.net = ResidualNet(context_dim, self.dim + self.n_lin, hidden, num_blocks=n_blocks)
        nn.init.zeros_(self.net.final_layer.weight)
        nn.init.zeros_(self.net.final_layer.bias)

    def _params(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-scale a [B, dim], 0 on circular dims; shift b [B, dim])."""
        out = self.net(context)
        shift = out[:, : self.dim]
        raw = out[:, self.dim:]
        m = self.max_log_scale
        a_lin = m * torch.tanh(raw / m)
        log_scale = torch.zeros_like(shift).index_copy(1, self._lin, a_lin)
        return log_scale, shift

    def forward(self, x: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, dim] -> (y [B, dim], log|dy/dx| [B])."""
        log_scale, shift = self._params(context)
        lin = x * torch.exp(log_scale) + shift
        y = torch.where(self.circular, wrap_angle(x + shift), lin)
        return y, log_scale.sum(dim=1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """y [B, dim] -> (x [B, dim], log|dx/dy| [B])."""
        log_scale, shift = self._params(context)
        lin = (y - shift) * torch.exp(-log_scale)
        x = torch.where(self.circular, wrap_angle(y - shift), lin)
        return x, -log_scale.sum(dim=1)
