"""Fill depth holes the way the image says, and shadows from their far side.

- `colorization_fill`: the colorization fill (after Levin, Lischinski and Weiss 2004, the fill of
  the NYU Depth V2 toolbox's `fill_depth_colorization`). Like the harmonic fill, each hole pixel is
  a weighted mean of its neighbours and the measured pixels are fixed; unlike it, a pair of
  neighbours weighs by how alike the two pixels look, exp(-(I_p - I_q)^2 / sigma^2), so depth does
  not flow from one surface into another that looks different. Our weights differ from the
  toolbox's: 4 neighbours, not 8, and symmetric (sigma^2 is the pair's mean of each pixel's own,
  VARIANCE_FACTOR x the grey-level variance of its 3x3 window, at least SIGMA2_FLOOR), so the system
  is symmetric positive definite; and sharper (the toolbox's factor is 0.6: at an image edge the
  window's variance is large, so its weights let depth through the edges they should stop). A
  floor on the weight (WEIGHT_FLOOR) keeps a region that image edges close all round connected to
  its border. The system is solved directly (numeric.fill.harmonic_fill with `pair_weights`).
- `shadow_aware_fill`: a structured-light camera's projector shadow lies on the *farther* surface
  beside an edge, so a hole between a near and a far surface is filled from its far side: the
  measured pixels on its border that lie clearly in front of another border pixel close by
  (`near_side`) become walls the fill does not read; the rest is the colorization fill.

`DEFAULT_FILL` is what `complete --classical` runs: the colorization fill, chosen on validation
captures (experiments/guided_fill): the shadow-aware fill halves the error in bands behind depth
edges but loses more where a hole covers part of a near surface (borrowed holes, blobs).
Pure arrays (numpy, scipy, OpenCV); no model. Captures over FILL_MAX_PIXELS are filled at an
integer fraction of their size and upsampled into the holes (`at_most_pixels`); that costs
accuracy near depth edges (experiments/guided_fill/RESULTS.md says how much).
"""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
from scipy import ndimage

from depth_lora.numeric.fill import harmonic_fill, nearest_fill, unreachable_holes
from depth_lora.numeric.resize import fraction_size, masked_area_resize

VARIANCE_FACTOR = 0.1  # sigma^2 = 0.1 x the window's grey-level variance (the toolbox's 0.6) ...
SIGMA2_FLOOR = 1e-4  # ... at least this (grey levels in [0, 1]: a difference of 0.01)
WEIGHT_FLOOR = 1e-4  # no pair weighs less than this
# A border pixel is on an edge's near side if a border pixel within NEAR_RADIUS_FRACTION of the
# image diagonal lies farther by at least NEAR_STEP_MM and NEAR_STEP_SHARE of its depth.
NEAR_RADIUS_FRACTION = 0.012
NEAR_STEP_MM = 8.0
NEAR_STEP_SHARE = 0.01
NEAR_SLOPE_SHARE = 0.004  # ... plus this share of the depth per pixel between them (not a tilt)
FILL_MAX_PIXELS = 600_000  # larger captures are filled at an integer fraction of their size ...
UPSAMPLE_SIGMA = 0.05  # ... and upsampled with this image-likeness scale (grey levels in [0, 1])


def gray_levels(image: np.ndarray) -> np.ndarray:
    """(H, W) grey levels in [0, 1] of an (H, W, 3) RGB image or an (H, W) one: integer images are
    divided by their type's maximum (255 for uint8), float images are taken as [0, 1] (or [0, 255]
    if any value exceeds 1)."""
    image = np.asarray(image)
    scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    image = image.astype(np.float32)
    if scale == 1.0 and image.size and float(np.nanmax(image)) > 1.0:
        scale = 255.0
    gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if image.ndim == 3 else image
    return gray / scale


