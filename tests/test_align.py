"""Scale-and-shift alignment of a disparity prediction to depth in mm (MiDaS protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from depth_lora.errors import ConfigError
from depth_lora.numeric.align import align_disparity_to_depth_mm, fit_scale_shift


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    target_mm = rng.uniform(300.0, 2500.0, size=(30, 40))
    # A disparity-like prediction: an exact affine function of inverse depth.
    # s * pred + t = 1 / target with s = 1 / 3000 and t = 0.7 / 3000.
    pred = 3000.0 / target_mm - 0.7
    return pred, target_mm


def test_exact_affine_prediction_is_recovered(scene):
    pred, target_mm = scene
    scale, shift = fit_scale_shift(pred, target_mm)
    assert scale == pytest.approx(1 / 3000, rel=1e-9)
    assert shift == pytest.approx(0.7 / 3000, rel=1e-6)
    depth_mm = align_disparity_to_depth_mm(pred, target_mm)
    assert depth_mm.shape == target_mm.shape
    np.testing.assert_allclose(depth_mm, target_mm, rtol=1e-4)


def test_masked_and_nan_pixels_do_not_influence_the_fit(scene):
    pred, target_mm = scene
    pred, target_mm = pred.copy(), target_mm.copy()
    mask = np.ones(pred.shape, dtype=bool)
    mask[:5] = False
    pred[:5] = 1e6  # garbage where the mask is False
    target_mm[5, :] = np.nan  # missing depth
    pred[6, :3] = np.nan  # missing prediction
    scale, shift = fit_scale_shift(pred, target_mm, mask)
    assert scale == pytest.approx(1 / 3000, rel=1e-9)
    assert shift == pytest.approx(0.7 / 3000, rel=1e-6)
    depth_mm = align_disparity_to_depth_mm(pred, target_mm, mask)
    ok = np.isfinite(target_mm) & np.isfinite(pred) & mask
    np.testing.assert_allclose(depth_mm[ok], target_mm[ok], rtol=1e-4)
    assert np.isnan(depth_mm[6, :3]).all()  # no prediction, no depth


def test_aligned_depth_is_clamped_to_the_depth_range():
    target_mm = np.array([500.0, 1000.0, 2000.0])
    pred = 1.0 / target_mm  # s = 1, t = 0
    pred_far = np.append(pred, [1e-9, 1.0])  # 1e9 mm and 1 mm before clamping
    target_far = np.append(target_mm, [np.nan, np.nan])
    depth_mm = align_disparity_to_depth_mm(
        pred_far, target_far, min_depth_mm=200.0, max_depth_mm=5000.0
    )
    np.testing.assert_allclose(depth_mm, [500.0, 1000.0, 2000.0, 5000.0, 200.0], rtol=1e-9)


def test_constant_prediction_gives_mean_inverse_depth():
    target_mm = np.array([500.0, 1000.0])
    scale, shift = fit_scale_shift(np.ones(2), target_mm)
    assert scale == 0.0
    assert shift == pytest.approx((1 / 500 + 1 / 1000) / 2)


def test_fewer_than_two_valid_pixels_is_a_clear_error():
    with pytest.raises(ConfigError, match="1 valid pixel"):
        fit_scale_shift(np.ones(3), np.array([500.0, np.nan, 0.0]))
    with pytest.raises(ConfigError, match="0 valid pixel"):
        align_disparity_to_depth_mm(np.ones(2), np.ones(2) * 500.0, np.zeros(2, dtype=bool))


def test_bad_depth_range_is_rejected():
    with pytest.raises(ConfigError, match="min_depth_mm < max_depth_mm"):
        align_disparity_to_depth_mm(
            np.ones(2), np.array([1.0, 2.0]), min_depth_mm=10, max_depth_mm=5
        )


def test_align_to_recovers_an_affine_map_and_ignores_masked_and_nan_pixels():
    from depth_lora.numeric.align import align_to

    rng = np.random.default_rng(1)
    y = rng.uniform(0.1, 1.0, size=(20, 30))
    pred = 4.0 * y - 2.5
    valid = np.ones(y.shape, dtype=bool)
    valid[:5] = False
    pred[:5] = 1e6  # outliers under the mask must not move the fit
    y_nan = y.copy()
    y_nan[5, :3] = np.nan
    aligned = align_to(pred, y_nan, valid)
    np.testing.assert_allclose(aligned[5:], y[5:], rtol=1e-9)
    # Fewer than 2 usable pixels: the prediction comes back unchanged.
    np.testing.assert_array_equal(align_to(pred, y, np.zeros(y.shape, dtype=bool)), pred)


@pytest.mark.parametrize("kind", ["inverse", "minmax"])
def test_align_in_label_space_recovers_depth_from_a_relative_prediction(kind):
    from depth_lora.data.dataset import LabelScheme
    from depth_lora.numeric.align import align_in_label_space

    labels = LabelScheme(kind, 300.0, 2500.0)
    rng = np.random.default_rng(2)
    target_mm = rng.uniform(300.0, 2500.0, size=(30, 40))
    target_mm[0, :10] = np.nan  # holes are skipped
    relative = 0.37 * labels.encode(target_mm) + 11.0  # any scale and shift
    relative[0, :10] = 5.0
    depth_mm = align_in_label_space(relative, target_mm, None, labels)
    valid = np.isfinite(target_mm)
    np.testing.assert_allclose(depth_mm[valid], target_mm[valid], rtol=1e-6)
