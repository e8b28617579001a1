"""The fixed last layer of every flow: internal flow units to the coordinates r (`Standardize`),
and the angle wrap to [-π, π) it uses on circular dims."""

from __future__ import annotations

import math

import torch
from torch import nn

PI = math.pi


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles (rad) to [-π, π) elementwise."""
    return torch.remainder(x + PI, 2.0 * PI) - PI


class Standardize(nn.Module):
    """Fixed map from internal flow units to r (the last layer, base -> data).

    Linear dims: r_lin = loc_lin + L v_lin / unit with L lower triangular (positive diagonal):
    diag(scale) by default, or a given `scale_tril` that correlates the linear dims (for
    example the Cholesky factor of the harmonic covariance at the reference structure);
    log|det| = Σ log diag(L) - n_lin log(unit). Circular dims: r = wrap(v + loc) (a rotation of
    the circle, log|det| 0), so the spline boundaries sit opposite the reference torsion.
    `unit` is the number of internal units per standardized unit (1 for the nflows backend;
    π / tail_bound for the normflows backend, whose spline box is [-π, π]). With
    `temperature_scaled`, r_lin = loc_lin + s L v_lin / unit with s = exp(context[:, -1] / 2) =
    sqrt(T / T_ref), adding n_lin log s to log|det|.
    """

    def __init__(
        self, circular: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, unit: float = 1.0,
        scale_tril: torch.Tensor | None = None, temperature_scaled: bool = False,
    ) -> None:
        super().__init__()
        lin = torch.nonzero(~circular).flatten()
        circ = torch.nonzero(circular).flatten()
        n_lin = len(lin)
        if scale_tril is None:
            tril = torch.diag(scale[lin])
        else:
            tril = torch.as_tensor(scale_tril, dtype=scale.dtype).detach().clone().cpu()
            if tril.shape != (n_lin, n_lin):
                raise ValueError(
                    f"Expected scale_tril of shape [{n_lin}, {n_lin}] (one row per linear dim); "
                    f"got {list(tril.shape)}."
                )
            diag = torch.diagonal(tril)
            if not bool(torch.isfinite(tril).all()) or not bool((diag > 0).all()) or bool(
                torch.triu(tril, diagonal=1).abs().max() > 0 if n_lin > 1 else False
            ):
                raise ValueError(
                    "Expected scale_tril lower triangular with a positive diagonal and finite "
                    "entries (a Cholesky factor, e.g. torch.linalg.cholesky(covariance))."
                )
        self.register_buffer("circular", circular.clone())
        self.register_buffer("loc", loc.clone())
        self.register_buffer("scale", scale.clone())
        self.register_buffer("scale_tril", tril)
        self.register_buffer("_lin", lin, persistent=False)
        self.register_buffer("_circ", circ, persistent=False)
        self.register_buffer("_order", torch.argsort(torch.cat([lin, circ])), persistent=False)
        self.correlated = scale_tril is not None
        self.unit = float(unit)
        self.temperature_scaled = bool(temperature_scaled)

    def _logdet(self) -> torch.Tensor:
        n_lin = self.scale_tril.shape[0]
        return torch.log(torch.diagonal(self.scale_tril)).sum() - n_lin * math.log(self.unit)

    def _log_s(self, context: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
        """log s = log sqrt(T / T_ref) per row [B, 1] (0 unless `temperature_scaled`)."""
        if not self.temperature_scaled:
            return torch.zeros(n, 1, dtype=like.dtype, device=like.device)
        if context is None:
            raise ValueError("Expected a context (last column log(T / T_ref)) for a "
                             "temperature-scaled Standardize; got None.")
        return 0.5 * context[:, -1:]

    def forward(
        self, v: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Internal units v [B, dim] -> r [B, dim]; log|dr/dv| [B]."""
        log_s = self._log_s(context, v.shape[0], v)
        step = (v[:, self._lin] / self.unit) @ self.scale_tril.T
        r_lin = self.loc[self._lin] + torch.exp(log_s) * step
        r_circ = wrap_angle(v[:, self._circ] + self.loc[self._circ])
        r = torch.cat([r_lin, r_circ], dim=1)[:, self._order]
        return r, self._logdet() + len(self._lin) * log_s[:, 0]

    def inverse(
        self, r: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """r [B, dim] -> internal units v [B, dim]; log|dv/dr| [B]."""
        log_s = self._log_s(context, r.shape[0], r)
        centered = ((r[:, self._lin] - self.loc[self._lin]) * torch.exp(-log_s)).T
        v_lin = self.unit * torch.linalg.solve_triangular(
            self.scale_tril, centered, upper=False).T
        v_circ = wrap_angle(r[:, self._circ] - self.loc[self._circ])
        v = torch.cat([v_lin, v_circ], dim=1)[:, self._order]
        return v, -self._logdet() - len(self._lin) * log_s[:, 0]
