"""What every runtime of an exported model shares: image in, the graph's labels, depth in mm out.

An exported graph (ONNX or OpenVINO IR, see export.py) takes images already resized to the model's
input size as uint8 (B, h, w, 3) and returns the model's labels (B, h, w) float32. A bundle resizes
the images as training did, runs the graph in its runtime, upsamples the labels to each image's
resolution and decodes them to mm with the label scheme recorded in depth_lora.json, exactly as
`predict.ModelBundle` does, so `predict_files` and `complete` take either.

A completion run's graph takes the images and the prompt (`PROMPT_NAME`: data.completion.build_prompt
of the measured depth, (B, C, h', w') float32 mm) and returns depth in mm (`DEPTH_NAME`, (B, h, w));
its bundle has `predict_completion`, like ModelBundle's, which `complete` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from depth_lora.data.completion import capture_prompt
from depth_lora.data.dataset import LabelScheme, resize_rgb
from depth_lora.inference.predict import upsample
from depth_lora.runs.folder import RunRecord
from depth_lora.runs.task import require_task, task_of

INPUT_NAME, OUTPUT_NAME = "image", "labels"  # the graph's input and output names, in every format
PROMPT_NAME, DEPTH_NAME = "prompt_depth", "depth_mm"  # a completion graph's second input, its output


@dataclass
class ExportedBundle:
    """An exported model opened in one runtime; subclasses say how to run a batch (`run_batch`)."""

    labels: LabelScheme | None  # None for a completion run
    image_size_hw: tuple[int, int]
    record: RunRecord
    folder: Path
    model_path: Path

    runtime = "?"  # the runtime's name, as messages print it
    device = "CPU"  # where it runs

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 at the model size -> (B, h, w) float32 labels."""
        raise NotImplementedError

    def run_completion(self, batch: np.ndarray, prompt: np.ndarray) -> np.ndarray:
        """A completion graph: (B, h, w, 3) uint8 and (B, C, h', w') float32 -> (B, h, w) mm."""
        raise NotImplementedError

    def predict_completion(self, rgb: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """A completion run's depth in mm for one capture at the image's (H, W), as
        predict.ModelBundle.predict_completion computes it."""
        require_task(self.record, self.folder, "complete", "complete a capture from the measured depth")
        prompt = capture_prompt(depth_mm, self.image_size_hw, self.record.completion)
        small = resize_rgb(rgb, self.image_size_hw)[None]
        depth = self.run_completion(np.ascontiguousarray(small), prompt[None])[0]
        return upsample(torch.from_numpy(np.ascontiguousarray(depth)), rgb.shape[:2]).numpy()

    def predict_labels(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """The graph's output for a batch of (H, W, 3) uint8 images of any sizes: (B, h, w) labels."""
        require_task(self.record, self.folder, "depth", "predict depth from an image alone")
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


def record_labels(record: RunRecord) -> LabelScheme | None:
    """An export's label scheme, None for a completion run (its graph returns mm)."""
    return task_of(record).labels(record)
