"""A local scale-and-shift fit of a model's output to the measured depth: Prior Depth Anything's
coarse alignment, a row of `evaluate --holes` (no training, no anchoring)."""

from __future__ import annotations

import math

import numpy as np

from depth_lora.data.dataset import LabelScheme
from depth_lora.inference.complete import (
    FIT_MAX_SAMPLES,
    RESIDUAL_MAX_PIXELS,
    Completion,
    bound_completion,
    capture_label_scheme,
)
from depth_lora.numeric.fill import robust_fit_affine

# The local scale-and-shift fit (Prior Depth Anything's coarse alignment, local_fit_fill): Gaussian
# neighbourhoods of these shares of the image diagonal, the smallest one at least this share measured,
# and the global fit as a prior worth this share of a fully measured neighbourhood (set once, not
# tuned on any split).
LOCAL_FIT_SIGMAS = (0.01, 0.03, 0.1, 0.3)
LOCAL_FIT_MIN_SUPPORT = 0.2
LOCAL_FIT_PRIOR_SHARE = 0.01
FFT_SIGMA_PX = 16.0  # Gaussians at least this wide are applied by FFT convolution (_gaussian)


def local_fit_fill(raw: np.ndarray, depth_mm: np.ndarray, labels: LabelScheme | None,
                   measured: np.ndarray | None = None) -> Completion:
    """Fill holes with a model's output fitted to the measured depth by a *local* scale and shift,
    the coarse alignment of Prior Depth Anything (Wang et al., 2025) with Gaussian weights in place
    of its k nearest measurements: at every pixel, the weighted least-squares fit of
    ``s * raw + t ≈ labels.encode(depth)`` over the measured pixels, each weighted by a Gaussian of
    its distance. Like k nearest neighbours, the neighbourhood grows where nothing is measured: each
    pixel takes the smallest of LOCAL_FIT_SIGMAS (shares of the image diagonal) whose neighbourhood is
    at least LOCAL_FIT_MIN_SUPPORT measured. The global robust fit is a prior worth
    LOCAL_FIT_PRIOR_SHARE of a fully measured neighbourhood (a flat neighbourhood has no scale of
    its own). No training, no anchoring; bounded like every fill, measured pixels exact.
    """

    measured = np.isfinite(depth_mm) if measured is None else measured
    labels = labels or capture_label_scheme(depth_mm, measured)
    x = raw.astype(np.float64)
    y = np.where(measured, labels.encode(np.where(measured, depth_mm, 1.0).astype(np.float64)), 0.0)
    w = measured.astype(np.float64)
    stride = max(1, int(measured.sum()) // FIT_MAX_SAMPLES)
    x_g, y_g = x[measured][::stride], y[measured][::stride]
    scale_g, shift_g, inliers = robust_fit_affine(x_g, y_g)  # the prior: fit_prediction_mm's global fit
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        global_mm = labels.decode(scale_g * x + shift_g).astype(np.float32)
    mean_g, var_g = float(x_g.mean()), float(x_g.var()) + 1e-12
    # Moments of the measured samples, summed in blocks (the fit is smooth: solve it coarse).
    h, wd = depth_mm.shape
    block = max(1, math.ceil(math.sqrt(h * wd / RESIDUAL_MAX_PIXELS)))
    sums = [_block_sum(a, block) for a in (w, w * x, w * y, w * x * x, w * x * y)]
    full = float(block * block)  # the weight of a fully measured neighbourhood
    scale = shift = chosen = None
    for share in LOCAL_FIT_SIGMAS:
        sigma = share * math.hypot(h, wd) / block
        sw, sx, sy, sxx, sxy = (_gaussian(a, sigma) for a in sums)
        support = sw / full
        prior = LOCAL_FIT_PRIOR_SHARE * full
        sw, sx = sw + prior, sx + prior * mean_g
        sy = sy + prior * (scale_g * mean_g + shift_g)
        sxx = sxx + prior * (var_g + mean_g ** 2)
        sxy = sxy + prior * (scale_g * (var_g + mean_g ** 2) + shift_g * mean_g)
        mx, my = sx / sw, sy / sw
        s_here = (sxy / sw - mx * my) / np.maximum(sxx / sw - mx * mx, 1e-12)
        t_here = my - s_here * mx
        if scale is None:
            scale, shift, chosen = s_here, t_here, support >= LOCAL_FIT_MIN_SUPPORT
        else:  # pixels not yet settled take this, wider, neighbourhood
            scale, shift = np.where(chosen, scale, s_here), np.where(chosen, shift, t_here)
            chosen = chosen | (support >= LOCAL_FIT_MIN_SUPPORT)
    scale, shift = (_resize_smooth(a, (h, wd)) for a in (scale, shift))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        prediction = labels.decode(scale * x + shift).astype(np.float32)
    completed = np.where(measured, depth_mm, prediction).astype(np.float32)
    completed, fallback = bound_completion(completed, global_mm, depth_mm, measured)
    return Completion(completed, ~measured & np.isfinite(completed), prediction, float(inliers.mean()),
                      fallback)


def _gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(a, sigma, mode="constant"), the same kernel (truncated at 4
    sigma); wide kernels by FFT convolution, which gives the same sums to 1e-15 in a fraction of the
    time (benchmarks/RESULTS.md)."""
    from scipy import ndimage, signal

    if sigma < FFT_SIGMA_PX:
        return ndimage.gaussian_filter(a, sigma, mode="constant")
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    rows = signal.fftconvolve(a, kernel[None, :], mode="same", axes=1)
    return signal.fftconvolve(rows, kernel[:, None], mode="same", axes=0)


def _block_sum(a: np.ndarray, block: int) -> np.ndarray:
    """Sums over `block` x `block` tiles (the last partial tiles included)."""
    if block == 1:
        return a
    h, w = a.shape
    padded = np.pad(a, ((0, -h % block), (0, -w % block)))
    return padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).sum(axis=(1, 3))


def _resize_smooth(a: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A coarse map back to `size_hw` (bilinear, half-pixel centres)."""
    if a.shape == tuple(size_hw):
        return a
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    return F.interpolate(t, size=tuple(size_hw), mode="bilinear", align_corners=False)[0, 0].numpy()
