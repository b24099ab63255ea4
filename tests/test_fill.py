"""Hole filling without a model: the robust fit, the harmonic solver, the anchoring, the hole kinds."""

from __future__ import annotations

import numpy as np
import pytest

from depth_lora.data.dataset import LabelScheme
from depth_lora.errors import DataError
from depth_lora.inference.complete import (
    anchor_prediction,
    check_measured,
    complete_raw,
    depth_bounds,
    describe_completion,
    fit_prediction_mm,
)
from depth_lora.numeric import fill
from depth_lora.numeric.hole_masks import hidden_masks, hide_blobs, hide_edge_bands, hide_like


def interior_holes(shape, rng, count=6, radius=6):
    """(H, W) bool: round holes well inside the image (no hole touches its border)."""
    h, w = shape
    v, u = np.mgrid[0:h, 0:w]
    holes = np.zeros(shape, dtype=bool)
    for _ in range(count):
        cy, cx = rng.integers(radius + 2, h - radius - 2), rng.integers(radius + 2, w - radius - 2)
        holes |= (v - cy) ** 2 + (u - cx) ** 2 <= radius**2
    return holes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_fit_recovers_a_known_scale_and_shift_despite_outliers(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 1.0, 5000)
    y = 2.5 * x - 0.7 + rng.normal(0, 1e-3, x.size)
    outliers = rng.random(x.size) < 0.2  # flying pixels: 20 % of the samples, far off
    y[outliers] += rng.uniform(0.5, 3.0, outliers.sum())
    scale, shift, inliers = fill.robust_fit_affine(x, y)
    assert scale == pytest.approx(2.5, abs=5e-3) and shift == pytest.approx(-0.7, abs=5e-3)
    assert not inliers[outliers].any() and inliers[~outliers].mean() > 0.95
    _, plain_shift = fill.fit_affine(x, y)
    assert abs(plain_shift + 0.7) > 0.2  # the plain least-squares fit is pulled away


def test_harmonic_fill_reproduces_a_linear_ramp_and_keeps_known_pixels():
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:60, 0:90]
    ramp = 500.0 + 2.0 * u - 1.5 * v  # linear: harmonic, so the fill must be exact
    holes = interior_holes(ramp.shape, rng)
    filled = fill.harmonic_fill(np.where(holes, np.nan, ramp))
    np.testing.assert_allclose(filled[holes], ramp[holes], atol=1e-3)
    assert np.array_equal(filled[~holes], ramp[~holes].astype(np.float32))


def test_coarse_to_fine_solve_agrees_with_the_direct_solve(monkeypatch):
    rng = np.random.default_rng(1)
    v, u = np.mgrid[0:120, 0:160]
    field = 800 + 40 * np.sin(u / 25.0) * np.cos(v / 30.0) + rng.normal(0, 1, u.shape)
    values = np.where(rng.random(field.shape) < 0.35, np.nan, field)
    values[30:70, 40:100] = np.nan  # and one large hole
    direct = fill.harmonic_fill(values)
    monkeypatch.setattr(fill, "DIRECT_SOLVE_MAX_UNKNOWNS", 500)  # forces two coarser levels
    cascade = fill.harmonic_fill(values)
    holes = np.isnan(values)
    assert np.abs(cascade - direct)[holes].max() < 0.5  # mm, on a field spanning ~80 mm


def test_a_refinement_that_does_not_converge_says_so(monkeypatch, caplog):
    v, u = np.mgrid[0:60, 0:80]
    values = np.where((u + v) % 3 == 0, 800.0 + u, np.nan)
    monkeypatch.setattr(fill, "DIRECT_SOLVE_MAX_UNKNOWNS", 100)
    monkeypatch.setattr(fill, "REFINE_ITERATIONS", 1)  # far too few to converge
    with caplog.at_level("INFO", logger="depth_lora.numeric.fill"):
        filled = fill.harmonic_fill(values)
    assert np.isfinite(filled).all()
    assert "CG stopped after 1 iterations" in caplog.text


def test_a_hole_with_no_measured_pixel_stays_empty():
    values = np.full((20, 20), np.nan)
    values[:, :5] = 700.0
    values[:, 6] = np.nan
    known = np.isfinite(values)
    assert not fill.unreachable_holes(known).any()
    assert np.isfinite(fill.harmonic_fill(values)).all()
    assert np.isnan(fill.harmonic_fill(np.full((20, 20), np.nan))).all()


