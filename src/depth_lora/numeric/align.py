"""Align a relative (disparity-like) prediction to metric depth: the MiDaS zero-shot protocol.

Depth Anything's relative head predicts something proportional to inverse depth up to an unknown
scale and shift. To score it in millimetres without training, fit ``s * pred + t ≈ 1 / target``
by least squares on the valid pixels of each capture (an oracle alignment that uses the ground
truth), clamp the aligned disparity to the camera's depth range and invert it.
"""

from __future__ import annotations

import numpy as np

from depth_lora.errors import ConfigError
from depth_lora.numeric.metrics import valid_depth_mask

DEFAULT_MIN_DEPTH_MM = 100.0  # a Zivid's working range is ~0.3-3 m; leave margin on both sides
DEFAULT_MAX_DEPTH_MM = 10_000.0


def fit_scale_shift(pred_disparity, target_mm, valid_mask=None) -> tuple[float, float]:
    """Least-squares scale and shift mapping a disparity prediction to inverse depth.

    Minimises ``sum((s * pred + t - 1 / target)^2)`` over pixels where the mask is True, the
    target is finite and > 0 and the prediction is finite.

    Args:
        pred_disparity: (H, W) relative prediction (larger = nearer), any scale.
        target_mm: (H, W) measured depth in mm, NaN = invalid.
        valid_mask: optional (H, W) bool.

    Returns:
        ``(s, t)`` in 1/mm per prediction unit and 1/mm. A constant prediction gives ``s = 0``
        and ``t`` = mean inverse depth.

    Raises:
        ConfigError: fewer than 2 valid pixels.
    """
    pred = np.asarray(pred_disparity, dtype=np.float64)
    target = np.asarray(target_mm, dtype=np.float64)
    valid = valid_depth_mask(pred, target, valid_mask)
    count = int(valid.sum())
    if count < 2:
        raise ConfigError(f"cannot fit scale and shift: {count} valid pixel(s), need at least 2")
    return fit_affine(pred[valid], 1.0 / target[valid])


def fit_affine(x, y) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimising ``sum((s * x + t - y)^2)`` over paired 1-D samples."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # Centred closed form: better conditioned than the raw normal equations (y ~ 1e-3 / mm).
    x_mean, y_mean = x.mean(), y.mean()
    x_var = np.sum((x - x_mean) ** 2)
    scale = float(np.sum((x - x_mean) * (y - y_mean)) / x_var) if x_var > 0 else 0.0
    return scale, float(y_mean - scale * x_mean)


def align_to(pred, y, valid_mask) -> np.ndarray:
    """``s * pred + t`` with ``(s, t)`` fitted to ``y`` by least squares where the mask is True
    and both are finite; ``pred`` unchanged (float64) if fewer than 2 such pixels."""
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    valid = np.asarray(valid_mask, dtype=bool) & np.isfinite(pred) & np.isfinite(y)
    if int(valid.sum()) < 2:
        return pred
    scale, shift = fit_affine(pred[valid], y[valid])
    return scale * pred + shift


def align_in_label_space(pred, target_mm, valid_mask, labels) -> np.ndarray:
    """Depth in mm from a relative prediction trained with a scale-and-shift-invariant loss.

    Fits ``s * pred + t`` to ``labels.encode(target_mm)`` on the valid pixels (for inverse labels
    this is the MiDaS disparity fit), then decodes with ``labels`` (a LabelScheme). An oracle, like
    the zero-shot alignment: the result scores the model's relative depth only.
    """
    target = np.asarray(target_mm, dtype=np.float64)
    valid = valid_depth_mask(pred, target, valid_mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = labels.encode(target)
    return labels.decode(align_to(pred, y, valid))


def align_disparity_to_depth_mm(
    pred_disparity,
    target_mm,
    valid_mask=None,
    min_depth_mm: float = DEFAULT_MIN_DEPTH_MM,
    max_depth_mm: float = DEFAULT_MAX_DEPTH_MM,
) -> np.ndarray:
    """Depth in mm from a disparity-like prediction, aligned to the target (MiDaS protocol).

    Args:
        pred_disparity: (H, W) relative prediction, resized to the target's shape.
        target_mm: (H, W) measured depth in mm, NaN = invalid; used only to fit (s, t).
        valid_mask: optional (H, W) bool of pixels to fit on.
        min_depth_mm, max_depth_mm: the aligned disparity is clamped to
            [1 / max_depth_mm, 1 / min_depth_mm] before inversion, so depth stays in that range.

    Returns:
        (H, W) float64 depth in mm for every pixel (NaN where the prediction is not finite).
        ``fit_scale_shift`` gives the (s, t) used.

    Raises:
        ConfigError: fewer than 2 valid pixels, or a bad depth range.
    """
    if not 0 < min_depth_mm < max_depth_mm:
        raise ConfigError(
            f"need 0 < min_depth_mm < max_depth_mm, got {min_depth_mm} and {max_depth_mm}"
        )
    scale, shift = fit_scale_shift(pred_disparity, target_mm, valid_mask)
    disparity = scale * np.asarray(pred_disparity, dtype=np.float64) + shift
    disparity = np.clip(disparity, 1.0 / max_depth_mm, 1.0 / min_depth_mm)
    return 1.0 / disparity
