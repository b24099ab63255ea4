"""An error bar on every filled pixel, learned without labels from the user's own captures.

The expected error of a fill grows with what is not known at fill time. Two things are known for
every filled pixel and say most of it:

- how far it lies from the nearest measured pixel, as a share of the image diagonal (the same at
  every resolution);
- how much two fills that read the measured depth differently disagree there: the fill itself and
  the nearest measured pixel's depth, |fill - nearest| in mm (0 on a flat surface, large behind an
  edge or inside a part whose border is at several depths).

`FillErrorModel.fit` learns sigma from pixels hidden on captures the camera measured (the ground
truth is the camera's value, as `evaluate --holes` scores): quantile bins of each feature, and in
each bin of the two the 90th percentile of the absolute error divided by 1.645, so that
fill +- 1.645 sigma is a 90 % interval on the calibration pixels; made monotone (never smaller
farther from a measurement, or with more disagreement). Pure arrays; no model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from depth_lora.numeric.fill import nearest_fill

FORMAT_VERSION = 1
SIGMA_FLOOR_MM = 0.5  # no filled pixel is expected to be better than this (a camera's own noise)
BINS = 6  # quantile bins per feature
MIN_BIN_PIXELS = 30  # a bin with fewer calibration pixels takes its nearer neighbour's sigma
Z_90 = 1.645  # a normal distribution's 95th percentile: +- 1.645 sigma covers 90 %


def fill_features(depth_mm: np.ndarray, filled_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance share, disagreement mm), each (H, W) float32: distance to the nearest measured pixel
    of `depth_mm` over the image diagonal, and |filled - nearest measured depth| (module docstring);
    0 and 0 on measured pixels."""
    measured = np.isfinite(depth_mm)
    distance = ndimage.distance_transform_edt(~measured) / float(np.hypot(*depth_mm.shape))
    disagreement = np.abs(np.nan_to_num(filled_mm - nearest_fill(np.where(measured, depth_mm, np.nan))))
    return distance.astype(np.float32), disagreement.astype(np.float32)


@dataclass
class FillErrorModel:
    """sigma (mm) of a fill by (distance, disagreement) bin; see the module docstring.

    distance_edges / disagreement_edges: the inner bin edges (BINS - 1 each); sigma_mm: BINS x BINS
    table; fill: the fill it was learned for; pixels and captures: how much it was learned from;
    settings: how the fill and the calibration were set up (a model learned otherwise is stale)."""

    distance_edges: list[float]
    disagreement_edges: list[float]
    sigma_mm: list[list[float]]
    fill: str
    pixels: int
    captures: int
    settings: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def fit(cls, distance: np.ndarray, disagreement: np.ndarray, abs_error: np.ndarray, fill: str,
            captures: int, settings: dict | None = None) -> FillErrorModel:
        """Learn sigma from calibration pixels (1-D arrays of the same length: each hidden pixel's
        features and its fill's absolute error in mm). ValueError if there are too few."""
        distance, disagreement, abs_error = (np.asarray(a, dtype=np.float64).ravel()
                                             for a in (distance, disagreement, abs_error))
        if abs_error.size < MIN_BIN_PIXELS * 4:
            raise ValueError(f"{abs_error.size} calibration pixels: at least {MIN_BIN_PIXELS * 4} needed")
        quantiles = np.linspace(0, 1, BINS + 1)[1:-1]
        d_edges = np.unique(np.quantile(distance, quantiles))
        g_edges = np.unique(np.quantile(disagreement, quantiles))
        d_bin, g_bin = np.digitize(distance, d_edges), np.digitize(disagreement, g_edges)
        table = np.full((d_edges.size + 1, g_edges.size + 1), np.nan)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                errors = abs_error[(d_bin == i) & (g_bin == j)]
                if errors.size >= MIN_BIN_PIXELS:
                    table[i, j] = np.quantile(errors, 0.9) / Z_90
        overall = np.quantile(abs_error, 0.9) / Z_90
        table = _fill_gaps(table, overall)
        table = np.maximum.accumulate(np.maximum.accumulate(table, axis=0), axis=1)  # monotone
        table = np.maximum(table, SIGMA_FLOOR_MM)
        return cls(d_edges.tolist(), g_edges.tolist(), table.tolist(), fill, int(abs_error.size),
                   int(captures), dict(settings or {}))

    def sigma(self, distance: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
        """sigma (mm, float32) for features of any shape (`fill_features`)."""
        table = np.asarray(self.sigma_mm)
        i = np.digitize(distance, self.distance_edges)
        j = np.digitize(disagreement, self.disagreement_edges)
        return table[i, j].astype(np.float32)

    def sigma_map(self, depth_mm: np.ndarray, filled_mm: np.ndarray) -> np.ndarray:
        """(H, W) sigma in mm of each filled pixel of `filled_mm` (the fill of `depth_mm`'s holes);
        NaN on measured pixels and where nothing was filled."""
        measured = np.isfinite(depth_mm)
        sigma = self.sigma(*fill_features(depth_mm, filled_mm))
        return np.where(measured | ~np.isfinite(filled_mm), np.nan, sigma).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FillErrorModel:
        """The model from its JSON; ValueError for another format version or missing fields."""
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"fill error model format {data.get('format_version')!r}, this version reads "
                             f"{FORMAT_VERSION}")
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except KeyError as exc:
            raise ValueError(f"fill error model without {exc}") from None


def _fill_gaps(table: np.ndarray, overall: float) -> np.ndarray:
    """Bins with too few pixels take the next filled bin above them in their row (more disagreement:
    the larger, cautious sigma), else below it, then the same along their column, else `overall`."""
    table = table.copy()
    for axis in (1, 0):
        moved = np.moveaxis(table, axis, 0)  # a view: filling it fills `table`
        for k in range(moved.shape[0] - 2, -1, -1):
            moved[k] = np.where(np.isnan(moved[k]), moved[k + 1], moved[k])
        for k in range(1, moved.shape[0]):
            moved[k] = np.where(np.isnan(moved[k]), moved[k - 1], moved[k])
    return np.where(np.isnan(table), overall, table)


def coverage(abs_error: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """(share of pixels whose absolute error lies within +- Z_90 sigma, median interval width in mm)."""
    ok = np.isfinite(abs_error) & np.isfinite(sigma)
    if not ok.any():
        return float("nan"), float("nan")
    return float(np.mean(abs_error[ok] <= Z_90 * sigma[ok])), float(np.median(2 * Z_90 * sigma[ok]))
