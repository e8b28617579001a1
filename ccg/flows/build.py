"""Building flows: `build_flow(..., backend=...)` and `flow_from_config(cfg)`.

Save/load is config + state_dict:

    cfg = flow.config()                      # JSON-serializable
    torch.save(flow.state_dict(), path)
    flow2 = flow_from_config(cfg)
    flow2.load_state_dict(torch.load(path, weights_only=True))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ccg.flows.base import FLOW_BACKENDS, ConditionalFlow
from ccg.flows.config import FlowConfig

_LEGACY_DEFAULTS = {"scale_after_layers": False}
"""Keys that flow configs written before they existed lack, with the value those flows were
trained with (not today's default)."""


def build_flow(
    dim: int,
    context_dim: int,
    circular: torch.Tensor | Sequence[bool],
    loc: torch.Tensor | Sequence[float],
    scale: torch.Tensor | Sequence[float],
    *,
    backend: str = FlowConfig.backend,
    n_layers: int = FlowConfig.n_layers,
    hidden: int = FlowConfig.hidden,
    n_blocks: int = FlowConfig.n_blocks,
    n_bins: int = FlowConfig.n_bins,
    temperature_scaling: bool = FlowConfig.temperature_scaling,
    tail_bound: float = FlowConfig.tail_bound,
    scale_after_layers: bool = FlowConfig.scale_after_layers,
    spline: str = FlowConfig.spline,
    scale_tril: torch.Tensor | Sequence[Sequence[float]] | None = None,
    circular_concentration: torch.Tensor | Sequence[float] | None = None,
    circular_modes: Sequence[Sequence[float]] | None = None,
    conditional_affine: bool = FlowConfig.conditional_affine,
) -> ConditionalFlow:
    """Build a conditional flow q(r | context) with the given backend.

    Args:
        dim: n_r, the number of coordinates.
        context_dim: context width (last column log(T / T_ref), see `make_context`).
        circular: [dim] booleans, True on torsions.
        loc, scale: [dim] reference values and widths at T_ref (r units; scale ignored on
            circular dims).
        backend: one of `FLOW_BACKENDS` ("nflows" or "normflows").
        n_layers: coupling layers (even); the architecture's defaults are `FlowConfig`'s.
        hidden: conditioner width.
        n_blocks: residual blocks per conditioner.
        n_bins: spline bins.
        temperature_scaling: widen linear dims by sqrt(T / T_ref).
        tail_bound: spline interval half-width on linear dims (standardized units).
        scale_after_layers: apply that widening after the layers.
        spline: "ccg" (branch-free) or "nflows" (the reference function).
        scale_tril: optional Cholesky factor of the linear dims' base (see `ConditionalFlow`).
        circular_concentration: optional wrapped-Cauchy concentrations of circular dims.
        circular_modes: optional second base components (see `ConditionalFlow`).
        conditional_affine: end with a context-only shift and width per dim
            (`ccg.flows.conditional_affine`).

    Returns:
        A float32 flow at the identity map (cast with `.double()` / `.to(device)`).
    """
    return FLOW_BACKENDS.resolve(backend)(
        dim, context_dim, circular, loc, scale, n_layers=n_layers, hidden=hidden,
        n_blocks=n_blocks, n_bins=n_bins, temperature_scaling=temperature_scaling,
        tail_bound=tail_bound, scale_after_layers=scale_after_layers, spline=spline,
        scale_tril=scale_tril,
        circular_concentration=circular_concentration, circular_modes=circular_modes,
        conditional_affine=conditional_affine,
    )


def flow_from_config(cfg: Mapping[str, Any]) -> ConditionalFlow:
    """Rebuild a flow (fresh parameters) from `flow.config()`; then load its state_dict."""
    return build_flow(**{**_LEGACY_DEFAULTS, **dict(cfg)})
