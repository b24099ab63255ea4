"""Figures. Built on matplotlib's Figure (no pyplot state), so they work headless and inline."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from depth_lora.data.analysis import HIST_BIN_MM, DatasetStats
from depth_lora.data.captures import Capture
from depth_lora.text import plural, size_hw

DEPTH_CMAP = "turbo_r"  # near = red/warm, far = blue: how depth maps are usually read
# |error| maps: magma without its last, near-white eighth, so the largest errors never look like
# the holes (white) beside them.
ERROR_CMAP = ListedColormap(colormaps["magma"](np.linspace(0.0, 0.85, 256)), name="magma_no_white")
# The banner of every figure drawn from a run fine-tuned from the offline demo model.
DEMO_BANNER = "OFFLINE DEMO MODEL, not Depth Anything: do not trust this depth on real captures"

# Colour ranges of depth panels. Every map of a scene is drawn on the target's range (these
# percentiles of its valid pixels) unless it cannot be read there: a map whose own range lies less
# than MIN_INSIDE_FRACTION inside the target's would be one saturated colour, so it gets its own range
# and says so. A narrow map stays on the target's range: nearly flat is what it is.
SCALE_PERCENTILES = (2, 98)
MIN_INSIDE_FRACTION = 0.5
# A constant map (all one value) is drawn on value +- this, so it shows as the bar's middle colour.
CONSTANT_HALF_RANGE_MM = 10.0
# Percentiles are taken on at most about this many pixels per map (a strided subsample): enough
# for a colour range, and fast on 1200 x 1944 captures.
SCALE_SAMPLE_PIXELS = 250_000


@dataclass(frozen=True)
class DepthScale:
    """Colour range of one depth panel, in mm.

    own: the panel does not use the range shared by the other panels (say so in its title).
    constant_mm: the value of a map that is all one value, else None.
    """

    vmin_mm: float
    vmax_mm: float
    own: bool = False
    constant_mm: float | None = None

    def title(self, name: str) -> str:
        """`name`, plus a second line when the panel is constant or has its own colour scale."""
        notes = [f"constant {self.constant_mm:.0f} mm"] if self.constant_mm is not None else []
        notes += ["own colour scale"] if self.own else []
        return f"{name}\n({', '.join(notes)})" if notes else name


def _valid_sample(depth_mm: np.ndarray) -> np.ndarray:
    """(N,) finite depths of a map, strided down to about SCALE_SAMPLE_PIXELS."""
    valid = depth_mm[np.isfinite(depth_mm)]
    return valid[:: max(1, valid.size // SCALE_SAMPLE_PIXELS)]


def _percentile_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, SCALE_PERCENTILES)
    return float(lo), float(max(hi, lo + 1.0))  # at least 1 mm wide


def _readable_on(values: np.ndarray, lo: float, hi: float) -> bool:
    """True if a map's own range (its valid `values`) lies mostly inside [lo, hi]."""
    own_lo, own_hi = _percentile_range(values)
    inside = max(0.0, min(hi, own_hi) - max(lo, own_lo))
    return inside >= MIN_INSIDE_FRACTION * (own_hi - own_lo)