def image_pair_weights(image: np.ndarray, variance_factor: float = VARIANCE_FACTOR,
                       sigma: float | None = None):
    """(h, w) -> (horizontal (h, w-1), vertical (h-1, w)) weights of neighbouring pairs, from the
    image area-resized to (h, w): exp(-(I_p - I_q)^2 / sigma^2), sigma^2 the pair's mean of each
    pixel's (module docstring), or `sigma` (grey levels in [0, 1]) everywhere if given;
    numeric.fill.harmonic_fill's `pair_weights`."""
    full = gray_levels(image)

    def weights(size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        gray = full if full.shape == tuple(size_hw) else cv2.resize(
            full, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
        mean = cv2.blur(gray, (3, 3), borderType=cv2.BORDER_REPLICATE)
        sigma2 = np.maximum(variance_factor * (cv2.blur(gray * gray, (3, 3), borderType=cv2.BORDER_REPLICATE)
                                               - mean * mean), SIGMA2_FLOOR)
        if sigma is not None:
            sigma2 = np.full_like(gray, sigma * sigma)
        pairs = []
        for a, b in (((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
                     ((slice(0, -1), slice(None)), (slice(1, None), slice(None)))):
            difference = (gray[a] - gray[b]) ** 2
            pairs.append(np.maximum(np.exp(-2.0 * difference / (sigma2[a] + sigma2[b])), WEIGHT_FLOOR)
                         .astype(np.float64))
        return pairs[0], pairs[1]

    return weights


def at_most_pixels(fill, depth_mm: np.ndarray, image: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """`fill(depth_mm, image)` computed at an integer fraction of the size that holds at most
    `max_pixels` (None or 0: at full size) and upsampled into the holes (`joint_upsample`: at half
    the size of a validation capture it beat a bilinear upsampling on every hole kind); measured
    pixels exact. A cell of the smaller grid is measured where at least half its pixels are, with
    their mean (as a model's labels are); a hole pixel the smaller grid could not reach (sparse or
    thin measurements) takes its nearest measured pixel's depth. ValueError for a negative size."""
    h, w = depth_mm.shape
    size = fraction_size((h, w), max_pixels)
    measured = np.isfinite(depth_mm)
    if size == (h, w):
        return np.where(measured, depth_mm, fill(depth_mm, image)).astype(np.float32)
    small, coverage = masked_area_resize(depth_mm, measured, size)
    small = np.where(coverage >= 0.5, small, np.nan)
    small_image = cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    up = joint_upsample(fill(small, small_image), gray_levels(small_image), gray_levels(image))
    up = np.where(measured, depth_mm, up)
    missed = np.isnan(up) & ~unreachable_holes(measured)
    if missed.any():
        up = np.where(missed, nearest_fill(np.where(measured, depth_mm, np.nan)), up)
    return up.astype(np.float32)


def joint_upsample(small: np.ndarray, small_gray: np.ndarray, gray: np.ndarray,
                   sigma: float = UPSAMPLE_SIGMA) -> np.ndarray:
    """`small` (h, w) upsampled to `gray`'s (H, W): each pixel the mean of its 4 nearest cells,
    weighted bilinearly and by how alike the pixel looks to each cell, exp(-(I - I_cell)^2 /
    sigma^2) (joint bilateral upsampling, Kopf et al. 2007), so a value does not cross an image
    edge; NaN cells weigh nothing, and a pixel whose 4 cells are all NaN is NaN."""
    (h, w), (height, width) = small.shape, gray.shape
    out = np.zeros((height, width))
    total = np.zeros((height, width))
    y = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    x = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0 = np.minimum(y.astype(int), max(h - 2, 0))
    x0 = np.minimum(x.astype(int), max(w - 2, 0))
    fy, fx = y - y0, x - x0
    finite = np.isfinite(small)
    values = np.where(finite, small, 0.0)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        rows = np.minimum(y0 + dy, h - 1)
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cols = np.minimum(x0 + dx, w - 1)
            cell = np.ix_(rows, cols)
            likeness = np.exp(-((gray - small_gray[cell]) ** 2) / (sigma * sigma))
            weight = wy[:, None] * wx[None, :] * np.maximum(likeness, 1e-6) * finite[cell]
            out += weight * values[cell]
            total += weight
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, out / total, np.nan)


def _check_sizes(depth_mm: np.ndarray, image: np.ndarray) -> None:
    if np.asarray(image).shape[:2] != np.asarray(depth_mm).shape:
        raise ValueError(f"image {np.asarray(image).shape[:2]} and depth {np.asarray(depth_mm).shape} "
                         "differ in size")


def colorization_fill(depth_mm: np.ndarray, image: np.ndarray,
                      max_pixels: int | None = FILL_MAX_PIXELS) -> np.ndarray:
    """Fill the holes (NaN) of `depth_mm` guided by `image` (the colorization fill, module doc).

    Args:
        depth_mm: (H, W) depth, NaN where the camera measured nothing.
        image: (H, W, 3) uint8 RGB (or (H, W) grey) of the same size.
        max_pixels: fill at most this many pixels (`at_most_pixels`); None: at full size.
    Returns:
        (H, W) float32: measured pixels unchanged, holes filled; holes touching no measured pixel
        stay NaN.
    """
    _check_sizes(depth_mm, image)
    return at_most_pixels(_colorize, np.asarray(depth_mm, dtype=np.float32), image, max_pixels)


def _colorize(depth_mm, image):
    return harmonic_fill(depth_mm, pair_weights=image_pair_weights(image))


def _from_far_side(depth_mm, image, radius_fraction: float = NEAR_RADIUS_FRACTION):
    measured, weights = np.isfinite(depth_mm), image_pair_weights(image)
    filled = harmonic_fill(depth_mm, measured & ~near_side(depth_mm, radius_fraction), ~measured, weights)
    walled_in = ~measured & np.isnan(filled)  # a hole with near sides only all round: read them all
    if walled_in.any():
        filled = np.where(walled_in, harmonic_fill(depth_mm, measured, walled_in, weights), filled)
    return np.where(measured, depth_mm, filled)  # the walls are measured pixels: kept


def near_side(depth_mm: np.ndarray, radius_fraction: float = NEAR_RADIUS_FRACTION,
              slope_share: float = NEAR_SLOPE_SHARE) -> np.ndarray:
    """(H, W) bool: measured pixels bordering a hole that lie clearly in front of another measured
    pixel bordering a hole close by: the near side of the edge a hole lies behind.

    "Clearly": farther by NEAR_STEP_MM or NEAR_STEP_SHARE of the depth, whichever is larger, plus
    `slope_share` of the depth for every pixel between them, so that a tilted surface across a hole
    is not an edge. "Close by": within `radius_fraction` of the image diagonal, looked at in
    doubling squares (1, 2, 4, ... pixels).
    """
    measured = np.isfinite(depth_mm)
    border = measured & ndimage.binary_dilation(~measured)
    z = np.where(border, depth_mm, -np.inf)
    step = np.maximum(NEAR_STEP_MM, NEAR_STEP_SHARE * np.nan_to_num(depth_mm))
    radius = max(1, int(round(radius_fraction * float(np.hypot(*depth_mm.shape)))))
    near = np.zeros_like(border)
    k = 1
    while True:
        k = min(k, radius)
        farthest = ndimage.maximum_filter(z, size=2 * k + 1)
        with np.errstate(invalid="ignore"):
            near |= border & (farthest - z >= step + slope_share * k * np.nan_to_num(depth_mm))
        if k == radius:
            return near
        k *= 2


def shadow_aware_fill(depth_mm: np.ndarray, image: np.ndarray, max_pixels: int | None = FILL_MAX_PIXELS,
                      radius_fraction: float = NEAR_RADIUS_FRACTION) -> np.ndarray:
    """The colorization fill with each hole read from its far side only where it lies behind a depth
    edge (module docstring): the near side's border pixels are walls. Same arguments and result as
    `colorization_fill`; a hole whose every border pixel is a near side is filled from all of them."""
    _check_sizes(depth_mm, image)
    depth_mm = np.asarray(depth_mm, dtype=np.float32)
    fill = partial(_from_far_side, radius_fraction=radius_fraction)
    return at_most_pixels(fill, depth_mm, image, max_pixels)


# The image-guided fills by name (evaluation.holes scores each), and the one `complete --classical`
# runs: chosen on validation captures only (experiments/guided_fill/RESULTS.md).
GUIDED_FILLS = {"colorization": colorization_fill, "shadow_aware": shadow_aware_fill}
DEFAULT_FILL = "colorization"


def default_fill(depth_mm: np.ndarray, image: np.ndarray,
                 max_pixels: int | None = FILL_MAX_PIXELS) -> np.ndarray:
    """The classical fill `complete` runs with no model (DEFAULT_FILL); arguments as `colorization_fill`."""
    return GUIDED_FILLS[DEFAULT_FILL](depth_mm, image, max_pixels)
