"""What the model sees: input size, hole-safe label resizing, label schemes, items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depth_lora.data.captures import Capture
from depth_lora.data.dataset import (
    DepthDataset,
    LabelScheme,
    default_image_size,
    prepare_capture,
    processor_size_hw,
    resize_depth,
    resize_rgb,
    rgb_to_pixel_values,
)
from depth_lora.errors import ConfigError


def test_input_size_follows_the_checkpoints_processor():
    assert processor_size_hw(1200, 1944) == (518, 840)  # Zivid 2, as the processor resizes it
    assert processor_size_hw(480, 640) == (518, 686)
    assert default_image_size([(480, 640), (1200, 1944), (1200, 1944)]) == (518, 840)


@pytest.mark.parametrize("size_hw", [(1200, 1944), (480, 640), (300, 486), (1000, 600), (518, 840)])
def test_preprocessing_equals_the_checkpoints_own_image_processor(size_hw):
    # The DPTImageProcessor of Depth-Anything-V2-Small-hf's preprocessor_config.json, built offline:
    # the same input size and the same pixel values, for wide, tall and already-sized images.
    from depth_lora.bench.reference_pipeline import checkpoint_processor

    rgb = np.random.default_rng(sum(size_hw)).integers(0, 256, (*size_hw, 3), dtype=np.uint8)
    expected = checkpoint_processor()(images=rgb, return_tensors="pt")["pixel_values"]
    ours = rgb_to_pixel_values(resize_rgb(rgb, processor_size_hw(*size_hw)))
    assert tuple(expected.shape[-2:]) == processor_size_hw(*size_hw)
    torch.testing.assert_close(ours.reshape(expected.shape), expected, atol=1e-6, rtol=0)


def test_resized_labels_average_valid_pixels_only_and_drop_mostly_hole_pixels():
    nan = np.nan
    depth = np.array(
        [
            [1000, 1002, 500, nan],
            [1004, 1006, nan, nan],
            [2000, nan, 7, 7],
            [nan, 2003, 7, 7],
        ],
        dtype=np.float32,
    )
    out, valid = resize_depth(depth, (2, 2))
    # top-left: all valid; top-right: 1 of 4 valid (< half): dropped; bottom-left: 2 of 4 valid:
    # the mean of the two measured depths, not pulled towards 0 by the holes.
    np.testing.assert_array_equal(valid, [[True, False], [True, True]])
    np.testing.assert_allclose(out[valid], [1003.0, 2001.5, 7.0])
    assert np.isnan(out[0, 1])


def test_label_schemes_round_trip_and_reject_bad_ranges():
    z = np.array([400.0, 1000.0, 4000.0])
    for kind in ("minmax", "inverse"):
        scheme = LabelScheme(kind, 400.0, 4000.0)
        np.testing.assert_allclose(scheme.decode(scheme.encode(z)), z, rtol=1e-6)
    np.testing.assert_allclose(LabelScheme("minmax", 400.0, 4000.0).encode(z), [0, 600 / 3600, 1])
    with pytest.raises(ConfigError):
        LabelScheme("minmax", 500.0, 400.0)


def test_items_have_one_layout_and_zero_labels_on_holes():
    rng = np.random.default_rng(0)
    captures = []
    for h, w in [(120, 194), (60, 80)]:  # mixed resolutions, one model size
        depth = rng.uniform(500, 900, (h, w)).astype(np.float32)
        depth[: h // 3] = np.nan
        cap = Capture(f"c{h}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), depth)
        captures.append(prepare_capture(cap, (56, 84)))
    dataset = DepthDataset(captures, LabelScheme("minmax", 500.0, 900.0))
    for item, cap in zip(dataset, captures, strict=True):
        assert set(item) == {"pixel_values", "labels", "valid_mask"}
        # uint8 as prepared: normalisation and augmentation run per batch on the device
        assert item["pixel_values"].shape == (3, 56, 84) and item["pixel_values"].dtype == torch.uint8
        assert np.array_equal(item["pixel_values"].permute(1, 2, 0).numpy(), cap.rgb)
        assert item["labels"].shape == (56, 84) and item["valid_mask"].dtype == torch.bool
        assert torch.isfinite(item["labels"]).all()
        assert (item["labels"][~item["valid_mask"]] == 0).all()
        assert 0.3 < item["valid_mask"].float().mean() < 0.75
        labels = item["labels"][item["valid_mask"]]
        assert labels.min() >= 0 and labels.max() <= 1
