"""Captures as the model sees them: resized like the checkpoint's processor, labels and valid masks.

Every capture is decoded and resized once, and cached on disk (depth_lora.data.cache) so that a re-run
skips even that (the original decoded a 1200x1944 PNG and a 28 MB XYZ array on every access, and
interpolated labels on every step); labels are encoded once. The Dataset then serves uint8 images
and ready labels from memory; normalisation and augmentation run per batch on the training device
(depth_lora.data.transforms).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from depth_lora.data.cache import ArrayCache, default_cache_dir, entry_key
from depth_lora.data.captures import Capture, CaptureFiles, load_capture
from depth_lora.data.transforms import normalize, to_unit_range
from depth_lora.errors import ConfigError
from depth_lora.numeric.resize import masked_area_resize
from depth_lora.text import live_progress

PATCH = 14
TARGET_SIDE = 518
# A resized depth pixel is a label only if measured pixels cover at least this share of it.
MIN_COVERAGE = 0.5


def processor_size_hw(h: int, w: int, target: int = TARGET_SIDE, multiple: int = PATCH) -> tuple[int, int]:
    """Model input size for an h x w image, as the DPT/Depth Anything processor computes it.

    Keep the aspect ratio, scale so that the side needing the least change reaches `target`
    (for landscape images: the height), then round each side to a multiple of `multiple`.
    1200x1944 -> 518x840.
    """
    scale_h, scale_w = target / h, target / w
    scale = scale_h if abs(1 - scale_h) < abs(1 - scale_w) else scale_w
    return tuple(max(multiple, int(round(s * scale / multiple)) * multiple) for s in (h, w))


def default_image_size(sizes_hw: list[tuple[int, int]]) -> tuple[int, int]:
    """Training size for a dataset: the processor size of its most common capture size."""
    (h, w), _ = Counter(sizes_hw).most_common(1)[0]
    return processor_size_hw(h, w)


LABEL_KINDS = ("minmax", "inverse", "metric")
METRIC_HEAD_UNIT_MM = 1000.0  # Depth Anything's metric heads predict metres


@dataclass(frozen=True)
class LabelScheme:
    """How depth in mm becomes the model's target and back.

    minmax: label = (z - min) / (max - min); inverse: label = min / z (near = large, like the
    disparity Depth Anything predicts). min/max are the training split's valid depth range in mm.
    metric: label = z in metres, the unit of a metric head (min/max only recorded).
    """

    kind: str
    depth_min_mm: float
    depth_max_mm: float

    def __post_init__(self):
        if self.kind not in LABEL_KINDS:
            raise ConfigError(f"label scheme must be one of {', '.join(LABEL_KINDS)}, got {self.kind!r}")
        if not 0 < self.depth_min_mm < self.depth_max_mm:
            raise ConfigError(f"bad depth range {self.depth_min_mm}..{self.depth_max_mm} mm")

    def encode(self, depth_mm):
        """Depth (mm, tensor or array) -> label."""
        if self.kind == "minmax":
            return (depth_mm - self.depth_min_mm) / (self.depth_max_mm - self.depth_min_mm)
        if self.kind == "metric":
            return depth_mm / METRIC_HEAD_UNIT_MM
        return self.depth_min_mm / depth_mm

    def decode(self, label):
        """Model output -> depth in mm (tensor or array); inverse labels are floored so that a
        zero output (the head ends in a ReLU) maps to 4x the largest training depth, not infinity."""
        if self.kind == "minmax":
            return label * (self.depth_max_mm - self.depth_min_mm) + self.depth_min_mm
        if self.kind == "metric":
            return label * METRIC_HEAD_UNIT_MM
        floor = self.depth_min_mm / (4 * self.depth_max_mm)
        clipped = label.clip(min=floor) if hasattr(label, "clip") else max(label, floor)
        return self.depth_min_mm / clipped

    def to_dict(self) -> dict:
        return {"kind": self.kind, "depth_min_mm": self.depth_min_mm, "depth_max_mm": self.depth_max_mm}


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8, bicubic like the checkpoint's processor."""
    if rgb.shape[:2] == tuple(size_hw):
        return rgb
    return np.array(Image.fromarray(rgb).resize((size_hw[1], size_hw[0]), Image.BICUBIC))


def resize_depth(
    depth_mm: np.ndarray, size_hw: tuple[int, int], min_coverage: float = MIN_COVERAGE
) -> tuple[np.ndarray, np.ndarray]:
    """Resize depth so that holes never leak into labels.

    Each output pixel is the mean of the *valid* input depths it covers (area interpolation of
    depth x mask, divided by that of the mask), so a hole never pulls a label towards 0 or NaN;
    it is valid only if valid pixels cover at least `min_coverage` of its footprint. Upsampling
    copies the nearest pixel.

    Returns (depth_mm (h, w) float32 with NaN where invalid, valid (h, w) bool).
    """
    valid = np.isfinite(depth_mm)
    if depth_mm.shape == tuple(size_hw):
        return depth_mm.astype(np.float32), valid
    mean, coverage = masked_area_resize(depth_mm, valid, size_hw)
    out_valid = (coverage >= min_coverage - 1e-6) & (coverage > 0)
    return np.where(out_valid, mean, np.nan).astype(np.float32), out_valid


@dataclass
class PreparedCapture:
    """A capture at the model's input size. rgb (h, w, 3) uint8; depth_mm (h, w) float32 NaN holes."""

    key: str
    rgb: np.ndarray
    depth_mm: np.ndarray
    original_size_hw: tuple[int, int]


