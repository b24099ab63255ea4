"""Masked area resizing: the mean of the *known* values under each output pixel, so holes never
pull a value towards zero. The one copy for labels (data.dataset) and coarse fills (numeric.fill)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def masked_area_resize(
    values: np.ndarray, known: np.ndarray, size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(mean of the known values, share of the footprint known) on an (h, w) grid, both float32.

    Downsampling averages each output pixel's footprint (torch's area mode); upsampling copies
    the nearest pixel. The mean is NaN where nothing under the pixel is known.
    """
    known = np.asarray(known, dtype=bool)
    size_hw = tuple(int(s) for s in size_hw)
    up = size_hw[0] > known.shape[0] or size_hw[1] > known.shape[1]
    mode = "nearest" if up else "area"
    z = torch.from_numpy(np.where(known, values, 0).astype(np.float32))[None, None]
    m = torch.from_numpy(known.astype(np.float32))[None, None]
    total = F.interpolate(z * m, size=size_hw, mode=mode)[0, 0]
    coverage = F.interpolate(m, size=size_hw, mode=mode)[0, 0]
    mean = torch.where(coverage > 0, total / coverage.clamp(min=1e-6), torch.nan)
    return mean.numpy().astype(np.float32), coverage.numpy().astype(np.float32)


def fraction_size(size_hw: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    """`size_hw` divided by the smallest integer that brings it within `max_pixels` pixels (None or
    0: unchanged), each side at least 1. ValueError for a negative `max_pixels`."""
    if max_pixels is not None and max_pixels < 0:
        raise ValueError(f"max_pixels must be >= 0, got {max_pixels}")
    h, w = size_hw
    factor = 1
    while max_pixels and max(h // factor, 1) * max(w // factor, 1) > max_pixels:
        factor += 1
    return max(h // factor, 1), max(w // factor, 1)
