"""The colorization fill on small arrays whose answer is known: depth follows the image's regions."""

from __future__ import annotations

import numpy as np
import pytest

from depth_lora.numeric.fill import harmonic_fill
from depth_lora.numeric.guided_fill import colorization_fill, image_pair_weights, near_side, shadow_aware_fill


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


def test_pair_weights_fall_across_an_image_edge_and_stay_near_one_inside_a_region():
    rgb, _, _ = _two_surfaces()
    horizontal, vertical = image_pair_weights(rgb)(rgb.shape[:2])
    assert horizontal.shape == (40, 59) and vertical.shape == (39, 60)
    across, along = horizontal[20, 29], vertical[20, 29]  # columns 29 | 30: the edge; rows 20 | 21: not
    assert across < 0.01 * along and along > 0.1
    smaller = image_pair_weights(rgb)((20, 30))  # the coarse grid of a coarse-to-fine solve
    assert smaller[0].shape == (20, 29) and smaller[0][10, 14] < 0.01 * smaller[1][10, 14]


def test_an_image_of_another_size_is_refused():
    rgb, truth, hole = _two_surfaces()
    with pytest.raises(ValueError, match="differ in size"):
        colorization_fill(np.where(hole, np.nan, truth), rgb[:-1])


def _shadow_behind_a_step(h: int = 40, w: int = 80):
    """A raised part (600 mm) on the left, the table (1000 mm) on the right, one uniform grey image
    (the image cannot tell them apart), and a projector's shadow: a hole 8 px wide on the table just
    beside the part's edge at column 40."""
    image = np.full((h, w, 3), 120, dtype=np.uint8)
    truth = np.where(np.arange(w) < 40, 600.0, 1000.0)[None, :].repeat(h, 0)
    hole = np.zeros((h, w), dtype=bool)
    hole[5:35, 40:48] = True
    return image, truth, hole


def test_a_shadow_behind_a_step_is_filled_from_its_far_side_where_other_fills_blend():
    image, truth, hole = _shadow_behind_a_step()
    depth = np.where(hole, np.nan, truth)
    shadow = shadow_aware_fill(depth, image, radius_fraction=0.15)  # 13 px: wider than the shadow
    np.testing.assert_allclose(shadow[hole], 1000.0, atol=1e-3)  # the table's depth, nothing of the part's
    for other in (colorization_fill(depth, image), harmonic_fill(depth)):
        assert np.sqrt(np.mean((other - truth)[hole] ** 2)) > 100.0  # halfway between part and table
    np.testing.assert_array_equal(shadow[~hole], depth[~hole].astype(np.float32))


def test_near_side_marks_the_part_beside_the_shadow_not_a_tilted_surface():
    image, truth, hole = _shadow_behind_a_step()
    walls = near_side(np.where(hole, np.nan, truth), radius_fraction=0.15)
    assert walls[5:35, 39].all() and walls.sum() == 30  # the part's pixels along the shadow, only those
    ramp = np.linspace(900.0, 1100.0, 80)[None, :].repeat(40, 0)  # a table tilted 2.5 mm a pixel
    assert not near_side(np.where(hole, np.nan, ramp), radius_fraction=0.15).any()


def test_a_hole_with_near_sides_all_round_is_still_filled_from_them():
    image = np.full((30, 30, 3), 100, dtype=np.uint8)
    depth = np.full((30, 30), 1000.0)
    depth[10:20, 10:20] = 500.0  # a raised block, a shadow ring all round it, and a hole in its top
    depth[8:22, 8:22][np.pad(np.zeros((10, 10), bool), 2, constant_values=True)] = np.nan
    depth[14:16, 14:16] = np.nan
    walls = near_side(depth, radius_fraction=0.15)
    assert walls[10, 12] and walls[13, 14]  # the block's edge and the top hole's border: all near sides
    filled = shadow_aware_fill(depth, image, radius_fraction=0.15)
    np.testing.assert_allclose(filled[14:16, 14:16], 500.0, atol=1e-3)  # from the walls, all it has
    np.testing.assert_allclose(filled[8:10, 8:22], 1000.0, atol=1e-3)  # the ring: from the far side


def test_a_large_capture_is_filled_at_a_fraction_of_its_size_and_its_measured_pixels_stay_exact():
    rgb, truth, hole = _two_surfaces(80, 120)
    depth = np.where(hole, np.nan, truth)
    for fill in (colorization_fill, shadow_aware_fill):
        full, coarse = fill(depth, rgb, max_pixels=None), fill(depth, rgb, max_pixels=80 * 120 // 4)
        assert not np.array_equal(full, coarse)  # the smaller grid was used
        np.testing.assert_array_equal(coarse[~hole], depth[~hole].astype(np.float32))
        assert np.isfinite(coarse).all()
        assert coarse[hole].min() >= 1000.0 - 1e-3 and coarse[hole].max() <= 2000.0 + 1e-3


def test_sparse_measurements_are_still_filled_everywhere_at_a_fraction_of_the_size():
    rng = np.random.default_rng(0)
    depth = np.full((60, 90), np.nan)
    depth[::3, ::3] = 1000.0 + rng.normal(0, 5, (20, 30))  # every third pixel: no 2x2 cell half measured
    filled = colorization_fill(depth, np.full((60, 90, 3), 100, np.uint8), max_pixels=60 * 90 // 4)
    assert np.isfinite(filled).all() and abs(float(np.mean(filled)) - 1000.0) < 5.0
    with pytest.raises(ValueError, match="max_pixels"):
        colorization_fill(depth, np.full((60, 90, 3), 100, np.uint8), max_pixels=-1)


def test_an_image_of_any_integer_or_float_range_gives_the_same_weights():
    rgb, _, _ = _two_surfaces()
    as_uint8 = image_pair_weights(rgb)(rgb.shape[:2])[0]
    as_float = image_pair_weights(rgb.astype(np.float32) / 255.0)(rgb.shape[:2])[0]
    as_uint16 = image_pair_weights(rgb.astype(np.uint16) * 257)(rgb.shape[:2])[0]
    np.testing.assert_allclose(as_float, as_uint8, rtol=1e-4)
    np.testing.assert_allclose(as_uint16, as_uint8, rtol=1e-4)


def test_the_same_holes_scored_twice_reuse_their_fills_read_only_and_the_memory_stays_bounded(monkeypatch):
    from depth_lora.evaluation import holes

    image, depth, hole = _two_surfaces()
    with_holes = np.where(hole, np.nan, depth)
    first = holes.classical_fills(with_holes, image)
    again = holes.classical_fills(with_holes.copy(), image.copy())  # equal arrays, not the same objects
    assert set(first) == {"default", "colorization", "shadow_aware", "nearest", "harmonic", "telea"}
    assert all(again[name] is first[name] for name in first)
    with pytest.raises(ValueError):  # nobody can change what a later scoring reads
        first["harmonic"][0, 0] = 0.0
    other = holes.classical_fills(np.where(hole, np.nan, depth + 1.0), image)  # other depth: computed anew
    assert np.allclose(other["harmonic"], first["harmonic"] + 1.0, atol=1e-3)
    monkeypatch.setattr(holes, "FILL_MEMO_BYTES", 1)  # below one entry: only the latest is kept
    holes.classical_fills(with_holes, image)
    assert len(holes._FILL_MEMO) == 1
