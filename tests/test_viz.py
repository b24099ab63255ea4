"""Figures show every panel: colour ranges that hide no method, legends, units, sizes, plurals."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from depth_lora.data.analysis import DatasetStats
from depth_lora.data.captures import Capture
from depth_lora.viz import (
    DEPTH_CMAP,
    depth_scales_mm,
    plot_capture_gallery,
    plot_depth_grid,
    plot_depth_histogram,
    plot_depth_map,
    plot_evaluation_capture,
    plot_prediction_panel,
)

H, W = 40, 64


def _reported_case() -> tuple[Capture, np.ndarray]:
    """Issue 15: the camera sees 430-530 mm, the fine-tuned model predicts 514-1338 mm."""
    v, u = np.mgrid[0:H, 0:W]
    target = (430.0 + 100.0 * u / (W - 1)).astype(np.float32)
    target[:5, :7] = np.nan  # a hole
    pred = (514.0 + 824.0 * v / (H - 1)).astype(np.float32)
    rgb = np.zeros((H, W, 3), np.uint8)
    return Capture("cap", rgb, target), pred


def _figures(capture: Capture, preds: dict[str, np.ndarray]):
    """The three figures that draw a target beside predictions, with the title of the first method."""
    name, pred = next(iter(preds.items()))
    yield plot_evaluation_capture(capture, preds), name
    yield plot_depth_grid(capture, preds), name
    if len(preds) == 1:
        yield plot_prediction_panel(capture.rgb, capture.depth_mm, pred), "prediction"


def _depth_panels(fig) -> list:
    """Axes that draw a depth map (the depth colour map; not RGB, mask or |error|)."""
    return [ax for ax in fig.axes if ax.images and ax.images[0].cmap.name == DEPTH_CMAP]


def _panel(fig, title_start: str):
    """The one depth panel whose title starts with `title_start`."""
    axes = [ax for ax in _depth_panels(fig) if ax.get_title().startswith(title_start)]
    assert len(axes) == 1, [ax.get_title() for ax in fig.axes]
    return axes[0]


def _range(ax) -> tuple[float, float]:
    norm = ax.images[0].norm
    return norm.vmin, norm.vmax


def _fraction_inside(values: np.ndarray, lo: float, hi: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.mean((values >= lo) & (values <= hi)))


def test_prediction_far_from_the_target_gets_its_own_colour_range_covering_its_values():
    capture, pred = _reported_case()
    for fig, name in _figures(capture, {"fine_tuned": pred}):
        ax_pred, ax_target = _panel(fig, name), _panel(fig, "target")
        assert _fraction_inside(pred, *_range(ax_pred)) > 0.9
        assert "own colour scale" in ax_pred.get_title()
        # the target is not squashed into a corner of a range stretched to the prediction
        lo, hi = _range(ax_target)
        assert _fraction_inside(capture.depth_mm, lo, hi) > 0.9 and hi - lo < 150
        assert "own colour scale" not in ax_target.get_title()


def test_predictions_close_to_the_target_share_its_colour_range():
    capture, _ = _reported_case()
    near = np.nan_to_num(capture.depth_mm, nan=480.0) + 5.0
    for fig, name in _figures(capture, {"zero_shot": near}):
        assert _range(_panel(fig, name)) == _range(_panel(fig, "target"))
        assert "own" not in _panel(fig, name).get_title()


def test_a_constant_prediction_has_no_colour_bar_and_its_title_gives_the_value():
    capture, pred = _reported_case()
    outside = np.full((H, W), 812.0, np.float32)  # outside the target's 430-530 mm: its own, centred
    for fig, name in _figures(capture, {"constant": outside}):
        ax = _panel(fig, name)
        lo, hi = _range(ax)
        assert lo < 812.0 < hi and abs((812.0 - lo) / (hi - lo) - 0.5) < 0.01
        assert "constant 812 mm" in ax.get_title() and ax.images[0].colorbar is None
    inside = np.full((H, W), 480.0, np.float32)  # inside: on the target's range, one colour
    for fig, name in _figures(capture, {"constant": inside}):
        ax = _panel(fig, name)
        assert _range(ax) == _range(_panel(fig, "target")) and ax.images[0].colorbar is None
        assert "constant 480 mm" in ax.get_title() and "own" not in ax.get_title()
    fig = plot_depth_map(capture.rgb, outside)
    assert "constant 812 mm" in fig.axes[1].get_title() and fig.axes[1].images[0].colorbar is None


def test_a_nearly_flat_prediction_is_drawn_on_the_targets_range_where_it_looks_flat():
    """A calibrated zero-shot map of 1,700-1,950 mm on its own range looked structured; on the
    target's it shows what it is."""
    capture, _ = _reported_case()
    v, u = np.mgrid[0:H, 0:W]
    flat = (475.0 + 10.0 * u / (W - 1) + 2.0 * v / (H - 1)).astype(np.float32)  # 12 mm of the 100
    for fig, name in _figures(capture, {"zero_shot_calibrated": flat}):
        ax = _panel(fig, name)
        assert _range(ax) == _range(_panel(fig, "target")) and "own" not in ax.get_title()


