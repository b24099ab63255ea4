"""The colorization fill on small arrays whose answer is known: depth follows the image's regions."""

from __future__ import annotations

import numpy as np
import pytest

from depth_lora.numeric.fill import harmonic_fill
from depth_lora.numeric.guided_fill import colorization_fill, neighbour_weights


def _two_surfaces(h: int = 40, w: int = 60):
    """A dark left surface at 1000 mm and a bright right one at 2000 mm, the image edge at column 30,
    some texture noise; a square hole straddling the edge."""
    rng = np.random.default_rng(0)
    image = np.where(np.arange(w) < 30, 40, 200)[None, :].repeat(h, 0).astype(np.float64)
    image = np.clip(image + rng.normal(0, 2, (h, w)), 0, 255).astype(np.uint8)
    depth = np.where(np.arange(w) < 30, 1000.0, 2000.0)[None, :].repeat(h, 0)
    hole = np.zeros((h, w), dtype=bool)
    hole[12:28, 20:40] = True
    return np.stack([image] * 3, axis=-1), depth, hole


def test_a_hole_across_an_image_edge_is_filled_from_each_side_not_blended():
    rgb, truth, hole = _two_surfaces()
    depth = np.where(hole, np.nan, truth)
    guided = colorization_fill(depth, rgb)
    blended = harmonic_fill(depth)
    guided_err = np.abs(guided - truth)[hole]
    assert np.sqrt(np.mean(guided_err**2)) < 30.0  # of a 1000 mm step
    assert np.sqrt(np.mean((blended - truth)[hole] ** 2)) > 5 * np.sqrt(np.mean(guided_err**2))


def test_a_hole_inside_one_uniform_region_takes_that_regions_depth_and_measured_pixels_stay_exact():
    rgb, truth, _ = _two_surfaces()
    hole = np.zeros(truth.shape, dtype=bool)
    hole[10:30, 2:20] = True  # inside the dark surface
    depth = np.where(hole, np.nan, truth)
    filled = colorization_fill(depth, rgb)
    np.testing.assert_allclose(filled[hole], 1000.0, atol=1e-3)
    np.testing.assert_array_equal(filled[~hole], depth[~hole].astype(np.float32))


def test_holes_at_the_image_border_are_filled_within_the_measured_depths_and_nothing_measured_stays_nan():
    rgb, truth, _ = _two_surfaces()
    depth = truth.copy()
    depth[0:3, 0:3] = np.nan  # reachable: touches measured pixels
    depth[20:23, 40:43] = np.nan
    everything = np.full_like(depth, np.nan)
    assert np.isnan(colorization_fill(everything, rgb)).all()
    filled = colorization_fill(depth, rgb)
    assert np.isfinite(filled).all() and filled.min() >= 999.0


def test_the_weights_of_each_pixel_sum_to_one_and_fall_across_an_edge():
    rgb, _, _ = _two_surfaces()
    weights = neighbour_weights(rgb[..., 0].astype(np.float64) / 255.0)
    np.testing.assert_allclose(np.sum(list(weights.values()), axis=0), 1.0, atol=1e-9)
    across, along = weights[0, 1][20, 29], weights[1, 0][20, 29]  # right: the bright side; down: same
    assert across < 0.01 * along


def test_an_image_of_another_size_is_refused():
    rgb, truth, hole = _two_surfaces()
    with pytest.raises(ValueError, match="differ in size"):
        colorization_fill(np.where(hole, np.nan, truth), rgb[:-1])
