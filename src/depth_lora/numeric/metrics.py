"""Depth metrics in millimetres: pure functions, numpy arrays in, ``dict[str, float]`` out.

Two ways to summarise a set of captures, which differ when captures have different numbers of
valid pixels or different error levels:

- **per capture, then averaged** (``depth_metrics`` on each, ``mean_over_captures``): every
  capture weighs the same, as in most depth papers (NYUv2 / KITTI tables);
- **pooled** (``PooledDepthMetrics``): sums over all valid pixels of all captures, so a capture
  with many valid pixels weighs more; RMSE is the root of the pooled mean square.

A pixel is valid where the mask is True, the target is finite and > 0, and the prediction is
finite. The prediction is floored at ``EPS_MM`` for the log and ratio metrics only.
"""

from __future__ import annotations

import numpy as np

EPS_MM = 1e-6  # floor for predictions in logs and ratios (a ReLU head can output 0)
DELTA_BASE = 1.25

# Sums that every metric is computed from; pooled metrics add them over captures.
_SUM_KEYS = ("n", "abs_rel", "sq_rel", "sq_err", "abs_err", "log_sq", "log_sum", "log10_abs")
_DELTA_KEYS = ("delta1", "delta2", "delta3")


def _tolerance_key(tolerance_mm: float) -> str:
    return f"within_{float(tolerance_mm):g}mm"


def valid_depth_mask(pred, target_mm, valid_mask=None) -> np.ndarray:
    """Pixels usable for scoring: mask True, target finite and > 0, prediction finite.

    Args:
        pred: (H, W) prediction (depth in mm, or any finite-valued map).
        target_mm: (H, W) measured depth in mm; NaN, inf and values <= 0 are invalid.
        valid_mask: optional (H, W) bool.

    Returns:
        (H, W) bool array.
    """
    pred = np.asarray(pred)
    target = np.asarray(target_mm)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    valid = np.isfinite(target) & np.isfinite(pred)
    valid[valid] &= target[valid] > 0  # compare only finite values: no NaN warnings
    if valid_mask is not None:
        mask = np.asarray(valid_mask, dtype=bool)
        if mask.shape != target.shape:
            raise ValueError(f"valid_mask {mask.shape} and target {target.shape} differ in shape")
        valid &= mask
    return valid


def _valid_pairs(pred_mm, target_mm, valid_mask) -> tuple[np.ndarray, np.ndarray]:
    """The valid (pred, target) values as flat float64 arrays."""
    pred = np.asarray(pred_mm, dtype=np.float64)
    target = np.asarray(target_mm, dtype=np.float64)
    valid = valid_depth_mask(pred, target, valid_mask)
    return pred[valid], target[valid]


def _sums(pred: np.ndarray, target: np.ndarray, tolerances_mm) -> dict[str, float]:
    """Per-pixel terms summed over the given valid pixels (flat float64 arrays, mm)."""
    err = pred - target
    pred_pos = np.maximum(pred, EPS_MM)
    log_diff = np.log(pred_pos) - np.log(target)
    ratio = np.maximum(pred_pos / target, target / pred_pos)
    sums = {
        "n": float(target.size),
        "abs_rel": float(np.sum(np.abs(err) / target)),
        "sq_rel": float(np.sum(err**2 / target)),
        "sq_err": float(np.sum(err**2)),
        "abs_err": float(np.sum(np.abs(err))),
        "log_sq": float(np.sum(log_diff**2)),
        "log_sum": float(np.sum(log_diff)),
        "log10_abs": float(np.sum(np.abs(np.log10(pred_pos) - np.log10(target)))),
    }
    for k, key in enumerate(_DELTA_KEYS, start=1):
        sums[key] = float(np.count_nonzero(ratio < DELTA_BASE**k))
    for tolerance in tolerances_mm:
        sums[_tolerance_key(tolerance)] = float(np.count_nonzero(np.abs(err) <= tolerance))
    return sums


def _metrics_from_sums(sums: dict[str, float]) -> dict[str, float] | None:
    n = sums["n"]
    if n == 0:
        return None
    mean_log = sums["log_sum"] / n
    mean_log_sq = sums["log_sq"] / n
    metrics = {
        "abs_rel": sums["abs_rel"] / n,
        "sq_rel": sums["sq_rel"] / n,
        "rmse_mm": float(np.sqrt(sums["sq_err"] / n)),
        "mae_mm": sums["abs_err"] / n,
        "rmse_log": float(np.sqrt(mean_log_sq)),
        "log10": sums["log10_abs"] / n,
        # max(0, .): rounding can make a zero variance slightly negative.
        "silog": float(np.sqrt(max(mean_log_sq - mean_log**2, 0.0)) * 100),
    }
    for key in sums:
        if key.startswith(("delta", "within_")):
            metrics[key] = sums[key] / n
    metrics["valid_pixels"] = int(n)
    return metrics