def depth_scales_mm(depths_mm: list[np.ndarray]) -> list[DepthScale]:
    """Colour ranges for depth maps of one scene (mm, NaN = no depth), e.g. [target, *predictions].

    The first non-constant map (the target) sets the range (robust percentiles of its valid
    pixels); every other map is drawn on it unless it cannot be read there (MIN_INSIDE_FRACTION):
    then it gets its own range, said in its title. A constant map is drawn on the shared range when
    its value is inside it, else on a range centred on its value; its title gives the value, and it
    gets no colour bar (one colour has nothing to read off a bar).

    Returns one DepthScale per map, in order.
    """
    samples = [_valid_sample(d) for d in depths_mm]
    # all one value (to 0.01 mm), judged on every pixel: a sample could miss the odd one out
    constant = [
        v.size > 0 and float(np.nanmax(d) - np.nanmin(d)) < 0.01
        for d, v in zip(depths_mm, samples, strict=True)
    ]
    reference = next((v for v, c in zip(samples, constant, strict=True) if v.size and not c), None)
    lo, hi = _percentile_range(reference) if reference is not None else (0.0, 1.0)
    scales = []
    for values, flat in zip(samples, constant, strict=True):
        if flat:
            value = float(values[0])
            if reference is not None and lo <= value <= hi:
                scales.append(DepthScale(lo, hi, constant_mm=value))
            else:
                scales.append(DepthScale(value - CONSTANT_HALF_RANGE_MM, value + CONSTANT_HALF_RANGE_MM,
                                         constant_mm=value))
        elif not values.size or _readable_on(values, lo, hi):
            scales.append(DepthScale(lo, hi))
        else:
            scales.append(DepthScale(*_percentile_range(values), own=True))
    return scales


def _draw_depth(fig: Figure, ax, depth_mm: np.ndarray, scale: DepthScale, name: str, label="Z (mm)", **kw):
    """Draw one depth panel with its mm colour bar and a title that names its scale."""
    im = ax.imshow(np.ma.masked_invalid(depth_mm), cmap=DEPTH_CMAP, vmin=scale.vmin_mm, vmax=scale.vmax_mm)
    if scale.constant_mm is None:  # one colour: nothing to read off a bar
        fig.colorbar(im, ax=ax, label=label, **kw)
    ax.set_title(scale.title(name), fontsize=9)
    return im


