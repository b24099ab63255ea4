"""Learn the error bar of the classical fill on a user's captures, and score its coverage.

`calibrate_fill_error` hides measured pixels of some captures the way `evaluate --holes` does
(every hole kind), fills them with the fill `complete --classical` runs, and fits a
numeric.fill_error.FillErrorModel to the errors: no labels beyond the camera's own depth. A run
folder gets one, learned on its training captures, the first time `evaluate --holes` scores it
(FILL_ERROR_FILE); `complete --classical` learns one on the captures it is given. Calibration runs
at CALIBRATION_MAX_PIXELS for speed: the features do not depend on the resolution (distance as a
share of the diagonal, disagreement in mm), but the errors do somewhat: a Zivid capture completed
at full size (filled at half size and upsampled) is covered a little less often than one scored at
600x972 (experiments/guided_fill/RESULTS.md has both).
"""

from __future__ import annotations

import numpy as np

from depth_lora.data.captures import Capture
from depth_lora.data.dataset import prepare_capture
from depth_lora.numeric import guided_fill
from depth_lora.numeric.fill_error import FillErrorModel, coverage, fill_features
from depth_lora.numeric.guided_fill import DEFAULT_FILL, default_fill
from depth_lora.numeric.hole_masks import hidden_masks
from depth_lora.numeric.resize import fraction_size

FILL_ERROR_FILE = "fill_error.json"
CALIBRATION_MAX_PIXELS = 150_000  # captures are calibrated at an integer fraction of this size ...
CALIBRATION_CAPTURES = 8  # ... at most this many, evenly spread over those given
PIXELS_PER_HOLE = 20_000  # each (capture, kind) gives at most this many pixels, evenly strided


def fill_settings() -> dict:
    """What a FillErrorModel's errors depend on besides the captures: the fill and its settings, and
    the calibration's size; a stored model learned with other settings is learned again."""
    return {"fill": DEFAULT_FILL, "variance_factor": guided_fill.VARIANCE_FACTOR,
            "fill_max_pixels": guided_fill.FILL_MAX_PIXELS, "calibration_max_pixels": CALIBRATION_MAX_PIXELS,
            "calibration_captures": CALIBRATION_CAPTURES}


def calibration_subset(items: list) -> list:
    """At most CALIBRATION_CAPTURES of `items` (captures or their files), evenly spread."""
    return items[::max(1, len(items) // CALIBRATION_CAPTURES)][:CALIBRATION_CAPTURES]


def at_most(capture: Capture, max_pixels: int | None) -> Capture:
    """The capture resized as a model's input is (its depth by the labels' rule) to an integer
    fraction of its size within `max_pixels` (None or 0: as it is), as `evaluate --holes` scores it."""
    size = fraction_size(capture.size_hw, max_pixels)
    if size == capture.size_hw:
        return capture
    seen = prepare_capture(capture, size)
    return Capture(capture.key, seen.rgb, seen.depth_mm)


def calibrate_fill_error(captures: list[Capture], seed: int = 0,
                         max_pixels: int = CALIBRATION_MAX_PIXELS) -> FillErrorModel:
    """A FillErrorModel of the default fill learned on `captures` (module docstring; callers pass
    `calibration_subset` of theirs). Each capture borrows the next one's holes (its own, mirrored,
    if it is alone). ValueError if the captures give too few hidden pixels."""
    chosen = [at_most(c, max_pixels) for c in calibration_subset(captures)]
    distances, disagreements, errors = [], [], []
    for i, capture in enumerate(chosen):
        other = chosen[(i + 1) % len(chosen)].depth_mm if len(chosen) > 1 else capture.depth_mm[:, ::-1]
        if other.shape != capture.depth_mm.shape:
            other = capture.depth_mm[:, ::-1]
        for hidden in hidden_masks(capture.depth_mm, other, seed + i).values():
            if not hidden.any():
                continue
            depth = np.where(hidden, np.nan, capture.depth_mm)
            filled = default_fill(depth, capture.rgb)
            distance, disagreement = fill_features(depth, filled)
            keep = hidden & np.isfinite(filled)
            stride = max(1, int(keep.sum()) // PIXELS_PER_HOLE)
            distances.append(distance[keep][::stride])
            disagreements.append(disagreement[keep][::stride])
            errors.append(np.abs(filled - capture.depth_mm)[keep][::stride])
    if not errors:
        raise ValueError("no measured pixel to hide in these captures")
    features = np.concatenate(distances), np.concatenate(disagreements)
    return FillErrorModel.fit(*features, np.concatenate(errors), DEFAULT_FILL, len(chosen), fill_settings())


def fill_coverage(model: FillErrorModel, depth_mm: np.ndarray, filled_mm: np.ndarray, truth_mm: np.ndarray,
                  hidden: np.ndarray) -> tuple[float, float]:
    """(coverage of the 90 % interval, its median width in mm) on the `hidden` pixels of one fill."""
    sigma = model.sigma_map(depth_mm, filled_mm)
    return coverage(np.abs(filled_mm - truth_mm)[hidden], sigma[hidden])


def hidden_fill_error(capture: Capture, model: FillErrorModel, other_depth_mm: np.ndarray | None = None,
                      kind: str = "other_capture", seed: int = 0, max_pixels: int | None = None):
    """One capture's pixels of one hole kind hidden (another capture's holes by default: real hole
    shapes), filled by the default fill, with the error bar `model` gives them: (capture as scored,
    hidden mask, filled depth, sigma map), for viz.plot_hole_filling. `max_pixels`: scored at an
    integer fraction of its size within that many pixels, as `evaluate --holes` does."""
    from depth_lora.data.dataset import resize_depth

    if max_pixels:
        capture = at_most(capture, max_pixels)
        if other_depth_mm is not None and other_depth_mm.shape != capture.depth_mm.shape:
            other_depth_mm = resize_depth(other_depth_mm, capture.depth_mm.shape)[0]
    other = capture.depth_mm[:, ::-1] if other_depth_mm is None else other_depth_mm
    hidden = hidden_masks(capture.depth_mm, other, seed)[kind]
    depth = np.where(hidden, np.nan, capture.depth_mm)
    filled = default_fill(depth, capture.rgb)
    return capture, hidden, filled, model.sigma_map(depth, filled)
