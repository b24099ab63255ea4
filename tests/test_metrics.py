"""Depth metrics against values worked out by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depth_lora.numeric.metrics import PooledDepthMetrics, depth_metrics, mean_over_captures

NAN = float("nan")

# Six valid pixels plus one masked out and one NaN target (both must be ignored).
PRED = np.array([[110.0, 190.0, 300.0, 999.0], [404.0, 150.0, 100.0, 500.0]])
TARGET = np.array([[100.0, 200.0, 300.0, 999.0], [400.0, 100.0, 190.0, NAN]])
MASK = np.array([[True, True, True, False], [True, True, True, True]])
P = [110.0, 190.0, 300.0, 404.0, 150.0, 100.0]
T = [100.0, 200.0, 300.0, 400.0, 100.0, 190.0]


def test_every_metric_matches_hand_computed_values():
    m = depth_metrics(PRED, TARGET, MASK)
    # Errors p - t: 10, -10, 0, 4, 50, -90.
    assert m["valid_pixels"] == 6
    assert m["abs_rel"] == pytest.approx(
        (10 / 100 + 10 / 200 + 0 + 4 / 400 + 50 / 100 + 90 / 190) / 6
    )
    assert m["sq_rel"] == pytest.approx(
        (100 / 100 + 100 / 200 + 0 + 16 / 400 + 2500 / 100 + 8100 / 190) / 6
    )
    assert m["rmse_mm"] == pytest.approx(math.sqrt((100 + 100 + 0 + 16 + 2500 + 8100) / 6))
    assert m["mae_mm"] == pytest.approx((10 + 10 + 0 + 4 + 50 + 90) / 6)
    d = [math.log(1.1), math.log(0.95), 0.0, math.log(1.01), math.log(1.5), math.log(100 / 190)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in d) / 6))
    assert m["log10"] == pytest.approx(sum(abs(x) for x in d) / math.log(10) / 6)
    mean_d = sum(d) / 6
    assert m["silog"] == pytest.approx(math.sqrt(sum(x * x for x in d) / 6 - mean_d**2) * 100)
    # max(p/t, t/p): 1.1, 1.053, 1, 1.01, 1.5, 1.9 against 1.25, 1.5625, 1.953125.
    assert m["delta1"] == pytest.approx(4 / 6)
    assert m["delta2"] == pytest.approx(5 / 6)
    assert m["delta3"] == pytest.approx(6 / 6)
    # |p - t| <= tol, boundary included: 5 mm -> {0, 4}; 10 mm -> {10, 10, 0, 4}.
    assert m["within_5mm"] == pytest.approx(2 / 6)
    assert m["within_10mm"] == pytest.approx(4 / 6)


def test_tolerance_key_is_named_after_the_tolerance():
    m = depth_metrics(np.array([102.0, 110.0]), np.array([100.0, 100.0]), tolerances_mm=(2.5,))
    assert m["within_2.5mm"] == pytest.approx(0.5)
    assert "within_5mm" not in m


def test_nan_negative_and_zero_targets_and_nan_predictions_are_not_pixels():
    pred = np.array([100.0, NAN, 100.0, 100.0, 120.0])
    target = np.array([NAN, 100.0, 0.0, -5.0, 100.0])
    m = depth_metrics(pred, target)
    assert m["valid_pixels"] == 1
    assert m["mae_mm"] == pytest.approx(20.0)


def test_zero_prediction_gives_finite_log_metrics():
    m = depth_metrics(np.array([0.0, 100.0]), np.array([100.0, 100.0]))
    assert all(math.isfinite(v) for v in m.values())
    assert m["delta1"] == pytest.approx(0.5)


def test_capture_without_valid_pixel_is_none_and_skipped_in_the_mean():
    empty = depth_metrics(np.ones((2, 2)), np.full((2, 2), NAN))
    assert empty is None
    assert depth_metrics(np.ones(2), np.ones(2), np.zeros(2, dtype=bool)) is None
    full = depth_metrics(PRED, TARGET, MASK)
    summary = mean_over_captures([full, empty])
    assert summary["captures"] == 1
    assert summary["captures_skipped"] == 1
    assert summary["rmse_mm"] == pytest.approx(full["rmse_mm"])
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.values())
    assert mean_over_captures([None, None]) == {"captures": 0, "captures_skipped": 2}


def test_pooled_and_per_capture_means_differ_when_capture_sizes_differ():
    # Capture A: one pixel 10 mm off. Capture B: four exact pixels.
    a = (np.array([110.0]), np.array([100.0]))
    b = (np.full(4, 200.0), np.full(4, 200.0))
    per_capture = mean_over_captures([depth_metrics(*a), depth_metrics(*b)])
    pooled = PooledDepthMetrics()
    pooled.update(*a)
    pooled.update(*b)
    result = pooled.compute()
    # Mean of means: MAE (10 + 0) / 2 = 5, RMSE (10 + 0) / 2 = 5.
    assert per_capture["mae_mm"] == pytest.approx(5.0)
    assert per_capture["rmse_mm"] == pytest.approx(5.0)
    # Pooled over 5 pixels: MAE 10 / 5 = 2, RMSE sqrt(100 / 5).
    assert result["mae_mm"] == pytest.approx(2.0)
    assert result["rmse_mm"] == pytest.approx(math.sqrt(20.0))
    assert result["within_5mm"] == pytest.approx(4 / 5)
    assert result["valid_pixels"] == 5
    assert per_capture["valid_pixels"] == 5  # a total, not a mean
    assert (result["captures"], result["captures_skipped"]) == (2, 0)


def test_pooled_over_one_capture_equals_depth_metrics():
    pooled = PooledDepthMetrics(tolerances_mm=(5.0, 10.0))
    pooled.update(PRED, TARGET, MASK)
    pooled.update(np.ones(3), np.full(3, NAN))  # counted as skipped
    result = pooled.compute()
    single = depth_metrics(PRED, TARGET, MASK)
    for key, value in single.items():
        assert result[key] == pytest.approx(value), key
    assert (result["captures"], result["captures_skipped"]) == (1, 1)


def test_pooled_silog_uses_all_pixels_together():
    pooled = PooledDepthMetrics()
    pooled.update(np.array([P[0]]), np.array([T[0]]))
    pooled.update(np.array(P[1:]), np.array(T[1:]))
    d = [math.log(p / t) for p, t in zip(P, T, strict=True)]
    expected = math.sqrt(sum(x * x for x in d) / 6 - (sum(d) / 6) ** 2) * 100
    assert pooled.compute()["silog"] == pytest.approx(expected)


def test_pooled_without_any_valid_pixel_is_none_and_reset_forgets():
    pooled = PooledDepthMetrics()
    assert pooled.compute() is None
    pooled.update(PRED, TARGET, MASK)
    pooled.reset()
    assert pooled.compute() is None
    assert pooled.captures == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        depth_metrics(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="valid_mask"):
        depth_metrics(np.ones((2, 2)), np.ones((2, 2)), np.ones(4, dtype=bool))


def test_bootstrap_interval_holds_the_mean_is_seeded_and_widens_with_spread():
    from depth_lora.numeric.metrics import bootstrap_ci95

    rng = np.random.default_rng(0)
    narrow, wide = rng.normal(300, 5, 20), rng.normal(300, 50, 20)
    lo, hi = bootstrap_ci95(narrow)
    assert lo < narrow.mean() < hi and bootstrap_ci95(narrow) == [lo, hi]
    wide_lo, wide_hi = bootstrap_ci95(wide)
    assert wide_hi - wide_lo > 5 * (hi - lo)
    assert bootstrap_ci95([7.0]) == [7.0, 7.0]
    assert all(np.isnan(bootstrap_ci95([])))


def test_one_readable_log_line_per_evaluation_and_per_loss_log():
    from depth_lora.training.trainer import format_log_line

    line = format_log_line({"eval_rmse_mm": 229.14, "eval_mae_mm": 206.1, "eval_abs_rel": 0.1834,
                            "eval_delta1": 0.634, "eval_loss": 0.05}, 50, 150)
    assert line == "step  50/150  val RMSE 229.1 mm  MAE 206.1 mm  AbsRel 0.183  d<1.25 0.63"
    line = format_log_line({"loss": 0.02661, "learning_rate": 6e-4, "grad_norm": 0.2871}, 10, 150)
    assert line == "step  10/150  loss 0.02661  lr 6.0e-04  grad norm 0.287"
    assert format_log_line({"total_flos": 1.0}, 10, 150) is None