def depth_metrics(
    pred_mm, target_mm, valid_mask=None, tolerances_mm=(5.0, 10.0)
) -> dict[str, float] | None:
    """Standard depth metrics of one capture over its valid pixels.

    Args:
        pred_mm: predicted depth (H, W) in mm.
        target_mm: measured depth (H, W) in mm; NaN, inf and values <= 0 are invalid.
        valid_mask: optional (H, W) bool, True where the pixel may be used.
        tolerances_mm: absolute tolerances for the ``within_<tol>mm`` fractions.

    Returns:
        ``None`` when no pixel is valid, else a dict with, over valid pixels p (pred) and t:

        - ``abs_rel`` mean(|p - t| / t); ``sq_rel`` mean((p - t)^2 / t), in mm;
        - ``rmse_mm`` sqrt(mean((p - t)^2)); ``mae_mm`` mean(|p - t|);
        - ``rmse_log`` sqrt(mean(d^2)) with d = ln p - ln t; ``log10`` mean(|log10 p - log10 t|);
        - ``silog`` sqrt(mean(d^2) - mean(d)^2) * 100 (KITTI-style: the standard deviation of the
          log error, x100; insensitive to a global scale error);
        - ``delta1..3`` fraction with max(p / t, t / p) < 1.25^k;
        - ``within_<tol>mm`` fraction with |p - t| <= tol (e.g. ``within_5mm``, ``within_2.5mm``);
        - ``valid_pixels`` number of pixels used.

        p is floored at ``EPS_MM`` in the log and delta metrics.
    """
    pred, target = _valid_pairs(pred_mm, target_mm, valid_mask)
    return _metrics_from_sums(_sums(pred, target, tolerances_mm))


def mean_over_captures(per_capture: list[dict[str, float] | None]) -> dict[str, float]:
    """Average per-capture metrics; every capture with a valid pixel weighs the same.

    Args:
        per_capture: ``depth_metrics`` results; ``None`` (no valid pixel) entries are skipped.

    Returns:
        The mean of each metric over the captures used, except ``valid_pixels``, which is their
        total; plus ``captures`` (number used) and ``captures_skipped`` (number of ``None``).
        With no usable capture only the two counts are present.
    """
    used = [m for m in per_capture if m is not None]
    result: dict[str, float] = {}
    if used:
        for key in used[0]:
            values = [m[key] for m in used]
            result[key] = int(sum(values)) if key == "valid_pixels" else float(np.mean(values))
    result["captures"] = len(used)
    result["captures_skipped"] = len(per_capture) - len(used)
    return result


class PooledDepthMetrics:
    """Accumulate depth metrics over all valid pixels of many captures (pooled, not averaged).

    ``update`` once per capture, then ``compute``: the result is what ``depth_metrics`` would give
    on all captures' valid pixels concatenated, with the same keys, plus ``captures`` and
    ``captures_skipped`` (captures without a valid pixel). Memory stays constant: only sums are
    kept.

    Args:
        tolerances_mm: absolute tolerances for the ``within_<tol>mm`` fractions.
    """

    def __init__(self, tolerances_mm=(5.0, 10.0)):
        self.tolerances_mm = tuple(tolerances_mm)
        self.reset()

    def reset(self) -> None:
        """Forget every capture seen so far."""
        keys = _SUM_KEYS + _DELTA_KEYS + tuple(map(_tolerance_key, self.tolerances_mm))
        self._sums = dict.fromkeys(keys, 0.0)
        self.captures = 0
        self.captures_skipped = 0

    def update(self, pred_mm, target_mm, valid_mask=None) -> None:
        """Add one capture: pred_mm, target_mm (H, W) in mm, optional valid_mask (H, W) bool."""
        pred, target = _valid_pairs(pred_mm, target_mm, valid_mask)
        if target.size == 0:
            self.captures_skipped += 1
            return
        self.captures += 1
        for key, value in _sums(pred, target, self.tolerances_mm).items():
            self._sums[key] += value

    def compute(self) -> dict[str, float] | None:
        """The pooled metrics (see ``depth_metrics`` for the keys), or None if no valid pixel."""
        metrics = _metrics_from_sums(self._sums)
        if metrics is not None:
            metrics["captures"] = self.captures
            metrics["captures_skipped"] = self.captures_skipped
        return metrics


BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci95(values, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the mean of `values` (one value per capture).

    Captures are resampled with replacement `n_resamples` times (seeded: the same values give the
    same interval). With one value the interval is that value; with none, [nan, nan].
    """
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_with_ci95(per_capture: list[dict[str, float] | None], keys) -> dict[str, float]:
    """``mean_over_captures`` plus ``<key>_ci95`` (a bootstrap interval over captures) for `keys`."""
    summary = mean_over_captures(per_capture)
    used = [m for m in per_capture if m is not None]
    for key in keys:
        if used and key in used[0]:
            summary[f"{key}_ci95"] = bootstrap_ci95([m[key] for m in used])
    return summary
