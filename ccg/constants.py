"""Physical constants and unit helpers (kJ/mol, K)."""

from __future__ import annotations

import torch

from ccg._checks import check_temperature

KB_KJMOL_PER_K = 0.008314462618
"""Boltzmann constant k_B in kJ/mol/K (the value OpenMM uses)."""


def beta_from_temperature(temperature_k: torch.Tensor | float) -> torch.Tensor | float:
    """beta = 1 / (k_B T) in mol/kJ; `temperature_k` in K (any shape, all > 0)."""
    check_temperature(temperature_k)
    return 1.0 / (KB_KJMOL_PER_K * temperature_k)
