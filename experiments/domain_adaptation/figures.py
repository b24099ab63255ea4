"""The experiment's own figures: learning curves against steps and against the number of training
captures (the package's figures are in depth_lora.viz)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def plot_learning_curves(
    curves: dict[str, list[tuple[int, float]]], title: str = "", references: dict[str, float] | None = None
) -> Figure:
    """Validation RMSE (mm, log scale) against training step, one line per method; `references`
    (name -> RMSE mm, e.g. baselines) are drawn as dashed horizontal lines."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, points in curves.items():
        if points:
            steps, rmse = zip(*points, strict=True)
            ax.plot(steps, rmse, marker=".", label=name)
    for (name, value), color in zip((references or {}).items(), ("0.3", "0.6", "0.8"), strict=False):
        ax.axhline(value, color=color, linestyle="--", linewidth=1, label=f"{name} ({value:.0f} mm)")
    ax.set(xlabel="training step", ylabel="validation RMSE (mm, log scale)", title=title, yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_capture_curve(
    curves: dict[str, list[tuple[int, float, float, float]]],
    title: str = "",
    references: dict[str, float] | None = None,
) -> Figure:
    """Test RMSE (mm) against the number of training captures, one line per method.

    curves: method -> [(training captures, RMSE mm, 95 % interval low, high)], drawn with the
    interval as error bars; `references` (name -> RMSE mm, e.g. the constant predictor) as dashed
    horizontal lines. The x axis is logarithmic (10, 20, 40, 70 captures are evenly spaced).
    """
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, points in curves.items():
        if not points:
            continue
        n, rmse, lo, hi = (np.asarray(v, dtype=float) for v in zip(*sorted(points), strict=True))
        ax.errorbar(n, rmse, yerr=[rmse - lo, hi - rmse], marker="o", capsize=3, label=name)
    for (name, value), color in zip((references or {}).items(), ("0.3", "0.6", "0.8"), strict=False):
        ax.axhline(value, color=color, linestyle="--", linewidth=1, label=f"{name} ({value:.0f} mm)")
    ticks = sorted({int(p[0]) for points in curves.values() for p in points})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="training captures", ylabel="test RMSE (mm, lower is better)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
