"""Fill depth holes the way the image says: the colorization fill (Levin, Lischinski and Weiss 2004,
the fill of the NYU Depth V2 toolbox's `fill_depth_colorization`).

Like the harmonic fill, each unknown pixel is a weighted mean of its neighbours and the measured
pixels are fixed; unlike it, a neighbour weighs by how alike the two pixels look: across an image
edge the weight falls to almost nothing, so depth does not flow from one surface into another that
looks different. Pure arrays (numpy, scipy); no model. Not yet what `complete` runs (issue 33:
the choice per hole is made on validation).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import linalg as sparse_linalg

from depth_lora.numeric.fill import unreachable_holes

_NEIGHBOURS_8 = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
# The toolbox's weight rule: sigma^2 = 0.6 x the 3x3 window's grey-level variance, at least enough
# that the most alike neighbour keeps 1 % of the weight, and never below SIGMA2_FLOOR.
VARIANCE_FACTOR = 0.6
MIN_NEAREST_WEIGHT = 0.01
SIGMA2_FLOOR = 2e-6


def gray_levels(image: np.ndarray) -> np.ndarray:
    """(H, W) grey levels in [0, 1] of an (H, W, 3) uint8 RGB image or an (H, W) one."""
    image = np.asarray(image, dtype=np.float64)
    gray = image @ np.array([0.299, 0.587, 0.114]) if image.ndim == 3 else image
    return gray / 255.0


def neighbour_weights(gray: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(dy, dx) -> (H, W) weight of the neighbour at that offset, each pixel's 8 weights summing to
    1 over its neighbours inside the image: exp(-(I_r - I_s)^2 / sigma_r^2) (see the constants)."""
    h, w = gray.shape
    mean = ndimage.uniform_filter(gray, 3, mode="nearest")
    variance = np.maximum(ndimage.uniform_filter(gray * gray, 3, mode="nearest") - mean * mean, 0.0)
    padded = np.pad(gray, 1, mode="edge")
    inside = np.pad(np.ones((h, w), dtype=bool), 1)
    diffs, present = {}, {}
    for dy, dx in _NEIGHBOURS_8:
        shifted = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        diffs[dy, dx] = (shifted - gray) ** 2
        present[dy, dx] = inside[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    nearest = np.min([np.where(present[k], d, np.inf) for k, d in diffs.items()], axis=0)
    sigma2 = np.maximum(VARIANCE_FACTOR * variance, -nearest / np.log(MIN_NEAREST_WEIGHT))
    sigma2 = np.maximum(sigma2, SIGMA2_FLOOR)
    weights = {k: np.where(present[k], np.exp(-d / sigma2), 0.0) for k, d in diffs.items()}
    total = np.sum(list(weights.values()), axis=0)
    return {k: v / total for k, v in weights.items()}


def colorization_fill(depth_mm: np.ndarray, image: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Fill the unknown pixels of `depth_mm` guided by `image` (the colorization fill, module doc).

    The unknowns are the hole pixels only: each equals the weighted mean (`neighbour_weights`) of
    its 8 neighbours, measured ones taken as they are; a sparse linear system, solved directly.
    Args:
        depth_mm: (H, W) depth, NaN (or not `known`) where the camera measured nothing.
        image: (H, W, 3) uint8 RGB (or (H, W) grey) of the same size.
        known: (H, W) bool; defaults to the finite pixels of `depth_mm`.
    Returns:
        (H, W) float32: measured pixels unchanged, holes filled; holes touching no measured pixel
        stay NaN.
    """
    depth = np.asarray(depth_mm, dtype=np.float64)
    known = np.isfinite(depth) if known is None else np.asarray(known, dtype=bool) & np.isfinite(depth)
    gray = gray_levels(image)
    if gray.shape != depth.shape:
        raise ValueError(f"image {gray.shape} and depth {depth.shape} differ in size")
    out = np.where(known, depth, np.nan)
    unknown = ~known & ~unreachable_holes(known)
    if not unknown.any():
        return out.astype(np.float32)
    h, w = depth.shape
    index = np.full((h, w), -1, dtype=np.int64)
    n = int(unknown.sum())
    index[unknown] = np.arange(n)
    rows, cols, values = [np.arange(n)], [np.arange(n)], [np.ones(n)]
    rhs = np.zeros(n)
    padded_index = np.pad(index, 1, constant_values=-1)
    padded_depth = np.pad(np.where(known, depth, 0.0), 1)
    padded_known = np.pad(known, 1)
    weights = neighbour_weights(gray)
    # A neighbour outside the image or in a hole nothing anchors has no say: the others share its weight.
    usable = {k: (padded_index[1 + k[0]:1 + k[0] + h, 1 + k[1]:1 + k[1] + w] >= 0)
              | padded_known[1 + k[0]:1 + k[0] + h, 1 + k[1]:1 + k[1] + w] for k in weights}
    total = np.sum([np.where(usable[k], v, 0.0) for k, v in weights.items()], axis=0)
    for (dy, dx), weight in weights.items():
        neighbour = padded_index[1 + dy:1 + dy + h, 1 + dx:1 + dx + w][unknown]
        wgt = np.where(usable[dy, dx], weight, 0.0)[unknown] / np.maximum(total[unknown], 1e-300)
        free = neighbour >= 0  # an unknown neighbour: a matrix entry; a measured one: the right side
        rows.append(np.flatnonzero(free))
        cols.append(neighbour[free])
        values.append(-wgt[free])
        rhs += wgt * padded_depth[1 + dy:1 + dy + h, 1 + dx:1 + dx + w][unknown]
    matrix = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(n, n))
    out[unknown] = sparse_linalg.spsolve(matrix.tocsc(), rhs)
    return out.astype(np.float32)