def prepare_capture(capture: Capture, size_hw: tuple[int, int]) -> PreparedCapture:
    depth, _ = resize_depth(capture.depth_mm, size_hw)
    return PreparedCapture(capture.key, resize_rgb(capture.rgb, size_hw), depth, capture.size_hw)


def model_input_view(capture: Capture, image_size_hw=None) -> Capture:
    """`capture` as the model sees it: resized to `image_size_hw` (default: like the checkpoint's
    processor), the depth labels averaged over measured pixels only. For showing, not training."""
    size_hw = tuple(image_size_hw) if image_size_hw else default_image_size([capture.size_hw])
    seen = prepare_capture(capture, size_hw)
    return Capture(f"{capture.key}, as the model sees it", seen.rgb, seen.depth_mm)


def rgb_to_pixel_values(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32, ImageNet-normalised."""
    return normalize(to_unit_range(torch.as_tensor(rgb).movedim(-1, -3)))


class DepthDataset(torch.utils.data.Dataset):
    """Prepared captures -> {"pixel_values", "labels", "valid_mask"} items, served from memory.

    pixel_values: (3, h, w) uint8, normalised (and augmented in training) per batch on the device
    by DepthTrainer's transforms.BatchTransform; labels: (h, w) float32, encoded once here (0 where
    invalid); valid_mask: (h, w) bool.
    """

    def __init__(self, captures: list[PreparedCapture], labels: LabelScheme):
        self.captures = captures
        self.labels = labels
        self._targets = [self._encode(c.depth_mm) for c in captures]

    def _encode(self, depth_mm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        depth = torch.from_numpy(depth_mm)
        valid = torch.isfinite(depth)
        labels = self.labels.encode(depth.nan_to_num(self.labels.depth_min_mm))
        return torch.where(valid, labels, 0.0).float(), valid

    def __len__(self) -> int:
        return len(self.captures)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels, valid = self._targets[i]
        pixels = torch.from_numpy(self.captures[i].rgb).permute(2, 0, 1)  # (3, h, w) uint8, a view
        return {"pixel_values": pixels, "labels": labels, "valid_mask": valid}


def open_cache(enabled: bool = True) -> ArrayCache | None:
    """The prepared-capture cache in its default folder (see depth_lora.data.cache), or None if disabled."""
    return ArrayCache(default_cache_dir()) if enabled else None


def load_prepared(
    files: CaptureFiles, size_hw: tuple[int, int], depth_unit: str = "mm", cache: ArrayCache | None = None
) -> PreparedCapture:
    """One capture at `size_hw`: from `cache` if it holds it for these very files, else decoded,
    resized and stored there."""
    params = {"size_hw": list(size_hw), "depth_unit": depth_unit, "min_coverage": MIN_COVERAGE}
    key = entry_key([files.image, files.depth], params) if cache is not None else None
    cached = _from_arrays(files.key, cache.get(key), size_hw) if key is not None else None
    if cached is not None:
        return cached
    prepared = prepare_capture(load_capture(files, depth_unit), size_hw)
    if key is not None:
        cache.put(key, {"rgb": prepared.rgb, "depth_mm": prepared.depth_mm,
                        "original_size_hw": np.asarray(prepared.original_size_hw, dtype=np.int64)})
    return prepared


def _from_arrays(key: str, arrays: dict | None, size_hw: tuple[int, int]) -> PreparedCapture | None:
    """A cache entry back as a PreparedCapture; None if it lacks an array or has the wrong shapes."""
    arrays = arrays or {}
    rgb, depth, original = (arrays.get(k) for k in ("rgb", "depth_mm", "original_size_hw"))
    shapes = [getattr(a, "shape", None) for a in (rgb, depth, original)]
    if shapes != [(*size_hw, 3), tuple(size_hw), (2,)] or rgb.dtype != np.uint8 or depth.dtype != np.float32:
        return None
    return PreparedCapture(key, rgb, depth, (int(original[0]), int(original[1])))


def prepare_captures(
    files: list[CaptureFiles],
    size_hw: tuple[int, int],
    depth_unit: str = "mm",
    progress: bool = True,
    cache: bool | ArrayCache | None = True,
) -> list[PreparedCapture]:
    """Load and resize captures once (each full-size capture is dropped right after).

    cache: True: the on-disk cache in its default folder (depth_lora.data.cache); an ArrayCache: that
    one; False/None: decode every capture.
    """
    store = open_cache() if cache is True else (cache or None)
    return [
        load_prepared(f, size_hw, depth_unit, store)
        for f in tqdm(files, desc=f"prepare {size_hw[0]} x {size_hw[1]}", unit="capture",
                      disable=not (progress and live_progress()))
    ]


def depth_range_mm(captures: list[PreparedCapture], percentiles=(0.0, 100.0)) -> tuple[float, float]:
    """(lo, hi) percentiles of the valid depths in mm, pooled over prepared captures.

    (0, 100) is the plain min and max (the original project's range); (0.5, 99.5) ignores the
    stray 1 % of pixels (flying pixels, a far wall) that would otherwise set the label scale.
    """
    valid = np.concatenate([c.depth_mm[np.isfinite(c.depth_mm)] for c in captures])
    if valid.size == 0:
        raise ConfigError("no valid depth pixel in the training captures")
    lo, hi = (float(v) for v in np.percentile(valid, list(percentiles)))
    if not math.isfinite(lo) or hi <= lo:
        hi = lo + 1.0
    return lo, hi
