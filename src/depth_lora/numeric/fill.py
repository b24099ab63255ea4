"""Fill the holes of a depth map: the classical fills and the local anchoring of a prediction.

Pure array functions (numpy, scipy, OpenCV), no model. A hole is a pixel where the camera
measured nothing (NaN). The classical fills use the measured depth alone; `anchor_prediction`
uses a monocular prediction's shape inside each hole and the measured depth on its border:

    completed = prediction + harmonic(measured - prediction)

i.e. the residual between the camera and the (globally fitted) prediction, known on the measured
pixels, is interpolated into each hole by Laplace's equation. This is the gradient-domain
(Poisson) fill: inside a hole the completed depth has the prediction's gradients, on the hole's
border it meets the camera exactly. A monocular prediction's errors are low-frequency, which is
what a harmonic interpolation reproduces well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import linalg as sparse_linalg

from depth_lora.numeric.align import fit_affine
from depth_lora.numeric.resize import masked_area_resize

logger = logging.getLogger(__name__)

# The Laplace system is solved directly up to this many unknowns; larger ones are solved on a
# 2x coarser grid first (recursively) and refined with conjugate gradients from that start.
DIRECT_SOLVE_MAX_UNKNOWNS = 40_000
REFINE_ITERATIONS = 40
# Robust fit: residuals beyond this many robust standard deviations (1.4826 MAD) are outliers.
OUTLIER_SIGMAS = 3.0
ROBUST_ITERATIONS = 4

_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # 4-connectivity
# (h, w) -> (horizontal (h, w-1), vertical (h-1, w)) weights of neighbouring pairs at that grid size.
PairWeights = Callable[[tuple[int, int]], tuple[np.ndarray, np.ndarray]]


def robust_fit_affine(x, y, sigmas: float = OUTLIER_SIGMAS, iterations: int = ROBUST_ITERATIONS):
    """Least-squares ``(s, t)`` with ``s * x + t ≈ y``, refitted without outliers.

    Each round drops the samples whose residual exceeds ``sigmas`` robust standard deviations
    (1.4826 x the median absolute deviation) of the current fit, then refits on the rest. Flying
    pixels at depth edges and reflections are such outliers; a plain least-squares fit is pulled
    by them. Returns ``(s, t, inliers)`` with the boolean inlier mask of the last round.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inliers = np.ones(x.shape, dtype=bool)
    scale, shift = fit_affine(x, y)
    for _ in range(iterations):
        residual = np.abs(scale * x + shift - y)
        mad = np.median(residual[inliers])
        keep = residual <= sigmas * 1.4826 * mad if mad > 0 else residual <= 0
        if keep.sum() < 2 or np.array_equal(keep, inliers):
            break
        inliers = keep
        scale, shift = fit_affine(x[inliers], y[inliers])
    return scale, shift, inliers


def nearest_fill(depth_mm: np.ndarray) -> np.ndarray:
    """Each hole gets the value of its nearest measured pixel (Euclidean distance transform)."""
    holes = ~np.isfinite(depth_mm)
    if not holes.any() or holes.all():
        return depth_mm.copy()
    index = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
    return depth_mm[tuple(index)]


def telea_fill(depth_mm: np.ndarray, radius_px: int = 5) -> np.ndarray:
    """OpenCV's fast-marching inpainting (Telea 2004) of the holes, on the float depth itself."""
    holes = ~np.isfinite(depth_mm)
    if not holes.any() or holes.all():
        return depth_mm.copy()
    src = np.where(holes, 0, depth_mm).astype(np.float32)
    filled = cv2.inpaint(src, holes.astype(np.uint8), radius_px, cv2.INPAINT_TELEA)
    return np.where(holes, filled, depth_mm).astype(np.float32)


def unreachable_holes(known: np.ndarray, holes: np.ndarray | None = None) -> np.ndarray:
    """Hole pixels whose hole (4-connected) touches no known pixel: nothing can anchor them.
    holes: the pixels to fill (default: every pixel not known); others are neither filled nor read."""
    holes = ~known if holes is None else holes & ~known
    labels, count = ndimage.label(holes)
    if count == 0:
        return np.zeros_like(known)
    border = ndimage.binary_dilation(known) & holes  # hole pixels next to a known one
    anchored = np.zeros(count + 1, dtype=bool)
    anchored[np.unique(labels[border])] = True
    anchored[0] = True  # label 0 = not a hole
    return ~anchored[labels]


def harmonic_fill(values: np.ndarray, known: np.ndarray | None = None, holes: np.ndarray | None = None,
                  pair_weights: PairWeights | None = None) -> np.ndarray:
    """Fill the unknown pixels with the solution of Laplace's equation, known pixels fixed.

    Each unknown pixel ends up the mean of its 4 neighbours (pixels outside the image do not
    count), so a hole is spanned by the smoothest surface meeting its border. Holes that touch no
    known pixel stay NaN. Large systems are solved coarse-to-fine: on a 2x coarser grid first
    (recursively, down to DIRECT_SOLVE_MAX_UNKNOWNS unknowns, solved directly), then refined with
    Jacobi-preconditioned conjugate gradients from the upsampled coarse solution.

    Args:
        values: (H, W) float; read only where `known`.
        known: (H, W) bool; defaults to the finite pixels of `values`.
        holes: (H, W) bool, the pixels to fill (default: all not known). A pixel neither known nor
            a hole is a wall: no neighbour reads it (a zero-flux, Neumann, boundary).
        pair_weights: (h, w) -> (horizontal (h, w-1), vertical (h-1, w)) weights of each pair of
            neighbours at that grid size (numeric.guided_fill: by how alike two pixels look); each
            unknown pixel is then their weighted mean. None: every pair weighs 1.

    Returns:
        (H, W) float32: `values` on known pixels, the (weighted) harmonic interpolation in the holes,
        NaN elsewhere.
    """
    values = np.asarray(values, dtype=np.float64)
    known = np.isfinite(values) if known is None else np.asarray(known, dtype=bool) & np.isfinite(values)
    holes = ~known if holes is None else np.asarray(holes, dtype=bool) & ~known
    out = np.where(known, values, np.nan)
    solvable = holes & ~unreachable_holes(known, holes)
    if solvable.any():
        out[solvable] = _solve_laplace(np.where(known, values, 0.0), known, solvable, pair_weights)
    return out.astype(np.float32)


