"""Training-curve plots: loss, and per-(z, T) ESS in temperature bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccg.io.atomic import atomic_path


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if values.size < 2 or window <= 1:
        return values
    window = min(window, values.size)
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_training(metrics: dict, band_ess: list, path: str | Path, *,
                  t_range: tuple[float, float], n_bands: int = 3) -> Path:
    """Write a two-panel PNG: loss vs step, and ESS vs step per temperature band."""
    steps = np.asarray(metrics["step"], dtype=float)
    loss = np.asarray(metrics["loss"], dtype=float)
    from matplotlib.figure import Figure  # (here, not at the top: "import ccg" skips matplotlib)
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_ess = fig.subplots(1, 2)
    window = max(1, steps.size // 50)
    if steps.size:
        ax_loss.plot(steps, loss, color="0.8", lw=0.5, label="per step")
        ax_loss.plot(steps[window - 1:], _smooth(loss, window), color="C0",
                     label=f"mean of {window}")
        low, high = np.percentile(loss, [1, 99]) if loss.size > 10 else (loss.min(), loss.max())
        pad = 0.1 * (high - low + 1e-9)
        ax_loss.set_ylim(low - pad, high + pad)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("reverse KL loss  E[βU − log|J| + log q]")
    ax_loss.legend(loc="upper right", fontsize=8)

    rows = np.asarray(band_ess, dtype=float).reshape(-1, 3)
    edges = np.linspace(t_range[0], t_range[1], n_bands + 1)
    for i in range(n_bands):
        inside = (rows[:, 1] >= edges[i]) & (rows[:, 1] <= edges[i + 1])
        if not inside.any():
            continue
        band_steps = np.unique(rows[inside, 0])
        mean_ess = np.array([rows[inside & (rows[:, 0] == s), 2].mean() for s in band_steps])
        w = max(1, band_steps.size // 30)
        ax_ess.plot(band_steps[w - 1:], _smooth(mean_ess, w),
                    label=f"T {edges[i]:.0f}–{edges[i + 1]:.0f} K")
    ax_ess.set_ylim(0, 1.02)
    ax_ess.set_xlabel("step")
    ax_ess.set_ylabel("per-(z, T) ESS (training batch)")
    ax_ess.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return Path(path)
