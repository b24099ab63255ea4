"""Figures. Built on matplotlib's Figure (no pyplot state), so they work headless and inline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from depth_lora.analysis import HIST_BIN_MM, DatasetStats
from depth_lora.data import Capture

DEPTH_CMAP = "turbo_r"  # near = red/warm, far = blue: how depth maps are usually read


def depth_limits_mm(*depths_mm: np.ndarray, percentiles=(1, 99)) -> tuple[float, float]:
    """Shared colour limits for several depth maps (robust percentiles of valid pixels)."""
    valid = np.concatenate([d[np.isfinite(d)].ravel() for d in depths_mm])
    if valid.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(valid, percentiles)
    return float(lo), float(max(hi, lo + 1.0))


def plot_depth_histogram(stats: DatasetStats) -> Figure:
    """Histogram of all valid depths of a dataset (10 mm bins), with mean and +-1 std marked."""
    counts = np.asarray(stats.histogram_counts, dtype=np.float64)
    edges = np.arange(counts.size + 1) * HIST_BIN_MM
    nz = np.flatnonzero(counts)
    first, last = (nz[0], nz[-1] + 1) if nz.size else (0, counts.size)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(100 * counts[first:last] / max(counts.sum(), 1), edges[first : last + 1], fill=True)
    ax.axvline(stats.depth_mean_mm, color="k", lw=1.5, label=f"mean {stats.depth_mean_mm:.0f} mm")
    for sign in (-1, 1):
        ax.axvline(stats.depth_mean_mm + sign * stats.depth_std_mm, color="k", ls="--", lw=1)
    ax.set(
        xlabel="depth Z (mm)",
        ylabel="% of valid pixels per 10 mm bin",
        title=f"Depth over {stats.count} captures ({stats.valid_pixels:,} valid pixels, "
        f"std {stats.depth_std_mm:.0f} mm)",
    )
    ax.legend()
    return fig


def plot_capture_gallery(captures: list[Capture], max_rows: int = 4) -> Figure:
    """One row per capture: RGB | depth in mm with colour bar | valid mask."""
    captures = captures[:max_rows]
    fig = Figure(figsize=(12, 3 * len(captures)), layout="constrained")
    axes = fig.subplots(len(captures), 3, squeeze=False)
    for row, cap in zip(axes, captures, strict=True):
        lo, hi = depth_limits_mm(cap.depth_mm)
        row[0].imshow(cap.rgb)
        row[0].set_title(f"{cap.key}\nRGB {cap.size_hw[1]}x{cap.size_hw[0]}", fontsize=9)
        im = row[1].imshow(np.ma.masked_invalid(cap.depth_mm), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        fig.colorbar(im, ax=row[1], label="Z (mm)", shrink=0.9)
        row[1].set_title("depth (holes white)", fontsize=9)
        row[2].imshow(cap.valid_mask, cmap="gray", vmin=0, vmax=1)
        row[2].set_title(f"valid mask ({100 * cap.valid_mask.mean():.1f} % valid)", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    return fig


def plot_prediction_panel(
    rgb: np.ndarray, target_mm: np.ndarray, pred_mm: np.ndarray, title: str = ""
) -> Figure:
    """RGB | target | prediction | |error| in mm, with colour bars; holes of the target in white.

    rgb (H, W, 3) uint8; target_mm, pred_mm (H, W) in mm at the same size.
    """
    lo, hi = depth_limits_mm(target_mm)
    error = np.abs(pred_mm - target_mm)  # NaN where the target has a hole
    fig = Figure(figsize=(16, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(rgb)
    axes[0].set_title("RGB")
    for ax, depth, name in ((axes[1], target_mm, "target"), (axes[2], pred_mm, "prediction")):
        im = ax.imshow(np.ma.masked_invalid(depth), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        fig.colorbar(im, ax=ax, label="Z (mm)", shrink=0.85)
        ax.set_title(name)
    valid = np.isfinite(error)
    err_hi = float(np.percentile(error[valid], 99)) if valid.any() else 1.0
    im = axes[3].imshow(np.ma.masked_invalid(error), cmap="magma", vmin=0, vmax=max(err_hi, 1.0))
    fig.colorbar(im, ax=axes[3], label="|error| (mm)", shrink=0.85)
    rmse = float(np.sqrt(np.mean(error[valid] ** 2))) if valid.any() else float("nan")
    axes[3].set_title(f"|error|, RMSE {rmse:.1f} mm")
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def plot_evaluation_capture(capture: Capture, preds_mm: dict[str, np.ndarray]) -> Figure:
    """Two rows: RGB | target | first method; the other methods | first method's |error|, in mm.

    preds_mm: method name -> (H, W) depth in mm at the capture's resolution; the first one is the
    model under test (its error map is drawn). All depth maps share one colour scale.
    """
    target = capture.depth_mm
    lo, hi = depth_limits_mm(target)
    names = list(preds_mm)
    fig = Figure(figsize=(15, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    axes[0, 0].imshow(capture.rgb)
    axes[0, 0].set_title(f"{capture.key} (RGB)", fontsize=9)
    depth_axes = [axes[0, 1], axes[0, 2], axes[1, 0], axes[1, 1]]
    panels = [("target (camera)", target)] + [(n, preds_mm[n]) for n in names]
    for ax, (name, depth) in zip(depth_axes, panels, strict=False):
        im = ax.imshow(np.ma.masked_invalid(depth), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        if depth is not target:
            err = np.abs(depth - target)[capture.valid_mask]
            name = f"{name}: RMSE {np.sqrt(np.mean(err**2)):.1f} mm" if err.size else name
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, label="Z (mm)", shrink=0.8)
    error = np.abs(preds_mm[names[0]] - target)
    valid = np.isfinite(error)
    err_hi = max(float(np.percentile(error[valid], 99)), 1.0) if valid.any() else 1.0
    im = axes[1, 2].imshow(np.ma.masked_invalid(error), cmap="magma", vmin=0, vmax=err_hi)
    fig.colorbar(im, ax=axes[1, 2], label="|error| (mm)", shrink=0.8)
    axes[1, 2].set_title(f"{names[0]}: |error| (holes white)", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig


def plot_metric_bars(
    mean_metrics: dict[str, dict], keys=("rmse_mm", "mae_mm"), title: str = "Error on held-out captures"
) -> Figure:
    """Bar chart of headline metrics (mm) per method, plus delta<1.25 on a second axis."""
    methods = list(mean_metrics)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    x = np.arange(len(methods))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        values = [mean_metrics[m].get(key, np.nan) for m in methods]
        bars = ax.bar(x + i * width, values, width, label=key)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(x + width * (len(keys) - 1) / 2, methods)
    ax.set(ylabel="mm (lower is better)", title=title)
    ax.legend()
    bars = ax2.bar(x, [mean_metrics[m].get("delta1", np.nan) for m in methods], color="tab:green")
    ax2.bar_label(bars, fmt="%.2f", fontsize=8)
    ax2.set_xticks(x, methods, rotation=20)
    ax2.set(ylim=(0, 1), title="delta < 1.25 (higher is better)")
    return fig


def plot_depth_map(rgb: np.ndarray, depth_mm: np.ndarray, title: str = "") -> Figure:
    """RGB beside its predicted depth in mm with a colour bar."""
    lo, hi = depth_limits_mm(depth_mm)
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_rgb, ax_depth = fig.subplots(1, 2)
    ax_rgb.imshow(rgb)
    ax_rgb.set_title(title or "RGB", fontsize=9)
    im = ax_depth.imshow(np.ma.masked_invalid(depth_mm), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
    fig.colorbar(im, ax=ax_depth, label="predicted Z (mm)", shrink=0.9)
    ax_depth.set_title("predicted depth", fontsize=9)
    for ax in (ax_rgb, ax_depth):
        ax.set_axis_off()
    return fig


def plot_depth_grid(capture: Capture, preds_mm: dict[str, np.ndarray], columns: int = 4) -> Figure:
    """RGB, the camera's depth, then one panel per prediction (mm, one colour scale, RMSE in titles)."""
    panels = [("RGB", None), ("target (camera)", capture.depth_mm), *preds_mm.items()]
    rows = -(-len(panels) // columns)
    lo, hi = depth_limits_mm(capture.depth_mm)
    fig = Figure(figsize=(4 * columns, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, depth) in zip(axes, panels, strict=False):
        if depth is None:
            ax.imshow(capture.rgb)
        else:
            im = ax.imshow(np.ma.masked_invalid(depth), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
            if depth is not capture.depth_mm:
                err = (depth - capture.depth_mm)[capture.valid_mask]
                name = f"{name}: RMSE {np.sqrt(np.mean(err**2)):.0f} mm"
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(im, ax=axes.tolist(), label="Z (mm)", shrink=0.6)
    fig.suptitle(capture.key, fontsize=9)
    return fig


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


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a figure as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def write_analysis_plots(stats: DatasetStats, captures: list[Capture], out_dir: str | Path) -> list[Path]:
    """Write depth_histogram.png and capture_gallery.png into `out_dir`."""
    out_dir = Path(out_dir)
    paths = [save_figure(plot_depth_histogram(stats), out_dir / "depth_histogram.png")]
    if captures:
        paths.append(save_figure(plot_capture_gallery(captures), out_dir / "capture_gallery.png"))
    return paths
