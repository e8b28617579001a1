"""Flow registry and builders: `build_flow(..., backend=...)`, `flow_from_config(cfg)`.

Save/load is config + state_dict:

    cfg = flow.config()                      # JSON-serializable
    torch.save(flow.state_dict(), path)
    flow2 = flow_from_config(cfg)
    flow2.load_state_dict(torch.load(path))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ccg.flows.base import ConditionalFlow
from ccg.flows.coupling import NflowsFlow
from ccg.flows.normflows_backend import NormflowsFlow

FLOW_BACKENDS: dict[str, type[ConditionalFlow]] = {
    "nflows": NflowsFlow,
    "normflows": NormflowsFlow,
}


def build_flow(
    dim: int,
    context_dim: int,
    circular: torch.Tensor | Sequence[bool],
    loc: torch.Tensor | Sequence[float],
    scale: torch.Tensor | Sequence[float],
    *,
    backend: str = "nflows",
    n_layers: int = 8,
    hidden: int = 128,
    n_blocks: int = 2,
    n_bins: int = 8,
    temperature_scaling: bool = True,
    tail_bound: float = 5.0,
    scale_tril: torch.Tensor | Sequence[Sequence[float]] | None = None,
    circular_concentration: torch.Tensor | Sequence[float] | None = None,
    circular_modes: Sequence[Sequence[float]] | None = None,
    scale_after_layers: bool = False,
) -> ConditionalFlow:
    """Build a conditional flow q(r | context) with the given backend.

    Args:
        dim: n_r, the number of coordinates.
        context_dim: context width (last column log(T / T_ref), see `make_context`).
        circular: [dim] booleans, True on torsions.
        loc, scale: [dim] reference values and widths at T_ref (r units; scale ignored on
            circular dims).
        backend: one of `FLOW_BACKENDS` ("nflows" or "normflows").
        n_layers, hidden, n_blocks, n_bins, temperature_scaling, tail_bound, scale_tril,
        circular_concentration, circular_modes, scale_after_layers: see `ConditionalFlow`.

    Returns:
        A float32 flow at the identity map (cast with `.double()` / `.to(device)`).
    """
    if backend not in FLOW_BACKENDS:
        raise ValueError(
            f'Unknown flow backend "{backend}". Must be one of {sorted(FLOW_BACKENDS)}.'
        )
    return FLOW_BACKENDS[backend](
        dim,
        context_dim,
        circular,
        loc,
        scale,
        n_layers=n_layers,
        hidden=hidden,
        n_blocks=n_blocks,
        n_bins=n_bins,
        temperature_scaling=temperature_scaling,
        tail_bound=tail_bound,
        scale_tril=scale_tril,
        circular_concentration=circular_concentration,
        circular_modes=circular_modes,
        scale_after_layers=scale_after_layers,
    )


def flow_from_config(cfg: Mapping[str, Any]) -> ConditionalFlow:
    """Rebuild a flow (fresh parameters) from `flow.config()`; then load its state_dict."""
    return build_flow(**dict(cfg))
