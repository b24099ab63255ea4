"""Captures as the model sees them: resized like the checkpoint's processor, labels and valid masks.

Every capture is decoded and resized once (the original decoded a 1200x1944 PNG and a 28 MB
XYZ array on every access, and interpolated labels on every step); the Dataset then serves
tensors from memory and only applies the cheap random augmentations per item.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from depth_lora.data import Capture, CaptureFiles, load_capture
from depth_lora.errors import ConfigError
from depth_lora.text import live_progress

# ImageNet statistics, as Depth Anything's image processor normalises.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
    z = torch.from_numpy(np.where(valid, depth_mm, 0).astype(np.float32))[None, None]
    m = torch.from_numpy(valid.astype(np.float32))[None, None]
    up = size_hw[0] > depth_mm.shape[0] or size_hw[1] > depth_mm.shape[1]
    mode = "nearest" if up else "area"
    z_sum = F.interpolate(z * m, size=tuple(size_hw), mode=mode)[0, 0]
    coverage = F.interpolate(m, size=tuple(size_hw), mode=mode)[0, 0]
    out_valid = (coverage >= min_coverage - 1e-6) & (coverage > 0)
    out = torch.where(out_valid, z_sum / coverage.clamp(min=1e-6), torch.nan)
    return out.numpy().astype(np.float32), out_valid.numpy()


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


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) values in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def rgb_to_pixel_values(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32, ImageNet-normalised."""
    return normalize(torch.as_tensor(rgb).float().div(255.0).movedim(-1, -3))


def color_jitter(x: torch.Tensor, strength: float = 0.1) -> torch.Tensor:
    """Random brightness, contrast, saturation in [1 - s, 1 + s] on (3, H, W) values in [0, 1].

    Written here because torchvision is not a dependency; mild on purpose: brightness carries
    distance under a projector's light falloff.
    """
    b, c, s = (1 + strength * (2 * torch.rand(3) - 1)).tolist()
    x = x * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
    x = (x - gray) * s + gray
    return x.clamp(0, 1)


class DepthDataset(torch.utils.data.Dataset):
    """Prepared captures -> {"pixel_values", "labels", "valid_mask"} items.

    pixel_values: (3, h, w) float32 normalised; labels: (h, w) float32 (0 where invalid);
    valid_mask: (h, w) bool.
    """

    def __init__(
        self,
        captures: list[PreparedCapture],
        labels: LabelScheme,
        flip: bool = False,
        jitter: bool = False,
    ):
        self.captures = captures
        self.labels = labels
        self.flip, self.jitter = flip, jitter

    def __len__(self) -> int:
        return len(self.captures)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        cap = self.captures[i]
        x = torch.from_numpy(cap.rgb).float().div(255.0).permute(2, 0, 1)  # (3, h, w) in [0, 1]
        depth = torch.from_numpy(cap.depth_mm)
        # Augmentations draw from torch's global RNG, which the Trainer seeds (and the DataLoader
        # seeds per worker), so runs are reproducible and every epoch differs.
        if self.flip and torch.rand(1).item() < 0.5:
            x, depth = x.flip(-1), depth.flip(-1)
        if self.jitter:
            x = color_jitter(x)
        valid = torch.isfinite(depth)
        labels = torch.where(valid, self.labels.encode(depth.nan_to_num(self.labels.depth_min_mm)), 0.0)
        return {"pixel_values": normalize(x), "labels": labels.float(), "valid_mask": valid}


def prepare_captures(
    files: list[CaptureFiles], size_hw: tuple[int, int], depth_unit: str = "mm", progress: bool = True
) -> list[PreparedCapture]:
    """Load and resize captures once (each full-size capture is dropped right after)."""
    return [
        prepare_capture(load_capture(f, depth_unit), size_hw)
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