def test_every_depth_panel_but_a_constant_has_a_mm_colour_bar_and_the_error_panel_its_own():
    capture, pred = _reported_case()
    preds = {"fine_tuned": pred, "zero_shot": capture.depth_mm + 3.0, "constant": np.full((H, W), 480.0)}
    for fig in (plot_evaluation_capture(capture, preds), plot_depth_grid(capture, preds)):
        panels = _depth_panels(fig)
        assert len(panels) == 4  # target and three methods
        for ax in panels:
            bar = ax.images[0].colorbar
            if ax.get_title().startswith("constant"):
                assert bar is None
            else:
                assert bar is not None and bar.ax.get_ylabel() == "Z (mm)"
    fig = plot_evaluation_capture(capture, preds)
    error = next(ax for ax in fig.axes if ax.get_title() == "fine_tuned: |error| (holes white)").images[0]
    assert error.colorbar.ax.get_ylabel() == "|error| (mm)" and error.norm.vmin == 0


def test_depth_scales_mm_handles_a_map_without_valid_pixels():
    capture, pred = _reported_case()
    scales = depth_scales_mm([capture.depth_mm, np.full((H, W), np.nan), pred])
    assert all(np.isfinite([s.vmin_mm, s.vmax_mm]).all() and s.vmin_mm < s.vmax_mm for s in scales)
    assert scales[0].vmin_mm == scales[1].vmin_mm and scales[2].own


def _stats(count: int) -> DatasetStats:
    counts = [0] * 1000
    counts[43:53] = [5] * 10  # 430-530 mm
    return DatasetStats(count=count, resolutions=[[H, W]], depth_min_mm=430.0, depth_max_mm=530.0,
                        depth_mean_mm=480.0, depth_std_mm=29.0, valid_fraction_mean=0.9, valid_pixels=50,
                        histogram_counts=counts)


def test_histogram_legend_names_the_dashed_lines():
    ax = plot_depth_histogram(_stats(3)).axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert len(dashed) == 2
    assert [line.get_label() for line in dashed] == ["mean - 1 std 451 mm", "mean + 1 std 509 mm"]
    assert all(line.get_label() in legend for line in dashed)


@pytest.mark.parametrize(("count", "words"), [(1, "1 capture ("), (2, "2 captures (")])
def test_histogram_title_counts_captures_in_singular_or_plural(count, words):
    title = plot_depth_histogram(_stats(count)).axes[0].get_title()
    assert words in title and "1 captures" not in title


def test_gallery_says_what_the_mask_colours_mean_and_gives_the_size_as_h_x_w():
    capture, _ = _reported_case()
    rgb_ax, _, mask_ax = plot_capture_gallery([capture]).axes[:3]
    assert f"RGB {H} x {W} (H x W)" in rgb_ax.get_title()
    assert "white = measured" in mask_ax.get_title() and "black = hole" in mask_ax.get_title()


def test_the_mean_line_is_not_drawn_into_an_empty_gap_between_clusters():
    counts = [0] * 1000
    counts[40:60] = [5] * 20  # 400-600 mm
    counts[200:220] = [5] * 20  # 2000-2200 mm: the mean, ~1300 mm, falls between them
    counts[130] = 1  # a stray pixel or two there do not make it a place where depth is
    stats = DatasetStats(count=2, resolutions=[[H, W]], depth_min_mm=400.0, depth_max_mm=2200.0,
                         depth_mean_mm=1300.0, depth_std_mm=800.0, valid_fraction_mean=0.9,
                         valid_pixels=200, histogram_counts=counts)
    ax = plot_depth_histogram(stats).axes[0]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata())]
    assert solid == []
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "mean 1300 mm (between clusters, no line)" in legend
    one_cluster = plot_depth_histogram(_stats(3)).axes[0]
    solid = [line.get_label() for line in one_cluster.get_lines() if line.get_linestyle() == "-"]
    assert solid == ["mean 480 mm"]


def test_metrics_chart_says_why_a_constant_can_score_on_delta():
    from depth_lora.viz import plot_metric_bars

    rows = {"fine_tuned": {"rmse_mm": 300.0, "mae_mm": 200.0, "delta1": 0.27},
            "constant": {"rmse_mm": 900.0, "mae_mm": 800.0, "delta1": 0.32}}
    assert "a constant scores as well here" in plot_metric_bars(rows).axes[1].get_title()
    rows["fine_tuned"]["delta1"] = 0.33  # about the same: the same caution
    assert "a constant scores as well here" in plot_metric_bars(rows).axes[1].get_title()
    rows["fine_tuned"]["delta1"] = 0.8
    assert plot_metric_bars(rows).axes[1].get_title() == "delta < 1.25 (higher is better)"


def test_the_gallery_draws_its_captures_across_sessions():
    from depth_lora.data.analysis import gallery_keys

    keys = [f"2026-01-0{day}_10-0{minute}-00_Zivid_acquisition" for day in (1, 2, 3) for minute in range(4)]
    chosen = gallery_keys(keys, 4)
    assert len(chosen) == 4 and len({key[:10] for key in chosen[:3]}) == 3  # one of each session first
    assert gallery_keys(keys[:2], 4) == sorted(keys[:2])
