"""Layer layout shared by the flow backends: coupling masks, circular shifts, the stack."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ccg.flows.base import PI, wrap_angle

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def coupling_masks(circular: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """Transform masks (True = transformed) for `n_layers` coupling layers (n_layers even).

    Layers come in complementary pairs, so every dim is transformed in exactly half of them.
    Within a pair, circular dims and linear dims are each split in alternation (after a fixed,
    seeded permutation per pair, the identity for the first pair), so both halves mix circular
    and linear dims and different pairs condition on different partners. Deterministic.
    """
    circ_idx = torch.nonzero(circular).flatten()
    lin_idx = torch.nonzero(~circular).flatten()
    masks: list[torch.Tensor] = []
    for pair in range(n_layers // 2):
        if pair > 0:
            gen = torch.Generator().manual_seed(1000 + pair)
            circ_idx = circ_idx[torch.randperm(len(circ_idx), generator=gen)]
            lin_idx = lin_idx[torch.randperm(len(lin_idx), generator=gen)]
        order = torch.cat([circ_idx, lin_idx])
        mask = torch.zeros(len(circular), dtype=torch.bool)
        mask[order[0::2]] = True
        masks += [mask, ~mask]
    return masks


def circular_shifts(circular: torch.Tensor, n_shifts: int) -> torch.Tensor:
    """Fixed shifts [n_shifts, dim] in [-π, π) on circular dims (0 on linear dims).

    A deterministic low-discrepancy sequence (golden-ratio steps, offset per dim), so no
    coupling layer sees the same point at its spline boundary.
    """
    k = torch.arange(1, n_shifts + 1, dtype=torch.float64)[:, None]
    j = torch.arange(len(circular), dtype=torch.float64)[None, :]
    frac = torch.remainder(k * _GOLDEN + j * math.sqrt(2.0), 1.0)
    shifts = wrap_angle(2.0 * PI * frac)
    return torch.where(circular, shifts, torch.zeros_like(shifts)).to(torch.get_default_dtype())


def coupling_stack(
    circular: torch.Tensor,
    n_layers: int,
    make_coupling: Callable[[torch.Tensor, torch.Tensor], nn.Module],
    make_shift: Callable[[torch.Tensor, torch.Tensor], nn.Module],
) -> list[nn.Module]:
    """[coupling, circular shift] x n_layers in base -> data order.

    `make_coupling(mask, circular)` builds a coupling layer transforming the dims where mask is
    True; `make_shift(shift, circular)` a fixed circular shift (skipped without circular dims).
    """
    masks = coupling_masks(circular, n_layers)
    shifts = circular_shifts(circular, n_layers)
    layers: list[nn.Module] = []
    for mask, shift in zip(masks, shifts, strict=True):
        if bool(mask.any()):
            layers.append(make_coupling(mask, circular))
        if bool(circular.any()):
            layers.append(make_shift(shift, circular))
    return layers