def plot_depth_histogram(stats: DatasetStats) -> Figure:
    """Histogram of all valid depths of a dataset (10 mm bins), with mean and +-1 std marked."""
    counts = np.asarray(stats.histogram_counts, dtype=np.float64)
    edges = np.arange(counts.size + 1) * HIST_BIN_MM
    nz = np.flatnonzero(counts)
    first, last = (nz[0], nz[-1] + 1) if nz.size else (0, counts.size)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(100 * counts[first:last] / max(counts.sum(), 1), edges[first : last + 1], fill=True)
    mean_bin = int(stats.depth_mean_mm // HIST_BIN_MM)
    near_mean = counts[max(mean_bin - 5, 0):mean_bin + 6].mean()  # within 50 mm of the mean
    if near_mean >= 0.1 * (counts[nz].mean() if nz.size else 0.0):
        ax.axvline(stats.depth_mean_mm, color="k", lw=1.5, label=f"mean {stats.depth_mean_mm:.0f} mm")
    else:  # the mean falls between clusters, where hardly a pixel is: a line would look like data
        ax.plot([], [], " ", label=f"mean {stats.depth_mean_mm:.0f} mm (between clusters, no line)")
    for sign, side in ((-1, "-"), (1, "+")):
        z_mm = stats.depth_mean_mm + sign * stats.depth_std_mm
        ax.axvline(z_mm, color="k", ls="--", lw=1, label=f"mean {side} 1 std {z_mm:.0f} mm")
    ax.set(
        xlabel="depth Z (mm)",
        ylabel="% of valid pixels per 10 mm bin",
        title=f"Depth over {plural(stats.count, 'capture')} ({stats.valid_pixels:,} valid pixels, "
        f"std {stats.depth_std_mm:.0f} mm)",
    )
    ax.legend()
    return fig


def plot_capture_gallery(captures: list[Capture], max_rows: int = 4) -> Figure:
    """One row per capture: RGB (size H x W) | depth in mm with colour bar | valid mask."""
    captures = captures[:max_rows]
    fig = Figure(figsize=(12, 3 * len(captures)), layout="constrained")
    axes = fig.subplots(len(captures), 3, squeeze=False)
    for row, cap in zip(axes, captures, strict=True):
        row[0].imshow(cap.rgb)
        row[0].set_title(f"{cap.key}\nRGB {size_hw(cap.size_hw)}", fontsize=9)
        _draw_depth(fig, row[1], cap.depth_mm, depth_scales_mm([cap.depth_mm])[0], "depth (holes white)",
                    shrink=0.9)
        row[2].imshow(cap.valid_mask, cmap="gray", vmin=0, vmax=1)
        row[2].set_title(
            f"valid mask (white = measured, black = hole)\n{100 * cap.valid_mask.mean():.1f} % valid",
            fontsize=9,
        )
        for ax in row:
            ax.set_axis_off()
    return fig


def plot_prediction_panel(
    rgb: np.ndarray, target_mm: np.ndarray, pred_mm: np.ndarray, title: str = "", warning: str | None = None
) -> Figure:
    """RGB | target | prediction | |error| in mm, with colour bars; holes of the target in white.

    The prediction is drawn on the target's colour range unless it cannot be read there (see
    depth_scales_mm); the |error| panel has its own.
    rgb (H, W, 3) uint8; target_mm, pred_mm (H, W) in mm at the same size.
    """
    error = np.abs(pred_mm - target_mm)  # NaN where the target has a hole
    fig = Figure(figsize=(16, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(rgb)
    axes[0].set_title("RGB", fontsize=9)
    scales = depth_scales_mm([target_mm, pred_mm])
    panels = (("target", target_mm), ("prediction", pred_mm))
    for ax, (name, depth), scale in zip(axes[1:3], panels, scales, strict=True):
        _draw_depth(fig, ax, depth, scale, name, shrink=0.85)
    valid = np.isfinite(error)
    err_hi = float(np.percentile(error[valid], 99)) if valid.any() else 1.0
    im = axes[3].imshow(np.ma.masked_invalid(error), cmap=ERROR_CMAP, vmin=0, vmax=max(err_hi, 1.0))
    fig.colorbar(im, ax=axes[3], label="|error| (mm)", shrink=0.85)
    rmse = float(np.sqrt(np.mean(error[valid] ** 2))) if valid.any() else float("nan")
    axes[3].set_title(f"|error|, RMSE {rmse:.1f} mm", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return mark_demo(fig, warning)


def plot_evaluation_capture(capture: Capture, preds_mm: dict[str, np.ndarray],
                            warning: str | None = None) -> Figure:
    """RGB | target | every method | the first method's |error|, in mm, in rows of four.

    preds_mm: method name -> (H, W) depth in mm at the capture's resolution; the first one is the
    model under test (its error map is drawn). The depth maps share one colour range, except a
    method that range would hide or a constant one: those get their own, said in the title.
    """
    target = capture.depth_mm
    names = list(preds_mm)
    columns = 4
    rows = -(-(len(names) + 3) // columns)  # RGB, target, the methods, the error map
    fig = Figure(figsize=(5 * columns, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, columns).ravel()
    axes[0].imshow(capture.rgb)
    axes[0].set_title(f"{capture.key} (RGB)", fontsize=9)
    panels = [("target (camera)", target)] + [(n, preds_mm[n]) for n in names]
    scales = depth_scales_mm([depth for _, depth in panels])
    for ax, (name, depth), scale in zip(axes[1:], panels, scales, strict=False):
        if depth is not target:
            err = np.abs(depth - target)[capture.valid_mask]
            name = f"{name}: RMSE {np.sqrt(np.mean(err**2)):.1f} mm" if err.size else name
        _draw_depth(fig, ax, depth, scale, name, shrink=0.8)
    error = np.abs(preds_mm[names[0]] - target)
    valid = np.isfinite(error)
    err_hi = max(float(np.percentile(error[valid], 99)), 1.0) if valid.any() else 1.0
    error_ax = axes[len(panels) + 1]
    im = error_ax.imshow(np.ma.masked_invalid(error), cmap=ERROR_CMAP, vmin=0, vmax=err_hi)
    fig.colorbar(im, ax=error_ax, label="|error| (mm)", shrink=0.8)
    error_ax.set_title(f"{names[0]}: |error| (holes white)", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    return mark_demo(fig, warning)


def plot_metric_bars(
    mean_metrics: dict[str, dict], keys=("rmse_mm", "mae_mm"), title: str = "Error on held-out captures",
    warning: str | None = None,
) -> Figure:
    """Bar chart of headline metrics (mm) per method, plus delta<1.25 on a second axis."""
    methods = list(mean_metrics)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    x = np.arange(len(methods))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        values = [mean_metrics[m].get(key, np.nan) for m in methods]
        bars = ax.bar(x + i * width, values, width, label=key)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(x + width * (len(keys) - 1) / 2, methods, rotation=25, ha="right")
    ax.set(ylabel="mm (lower is better)", title=title)
    ax.legend()
    bars = ax2.bar(x, deltas := [mean_metrics[m].get("delta1", np.nan) for m in methods], color="tab:green")
    ax2.bar_label(bars, fmt="%.2f", fontsize=8)
    ax2.set_xticks(x, methods, rotation=25, ha="right")
    title = "delta < 1.25 (higher is better)"
    if "constant" in methods and deltas[methods.index("constant")] >= 0.9 * deltas[0]:  # about as well
        title += "\na constant scores as well here: it counts pixels\nwithin 25 % of the truth; read the RMSE"
    ax2.set(ylim=(0, 1.1), yticks=np.linspace(0, 1, 6))  # room above a bar at 1 for its label
    ax2.set_title(title, fontsize=9)
    return mark_demo(fig, warning)


def plot_depth_map(rgb: np.ndarray, depth_mm: np.ndarray, title: str = "",
                   warning: str | None = None) -> Figure:
    """RGB beside its predicted depth in mm with a colour bar (a constant map: its value in the title,
    no bar)."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_rgb, ax_depth = fig.subplots(1, 2)
    ax_rgb.imshow(rgb)
    # A Zivid file name plus the demo-model note is wider than the panel: wrapped, not clipped.
    ax_rgb.set_title(textwrap.fill(title or "RGB", 70), fontsize=9)
    _draw_depth(fig, ax_depth, depth_mm, depth_scales_mm([depth_mm])[0], "predicted depth",
                label="predicted Z (mm)", shrink=0.9)
    for ax in (ax_rgb, ax_depth):
        ax.set_axis_off()
    return mark_demo(fig, warning)


def plot_depth_grid(capture: Capture, preds_mm: dict[str, np.ndarray], columns: int = 4) -> Figure:
    """RGB, the camera's depth, then one panel per prediction (mm, RMSE in titles), each with a
    colour bar on the target's range, except a prediction that cannot be read there (own range, said
    in the title) or a constant one (its value in the title, no bar)."""
    depth_panels = [("target (camera)", capture.depth_mm), *preds_mm.items()]
    scales = depth_scales_mm([depth for _, depth in depth_panels])
    rows = -(-(len(depth_panels) + 1) // columns)
    fig = Figure(figsize=(4.5 * columns, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    axes[0].imshow(capture.rgb)
    axes[0].set_title("RGB", fontsize=9)
    for ax, (name, depth), scale in zip(axes[1:], depth_panels, scales, strict=False):
        if depth is not capture.depth_mm:
            err = (depth - capture.depth_mm)[capture.valid_mask]
            name = f"{name}: RMSE {np.sqrt(np.mean(err**2)):.0f} mm"
        _draw_depth(fig, ax, depth, scale, name, shrink=0.8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(capture.key, fontsize=9)
    return fig


def mark_demo(fig: Figure, warning: str | None) -> Figure:
    """Put the demo-model banner on top of `fig` when `warning` (a run record's warning) is set:
    a figure saved or shown alone must say so itself."""
    if warning:
        below = fig.get_suptitle()
        fig.suptitle(DEMO_BANNER + (f"\n{below}" if below else ""), color="tab:red", fontweight="bold",
                     fontsize=11)
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


def plot_completion(rgb: np.ndarray, depth_mm: np.ndarray, completed_mm: np.ndarray, filled: np.ndarray,
                    title: str = "", warning: str | None = None,
                    sigma_mm: np.ndarray | None = None) -> Figure:
    """RGB | the camera's depth with its holes (white) | the completed depth | the filled pixels, and
    each filled pixel's sigma (mm) if given."""
    fig = Figure(figsize=(16 if sigma_mm is None else 20, 3.6), layout="constrained")
    axes = fig.subplots(1, 4 if sigma_mm is None else 5)
    axes[0].imshow(rgb)
    axes[0].set_title(title or "RGB", fontsize=9)
    scales = depth_scales_mm([depth_mm, completed_mm])
    holes = 1 - float(np.isfinite(depth_mm).mean())
    _draw_depth(fig, axes[1], depth_mm, scales[0], f"camera depth ({holes:.0%} holes, white)", shrink=0.85)
    _draw_depth(fig, axes[2], completed_mm, scales[1], "completed", shrink=0.85)
    axes[3].imshow(filled, cmap="gray", vmin=0, vmax=1)
    axes[3].set_title(f"filled pixels (white, {filled.mean():.0%})", fontsize=9)
    if sigma_mm is not None:
        axes[4].set_facecolor("0.85")
        top = max(float(np.nanpercentile(sigma_mm, 99)), 1.0) if np.isfinite(sigma_mm).any() else 1.0
        im = axes[4].imshow(np.ma.masked_invalid(sigma_mm), cmap=ERROR_CMAP, vmin=0, vmax=top)
        fig.colorbar(im, ax=axes[4], label="sigma (mm)", shrink=0.85)
        axes[4].set_title("expected error of each filled pixel (90 %: +-1.645 sigma)", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    return mark_demo(fig, warning)


def plot_hole_filling(capture: Capture, hidden: np.ndarray, fills_mm: dict[str, np.ndarray],
                      title: str = "", warning: str | None = None,
                      sigma_mm: np.ndarray | None = None) -> Figure:
    """RGB | the camera's depth with the hidden pixels removed | each fill | the first fill's
    |error| on the hidden pixels only (everything else grey), RMSE on them in the titles; with
    `sigma_mm` (the first fill's error bar), beside the error on the same scale, and its coverage."""
    target = capture.depth_mm
    names = list(fills_mm)
    panels = len(names) + 3 + (sigma_mm is not None)
    fig = Figure(figsize=(5 * panels, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    axes[0].imshow(capture.rgb)
    axes[0].set_title(title or capture.key, fontsize=9)
    shown = np.where(hidden, np.nan, target)
    scales = depth_scales_mm([shown, *fills_mm.values()])
    _draw_depth(fig, axes[1], shown, scales[0], f"input: {hidden.mean():.0%} of pixels hidden", shrink=0.8)
    for ax, name, scale in zip(axes[2:], names, scales[1:], strict=False):
        rmse = float(np.sqrt(np.nanmean((fills_mm[name] - target)[hidden] ** 2)))
        _draw_depth(fig, ax, fills_mm[name], scale, f"{name}: RMSE {rmse:.1f} mm on hidden", shrink=0.8)
    error = np.where(hidden, np.abs(fills_mm[names[0]] - target), np.nan)
    err_hi = max(float(np.nanpercentile(error, 99)), 1.0) if hidden.any() else 1.0
    maps = {f"{names[0]}: |error| on hidden pixels": error}
    if sigma_mm is not None:
        from depth_lora.numeric.fill_error import coverage

        inside = coverage(error[hidden], sigma_mm[hidden])[0]
        maps[f"its sigma: +-1.645 sigma holds {inside:.0%} of them"] = np.where(hidden, sigma_mm, np.nan)
    for ax, (name, values) in zip(axes[len(names) + 2:], maps.items(), strict=True):
        ax.set_facecolor("0.85")
        im = ax.imshow(np.ma.masked_invalid(values), cmap=ERROR_CMAP, vmin=0, vmax=err_hi)
        fig.colorbar(im, ax=ax, label="mm", shrink=0.8)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return mark_demo(fig, warning)
