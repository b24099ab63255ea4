"""What every runtime of an exported model shares: image in, the graph's labels, depth in mm out.

An exported graph (ONNX or OpenVINO IR, see export.py) takes images already resized to the model's
input size as uint8 (B, h, w, 3) and returns the model's labels (B, h, w) float32. A bundle resizes
the images as training did, runs the graph in its runtime, upsamples the labels to each image's
resolution and decodes them to mm with the label scheme recorded in depth_lora.json, exactly as
`predict.ModelBundle` does, so `predict_files` and `complete` take either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from depth_lora.data.dataset import LabelScheme, resize_rgb
from depth_lora.inference.predict import upsample
from depth_lora.runs.folder import RunRecord

INPUT_NAME, OUTPUT_NAME = "image", "labels"  # the graph's input and output names, in every format


@dataclass
class ExportedBundle:
    """An exported model opened in one runtime; subclasses say how to run a batch (`run_batch`)."""

    labels: LabelScheme
    image_size_hw: tuple[int, int]
    record: RunRecord
    folder: Path
    model_path: Path

    runtime = "?"  # the runtime's name, as messages print it
    device = "CPU"  # where it runs
    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 at the model size -> (B, h, w) float32 labels."""
        raise NotImplementedError

    def predict_labels(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """The graph's output for a batch of (H, W, 3) uint8 images of any sizes: (B, h, w) labels."""
        return self.run_batch(np.stack([resize_rgb(rgb, self.image_size_hw) for rgb in rgbs]))

    def predict_raw(self, rgb: np.ndarray) -> np.ndarray:
        """One image's labels upsampled to its (H, W), float32 (what `complete` fits)."""
        return upsample(torch.from_numpy(self.predict_labels([rgb])[0]), rgb.shape[:2]).numpy()

    def predict_mm(self, rgbs: list[np.ndarray]) -> list[np.ndarray]:
        """Depth in mm for a batch of images (any sizes), each at its own resolution."""
        out = []
        for label, rgb in zip(self.predict_labels(rgbs), rgbs, strict=True):
            up = upsample(torch.from_numpy(np.ascontiguousarray(label)), rgb.shape[:2])
            out.append(self.labels.decode(up).numpy().astype(np.float32))
        return out
