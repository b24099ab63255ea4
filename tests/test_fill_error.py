"""The error bar of a fill: learned from hidden pixels, monotone, calibrated where it was learned."""

from __future__ import annotations

import numpy as np
import pytest

from depth_lora.numeric.fill_error import Z_90, FillErrorModel, coverage, fill_features


def _calibration(rng: np.random.Generator, n: int = 20_000):
    """Pixels whose error grows with both features: |N(0, 1 + 50 d + 0.5 g)|."""
    distance = rng.uniform(0, 0.05, n)
    disagreement = rng.exponential(10.0, n)
    error = np.abs(rng.normal(0, 1.0 + 50 * distance + 0.5 * disagreement))
    return distance, disagreement, error


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_90_percent_interval_covers_about_90_percent_of_fresh_pixels_and_grows_with_both_features(seed):
    rng = np.random.default_rng(seed)
    model = FillErrorModel.fit(*_calibration(rng), fill="shadow_aware", captures=3)
    table = np.asarray(model.sigma_mm)
    assert (np.diff(table, axis=0) >= 0).all() and (np.diff(table, axis=1) >= 0).all()  # monotone
    distance, disagreement, error = _calibration(rng)  # fresh pixels of the same kind
    covered, width = coverage(error, model.sigma(distance, disagreement))
    assert 0.85 <= covered <= 0.95
    assert width == pytest.approx(float(np.median(2 * Z_90 * model.sigma(distance, disagreement))))
    near_flat, far_steep = model.sigma(np.array([0.001, 0.049]), np.array([0.5, 40.0]))
    assert far_steep > 3 * near_flat


def test_features_are_zero_on_measured_pixels_and_grow_into_a_hole():
    depth = np.full((20, 40), 1000.0)
    depth[:, 20:] = 1200.0
    holes = depth.copy()
    holes[5:15, 10:30] = np.nan
    filled = np.where(np.isnan(holes), 1100.0, holes)  # halfway: disagrees with the nearest by 100 mm
    distance, disagreement = fill_features(holes, filled)
    assert distance[0, 0] == 0 and disagreement[0, 0] == 0
    assert distance[10, 20] > distance[6, 20] > 0
    np.testing.assert_allclose(disagreement[5:15, 10:30], 100.0)
    model = FillErrorModel.fit(*_calibration(np.random.default_rng(0)), fill="shadow_aware", captures=1)
    sigma = model.sigma_map(holes, filled)
    assert np.isnan(sigma[0, 0]) and np.isfinite(sigma[5:15, 10:30]).all()


def test_a_model_of_another_format_or_too_few_pixels_is_refused():
    model = FillErrorModel.fit(*_calibration(np.random.default_rng(0)), fill="shadow_aware", captures=1)
    assert FillErrorModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="format"):
        FillErrorModel.from_dict({**model.to_dict(), "format_version": 99})
    with pytest.raises(ValueError, match="calibration pixels"):
        FillErrorModel.fit(np.zeros(10), np.zeros(10), np.zeros(10), fill="shadow_aware", captures=1)


def test_a_perfect_fill_still_gets_the_sigma_floor_and_empty_bins_take_the_cautious_neighbour():
    from depth_lora.numeric.fill_error import SIGMA_FLOOR_MM, _fill_gaps

    distance, disagreement, _ = _calibration(np.random.default_rng(0))
    model = FillErrorModel.fit(distance, disagreement, np.zeros_like(distance), fill="x", captures=1)
    assert np.all(np.asarray(model.sigma_mm) == SIGMA_FLOOR_MM)
    row = np.array([[1.0, np.nan, np.nan, 9.0]])
    np.testing.assert_array_equal(_fill_gaps(row, overall=5.0), [[1.0, 9.0, 9.0, 9.0]])
