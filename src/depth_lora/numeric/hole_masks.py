"""Hide measured pixels the way a structured-light camera's holes look, to score hole filling.

Four kinds, reported separately because they favour different fills:

- ``other_capture``: the hole mask of another capture of the same data set (real hole shapes:
  shadows, dark and shiny parts, the camera's own mix);
- ``blobs``: object-sized blobs (a dark or shiny part missing entirely), where a monocular model
  has the most to add over interpolation;
- ``edge_bands``: bands on the far side of depth edges, like the projector's shadows beside every
  raised part, where the depth jumps;
- ``border``: a strip along the four sides of the image, where a fill extrapolates from one side
  only and a model's outermost outputs are the least trained (a learned completer never trains on
  this kind: `data.completion.TRAINING_HOLE_KINDS`).

Each function returns the (H, W) bool mask of *measured* pixels to hide; the camera's value there
is the ground truth the fill is scored against.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HOLE_KINDS = ("other_capture", "blobs", "edge_bands", "border")
BLOB_SHARE = 0.08  # hide about this share of the measured pixels in blobs
BLOB_RADIUS_FRACTION = (0.03, 0.07)  # blob radii, as a share of the image diagonal
EDGE_STEP_MM = 8.0  # a depth edge: a jump of at least this between neighbouring pixels ...
EDGE_STEP_SHARE = 0.01  # ... and of this share of their depth (30 mm at 3 m, beyond a Zivid's noise)
EDGE_GAP_PX = 3  # ... across at most this many unmeasured pixels (the far side's dropped mixed pixels)
EDGE_BAND_FRACTION = 0.006  # band width, as a share of the image diagonal (~14 px at 1944x1200)
BORDER_FRACTION = 0.02  # border strip width, as a share of the image diagonal (~46 px at 1944x1200)


def hide_like(measured: np.ndarray, other_holes: np.ndarray) -> np.ndarray:
    """Measured pixels under another capture's holes (that mask resized to this capture's size)."""
    if other_holes.shape != measured.shape:
        rows = np.linspace(0, other_holes.shape[0] - 1, measured.shape[0]).round().astype(int)
        cols = np.linspace(0, other_holes.shape[1] - 1, measured.shape[1]).round().astype(int)
        other_holes = other_holes[np.ix_(rows, cols)]
    return measured & other_holes


def hide_blobs(measured: np.ndarray, rng: np.random.Generator, share: float = BLOB_SHARE) -> np.ndarray:
    """Measured pixels under random elliptical blobs, added until `share` of them is hidden."""
    h, w = measured.shape
    diagonal = float(np.hypot(h, w))
    hidden = np.zeros_like(measured)
    v, u = np.ogrid[0:h, 0:w]
    target = share * measured.sum()
    for _ in range(200):
        if (hidden & measured).sum() >= target:
            break
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(*BLOB_RADIUS_FRACTION, size=2) * diagonal
        angle = rng.uniform(0, np.pi)
        dy, dx = v - cy, u - cx
        a = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        b = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        hidden |= a * a + b * b <= 1.0
    return measured & hidden


def hide_edge_bands(depth_mm: np.ndarray, step_mm: float = EDGE_STEP_MM,
                    band_fraction: float = EDGE_BAND_FRACTION) -> np.ndarray:
    """Measured pixels on the far side of a depth edge, within a band's width of it.

    An edge is a jump of more than `step_mm` or EDGE_STEP_SHARE of the depth, whichever is larger,
    between two measured pixels of a row or a column that are neighbours or have at most
    EDGE_GAP_PX unmeasured pixels between them (a camera drops the mixed pixels on the far side of
    a large jump); a tilted table rises a fraction of a millimetre a pixel and a far floor's noise a
    few, neither is an edge. The band is every measured pixel within `band_fraction` of the image
    diagonal of an edge's near side that lies that much behind it, as a projector's shadow lies on
    the farther surface.
    """
    measured = np.isfinite(depth_mm)
    width = max(2, int(round(band_fraction * float(np.hypot(*depth_mm.shape)))))
    z = np.where(measured, depth_mm, np.inf)
    near_side = np.zeros_like(measured)
    for axis in (0, 1):
        zs, known, near = (np.moveaxis(a, axis, 0) for a in (z, measured, near_side))  # views
        gap = np.ones_like(known[:-1])  # the pixels strictly between the two compared are all holes
        for d in range(1, min(EDGE_GAP_PX + 1, zs.shape[0] - 1) + 1):
            if d > 1:
                gap = gap[:-1] & ~known[d - 1:-1]
            a, b = zs[:-d], zs[d:]
            pair = known[:-d] & known[d:] & gap
            jump = np.maximum(step_mm, EDGE_STEP_SHARE * np.minimum(a, b))
            with np.errstate(invalid="ignore"):
                near[:-d] |= pair & (b - a > jump)  # a is the near side
                near[d:] |= pair & (a - b > jump)
    nearest = ndimage.minimum_filter(np.where(near_side, z, np.inf), size=2 * width + 1)
    with np.errstate(invalid="ignore"):
        behind = depth_mm - nearest > np.maximum(step_mm, EDGE_STEP_SHARE * nearest)
    return measured & behind


def hide_border(measured: np.ndarray, band_fraction: float = BORDER_FRACTION) -> np.ndarray:
    """Measured pixels within a strip of the image border (all four sides)."""
    width = max(2, int(round(band_fraction * float(np.hypot(*measured.shape)))))
    frame = np.ones_like(measured)
    frame[width:-width, width:-width] = False
    return measured & frame


def hidden_masks(depth_mm: np.ndarray, other_depth_mm: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The kinds of hidden pixels for one capture (see HOLE_KINDS).

    other_depth_mm: another capture's depth, whose holes are borrowed (the capture's own holes
    mirrored left-right when the data set has a single capture).
    """
    measured = np.isfinite(depth_mm)
    return {
        "other_capture": hide_like(measured, ~np.isfinite(other_depth_mm)),
        "blobs": hide_blobs(measured, np.random.default_rng(seed)),
        "edge_bands": hide_edge_bands(depth_mm),
        "border": hide_border(measured),
    }
