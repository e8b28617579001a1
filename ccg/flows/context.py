"""Context rows for the conditional flow: CG features followed by the temperature feature.

Convention (relied on by `ConditionalFlow(temperature_scaling=True)`): the LAST context column is
log(T / T_ref), so that exp(ctx[:, -1] / 2) = sqrt(T / T_ref) widens the base of linear dims.
"""

from __future__ import annotations

import torch

from ccg._checks import check_finite, check_temperature, check_tensor


def temperature_feature(
    temperature_k: torch.Tensor | float, t_ref: float, *, like: torch.Tensor | None = None
) -> torch.Tensor:
    """log(T / T_ref), shape [B, 1].

    Args:
        temperature_k: temperatures in K, a [B] tensor (or a float, which gives [1, 1]).
        t_ref: reference temperature in K (the temperature at which the flow's `scale` holds).
        like: optional tensor whose dtype and device the result takes (default: those of
            `temperature_k`, or the default dtype for a float).

    Raises:
        ValueError: if a temperature or t_ref is not finite and > 0, or the tensor is not 1-D.
    """
    check_temperature(temperature_k, "temperature_k")
    check_temperature(t_ref, "t_ref")
    if isinstance(temperature_k, torch.Tensor):
        if temperature_k.ndim != 1:
            raise ValueError(
                f"Expected temperature_k of shape [B] (K); got {list(temperature_k.shape)}. "
                "Use temperature_k.reshape(-1) for a column."
            )
        t = temperature_k
    else:
        t = torch.tensor([float(temperature_k)], dtype=torch.float64)
    if like is not None:
        t = t.to(dtype=like.dtype, device=like.device)
    elif not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return torch.log(t / float(t_ref))[:, None]


def make_context(
    cg_features: torch.Tensor, temperature_k: torch.Tensor | float, t_ref: float
) -> torch.Tensor:
    """Context rows [B, F + 1] = [cg_features, log(T / T_ref)].

    Args:
        cg_features: [B, F] features of the CG coordinates (for example cos/sin of torsions);
            F may be 0. The result takes its dtype and device.
        temperature_k: [B] temperatures in K, or one float broadcast to every row.
        t_ref: reference temperature in K.

    Raises:
        ValueError: on a non-positive or non-finite temperature, mismatched batch sizes, a
            cg_features tensor that is not [B, F], or NaN/inf features.
    """
    check_tensor(cg_features, "cg_features")
    if cg_features.ndim != 2:
        raise ValueError(
            f"Expected cg_features of shape [B, F]; got {list(cg_features.shape)}. "
            "A single frame needs a batch axis: use cg_features.unsqueeze(0)."
        )
    if not cg_features.is_floating_point():
        raise TypeError(f"Expected floating cg_features; got {cg_features.dtype}. Use .double().")
    check_finite(cg_features, "cg_features")
    b = cg_features.shape[0]
    feat = temperature_feature(temperature_k, t_ref, like=cg_features)
    if not isinstance(temperature_k, torch.Tensor):
        feat = feat.expand(b, 1)
    elif feat.shape[0] != b:
        raise ValueError(
            f"Expected temperature_k of shape [{b}] (one per cg_features row) or a float; "
            f"got {list(temperature_k.shape)}."
        )
    return torch.cat([cg_features, feat], dim=1)
