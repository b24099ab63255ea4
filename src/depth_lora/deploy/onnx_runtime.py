"""Run a model exported by `depth-lora export --format onnx` with onnxruntime: image in, mm out.

The exported graph takes images already resized to the model's input size, as uint8 (B, h, w, 3),
and does the rest of what the PyTorch path does: scale to [0, 1], ImageNet normalisation, the
merged model. It returns the model's labels (B, h, w) float32; this module upsamples them to each
image's resolution and decodes them to mm with the label scheme recorded in depth_lora.json,
exactly as `predict.ModelBundle.predict_mm` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from depth_lora.data.dataset import LabelScheme, resize_rgb
from depth_lora.errors import ConfigError, ModelError
from depth_lora.inference.predict import upsample
from depth_lora.runs.folder import RunRecord, read_record

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAME, OUTPUT_NAME = "image", "labels"
EXPORT_EXTRA = 'pip install -e ".[export]" (onnx, onnxruntime, onnxscript)'


def import_onnxruntime():
    """onnxruntime, or a ConfigError naming the optional extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"ONNX needs the optional export packages: {EXPORT_EXTRA}") from None
    return onnxruntime


def require_export_extra():
    """(onnx, onnxruntime) with onnxscript importable (torch's exporter needs it), or a ConfigError
    naming the optional extra."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the optional export packages ({exc.name} is missing): "
                          f"{EXPORT_EXTRA}") from None
    return onnx, import_onnxruntime()


@dataclass
class OnnxBundle:
    """An exported model ready for inference: an onnxruntime session and what turns its output
    into mm (the same interface as predict.ModelBundle for `predict_files`)."""

    session: object  # onnxruntime.InferenceSession
    labels: LabelScheme
    image_size_hw: tuple[int, int]
    record: RunRecord
    folder: Path
    onnx_path: Path

    def predict_labels(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """The graph's output for a batch of (H, W, 3) uint8 images: (B, h, w) float32 labels."""
        batch = np.stack([resize_rgb(rgb, self.image_size_hw) for rgb in rgbs])
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def predict_mm(self, rgbs: list[np.ndarray]) -> list[np.ndarray]:
        """Depth in mm for a batch of images (any sizes), each at its own resolution."""
        out = []
        for label, rgb in zip(self.predict_labels(rgbs), rgbs, strict=True):
            up = upsample(torch.from_numpy(label), rgb.shape[:2])
            out.append(self.labels.decode(up).numpy().astype(np.float32))
        return out


def session_options(threads: int | None = None):
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return options


def load_onnx_bundle(folder: str | Path, onnx_file: str | None = None) -> OnnxBundle:
    """Open an ONNX export folder with onnxruntime (CUDA if onnxruntime-gpu has it, else CPU).

    onnx_file: which model of the folder (default: the one depth_lora.json names, the int8 one
    when the export was quantized).
    """
    folder = Path(folder)
    record = read_record(folder)
    if not record.is_onnx:
        raise ModelError(f"{folder}: not an ONNX export (make one with `depth-lora export --adapter "
                         f"{folder} --output DIR`)")
    ort = import_onnxruntime()
    path = folder / (onnx_file or record.onnx_file)
    if not path.is_file():
        raise ModelError(f"{path}: the exported model is missing")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(path), session_options(), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: onnxruntime cannot load it ({exc.__class__.__name__}: {exc})") from None
    return OnnxBundle(session, LabelScheme(**record.labels), record.image_size_hw, record, folder, path)