def smooth_fill(values, known=None, max_pixels: int | None = None) -> np.ndarray:
    """`harmonic_fill` of a low-frequency field, solved at most at `max_pixels` pixels.

    The field is area-averaged over its known pixels down to that size, filled there and
    upsampled bilinearly: a residual between a camera and a prediction varies slowly, so the
    full-resolution solve would cost several times more for sub-millimetre differences.
    Known pixels keep their own values.
    """
    values = np.asarray(values, dtype=np.float32)
    known = np.isfinite(values) if known is None else np.asarray(known, dtype=bool) & np.isfinite(values)
    h, w = known.shape
    if max_pixels is None or h * w <= max_pixels:
        return harmonic_fill(values, known)
    factor = float(np.sqrt(h * w / max_pixels))
    coarse = masked_area_resize(values, known, (max(int(h / factor), 2), max(int(w / factor), 2)))[0]
    filled = cv2.resize(harmonic_fill(coarse), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(known, values, filled)


def _laplace_system(values, known, unknown, pair_weights: PairWeights | None = None):
    """The 5-point (weighted) Laplace system ``A x = b`` over the `unknown` pixels; a neighbour
    neither known nor unknown (outside the image, a wall) is not read (Neumann)."""
    h, w = unknown.shape
    index = np.full((h, w), -1, dtype=np.int64)
    n = int(unknown.sum())
    index[unknown] = np.arange(n)
    degree = np.zeros((h, w))
    rhs = np.zeros((h, w))
    rows, cols, entries = [], [], []
    weights = pair_weights((h, w)) if pair_weights is not None else (1.0, 1.0)
    for dy, dx in _NEIGHBOURS:
        # (a -> b): pixel a and its neighbour b = a + (dy, dx), both inside the image.
        a = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
        b = (slice(max(dy, 0), h - max(-dy, 0)), slice(max(dx, 0), w - max(-dx, 0)))
        weight = np.broadcast_to(weights[dx == 0], unknown[a].shape)  # the pair's, either way round
        ua, ub, kb = unknown[a], unknown[b], known[b]
        degree[a] += np.where(ua & (ub | kb), weight, 0.0)
        rhs[a] += np.where(ua & kb, weight * values[b], 0.0)
        pair = ua & ub
        rows.append(index[a][pair])
        cols.append(index[b][pair])
        entries.append(-weight[pair])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.csr_matrix((np.concatenate(entries), (rows, cols)), shape=(n, n))
    matrix = matrix + sparse.diags(degree[unknown])
    return matrix.tocsr(), rhs[unknown]


def _solve_laplace(values, known, unknown, pair_weights: PairWeights | None = None) -> np.ndarray:
    """The unknown pixels' values (1-D, in row-major order) of the (weighted) harmonic fill."""
    matrix, rhs = _laplace_system(values, known, unknown, pair_weights)
    n = rhs.size
    # A weighted system is solved directly at any size: its weights span four orders of magnitude,
    # and conjugate gradients from a coarse start stayed millimetres off after hundreds of iterations
    # (benchmarks/RESULTS.md, issue 33).
    if n <= DIRECT_SOLVE_MAX_UNKNOWNS or min(known.shape) < 8 or pair_weights is not None:
        return sparse_linalg.spsolve(matrix.tocsc(), rhs)
    start = _coarse_start(values, known, unknown)
    preconditioner = sparse.diags(1.0 / matrix.diagonal())
    solution, info = sparse_linalg.cg(matrix, rhs, x0=start, M=preconditioner, maxiter=REFINE_ITERATIONS)
    if info < 0:  # a breakdown, not just "not converged": the refinement cannot be trusted
        raise FloatingPointError(f"conjugate gradients broke down (info {info}) on {n} unknowns")
    if info > 0:
        # Not converged in the iterations allowed: the coarse start is close, so the result is still
        # usable; log how far it is, the caller decides nothing differently.
        residual = np.linalg.norm(matrix @ solution - rhs) / max(np.linalg.norm(rhs), 1e-12)
        logger.info("harmonic fill: CG stopped after %d iterations, relative residual %.2e", info, residual)
    return solution


def _coarse_start(values, known, unknown) -> np.ndarray:
    """An initial guess for the unknown pixels: the fill on a 2x coarser grid (a cell is known if any
    of its pixels is, with their mean; a hole if any of its pixels is one and none is known; a wall
    otherwise), upsampled."""
    h, w = known.shape
    size = ((h + 1) // 2, (w + 1) // 2)
    coarse, coverage = masked_area_resize(values, known, size)
    coarse_holes = (masked_area_resize(unknown.astype(np.float32), np.ones_like(unknown), size)[0] > 0) \
        & (coverage == 0)
    # Cells of holes that touch nothing stay NaN on the coarse grid; they are not solved for here.
    filled = np.nan_to_num(harmonic_fill(coarse, coverage > 0, coarse_holes))
    return cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)[unknown].astype(np.float64)