def test_anchoring_is_exact_when_the_prediction_is_off_by_a_smooth_field_and_beats_the_global_fit():
    rng = np.random.default_rng(2)
    v, u = np.mgrid[0:80, 0:120]
    truth = 600 + 30 * ((u // 20) % 2) + 0.3 * v  # steps (parts) on a tilted plane
    prediction = truth - (25 + 0.4 * u - 0.2 * v)  # right shape, a smooth (linear) error
    holes = interior_holes(truth.shape, rng, count=8, radius=7)
    depth = np.where(holes, np.nan, truth)
    anchored = anchor_prediction(prediction.astype(np.float32), depth)
    np.testing.assert_allclose(anchored[holes], truth[holes], atol=0.05)
    assert np.array_equal(anchored[~holes], depth[~holes].astype(np.float32))
    globally = np.where(holes, prediction + np.nanmean(depth - prediction), depth)
    assert np.abs(globally - truth)[holes].mean() > 5 * np.abs(anchored - truth)[holes].mean() + 1


def test_completion_returns_measured_pixels_unchanged_and_fills_every_hole():
    rng = np.random.default_rng(3)
    v, u = np.mgrid[0:50, 0:70]
    truth = (700 + 0.5 * u + 20 * np.sin(v / 6.0)).astype(np.float32)
    depth = np.where(rng.random(truth.shape) < 0.3, np.nan, truth)
    raw = 1.0 / truth + rng.normal(0, 1e-6, truth.shape)  # disparity-like, for labels None
    result = complete_raw(raw, depth, None)
    measured = np.isfinite(depth)
    assert np.array_equal(result.depth_mm[measured], depth[measured])
    assert np.array_equal(result.filled, ~measured) and np.isfinite(result.depth_mm).all()
    error = np.abs(result.depth_mm - truth)[~measured]  # the raw prediction has ~0.5 mm of noise
    assert error.mean() < 1.0 and error.max() < 5.0


def wide_range_capture_with_a_misleading_prediction():
    """A 600-9,900 mm scene (a near table, a far wall) with a large hole over the far side, and a
    disparity-like prediction right on the measured pixels that, inside the hole, keeps falling
    below anything the fit saw: an inverse-depth fit extrapolated there crosses zero."""
    v, u = np.mgrid[0:60, 0:90]
    truth = (600 + 9300 * (u / 89.0) ** 2).astype(np.float32)
    hole = (u > 60) & (v > 10) & (v < 50)
    depth = np.where(hole, np.nan, truth)
    raw = 1.0 / truth
    raw[hole] -= 3e-4 * (u[hole] - 60) / 29.0  # below the measured minimum disparity (1 / 9,900 mm)
    return truth, depth, raw.astype(np.float32), hole


def test_a_completion_never_returns_an_impossible_depth_and_says_where_it_fell_back():
    truth, depth, raw, hole = wide_range_capture_with_a_misleading_prediction()
    unbounded = anchor_prediction(fit_prediction_mm(raw, depth, None)[0], depth)
    # the failure, reproduced without the bound
    assert (unbounded[hole] <= 0).any() or (unbounded[hole] > 2 * truth.max()).any()
    result = complete_raw(raw, depth, None)
    measured = np.isfinite(depth)
    lo, hi = depth_bounds(depth, measured)
    assert np.array_equal(result.depth_mm[measured], depth[measured])
    assert np.isfinite(result.depth_mm).all()
    assert (result.depth_mm >= lo).all() and (result.depth_mm <= hi).all()
    assert lo > 0 and result.fallback.any() and not (result.fallback & measured).any()
    # where it fell back the fill is the harmonic one: within what the camera measured around it
    assert result.depth_mm[result.fallback].max() <= np.nanmax(depth) + 1e-3
    line = describe_completion("cap", measured, result)
    assert f"{int(result.fallback.sum()):,} filled pixels" in line and "harmonic fill" in line
    # a prediction that stays within range is left alone
    assert not complete_raw(1.0 / truth, depth, None).fallback.any()


def test_the_global_fit_happens_in_the_model_label_space():
    labels = LabelScheme("inverse", 400.0, 900.0)
    truth = np.linspace(400, 900, 400, dtype=np.float32).reshape(20, 20)
    raw = 3.0 * labels.encode(truth) + 0.2  # right inverse-depth shape, wrong scale and offset
    pred, inliers = fit_prediction_mm(raw, truth, labels)
    np.testing.assert_allclose(pred, truth, rtol=1e-4)
    assert inliers == 1.0


@pytest.mark.parametrize("depth, message", [
    (np.full((30, 30), np.nan), "only 0 measured pixel"),
    (np.where(np.eye(30, dtype=bool), 500.0, np.nan), "only 30 measured pixel"),
    (np.ones((30, 30, 3)), r"expected an \(H, W\) depth map"),
])
def test_too_little_measured_depth_is_a_one_line_error_naming_the_file(depth, message):
    with pytest.raises(DataError, match=message) as info:
        check_measured(depth, "cap_rawDepth.npy")
    assert "cap_rawDepth.npy" in str(info.value) and "\n" not in str(info.value)


def test_hole_kinds_hide_only_measured_pixels():
    rng = np.random.default_rng(4)
    v, u = np.mgrid[0:120, 0:200]
    depth = np.full(u.shape, 900.0)
    depth[40:80, 60:120] = 850.0  # a raised part, 50 mm nearer
    depth[rng.random(u.shape) < 0.1] = np.nan
    other = np.where(rng.random(u.shape) < 0.3, np.nan, 1.0)
    masks = hidden_masks(depth, other, seed=0)
    measured = np.isfinite(depth)
    for kind, hidden in masks.items():
        assert hidden.any(), kind
        assert not (hidden & ~measured).any(), kind
    assert np.array_equal(masks["other_capture"], hide_like(measured, np.isnan(other)))
    assert 0.07 < hide_blobs(measured, np.random.default_rng(0)).sum() / measured.sum() < 0.3
    # projector-shadow-like bands: on the far (900 mm) side beside the part, never on the part
    bands = hide_edge_bands(depth)
    assert bands.any() and (depth[bands] == 900.0).all()
    assert not bands[50, 5] and not bands[60, 90]  # far from the edge; on the part
    # a tilted table is not an edge, nor is a far floor's noise (bands 7 px wide at this size)
    big_rows = np.arange(600, dtype=float)[:, None] + np.zeros((1, 970))
    assert not hide_edge_bands(1500.0 + 1.5 * big_rows).any()  # 1.5 mm more a row: a slope
    noisy_floor = 3000.0 + np.random.default_rng(1).normal(0, 3.6, big_rows.shape)  # a Zivid's noise at 3 m
    assert hide_edge_bands(noisy_floor).mean() < 0.01
    rows = np.arange(u.shape[0], dtype=float)[:, None]
    tilted_bands = hide_edge_bands(np.where(np.isfinite(depth), depth + 0.6 * rows, np.nan))
    assert tilted_bands.any() and not tilted_bands[50, 5] and not tilted_bands[60, 90]
    # a camera drops the mixed pixels beside a big jump: a gap of up to 3 px is still an edge
    step = np.full((300, 500), 1000.0)
    step[:, :250] = 900.0
    step[:, 250:252] = np.nan
    gap_bands = hide_edge_bands(step)
    assert gap_bands.any() and not gap_bands[:, :252].any() and (step[gap_bands] == 1000.0).all()
    step[:, 250:256] = np.nan  # 6 px apart: two surfaces, no edge between them is known
    assert not hide_edge_bands(step).any()
    # border: a frame of ~2 % of the diagonal (5 px here) on all four sides, nothing inside
    frame = masks["border"]
    assert frame[measured[:, 0], 0].all() and frame[measured[:, -1], -1].all()
    assert frame[0, measured[0]].all() and frame[-1, measured[-1]].all()
    assert not frame[5:-5, 5:-5].any() and frame[:, :5][measured[:, :5]].all()


@pytest.mark.parametrize("sigma", [3.0, 20.0, 150.0])
def test_the_local_fits_wide_gaussians_are_scipys_own_by_fft(sigma):
    from scipy import ndimage

    from depth_lora.inference.local_fit import _gaussian

    sums = np.random.default_rng(3).random((120, 200)) * 1e3  # block sums of a local fit
    expected = ndimage.gaussian_filter(sums, sigma, mode="constant")
    np.testing.assert_allclose(_gaussian(sums, sigma), expected, rtol=0, atol=1e-9 * expected.max())


def test_a_wall_is_not_read_so_a_hole_between_two_depths_takes_the_far_ones():
    values = np.array([[500.0, np.nan, np.nan, np.nan, 1000.0]] * 3)
    walls = np.zeros(values.shape, bool)
    walls[:, 0] = True  # the 500 mm column is measured but a wall: neither read nor filled
    filled = fill.harmonic_fill(values, np.isfinite(values) & ~walls, np.isnan(values))
    np.testing.assert_allclose(filled[:, 1:4], 1000.0)
    assert np.isnan(filled[:, 0]).all()  # a wall is not returned as filled
    np.testing.assert_allclose(fill.harmonic_fill(values)[:, 2], 750.0)  # without the wall: halfway
