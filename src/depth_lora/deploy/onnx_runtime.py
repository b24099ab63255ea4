"""Run a model exported by `depth-lora export --format onnx` with onnxruntime (see exported.py for
what the graph takes and returns; the OpenVINO runtime also reads these graphs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_lora.deploy.exported import (
    DEPTH_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PROMPT_NAME,
    ExportedBundle,
    record_labels,
)
from depth_lora.errors import ConfigError, ModelError
from depth_lora.runs.folder import read_record

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
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
class OnnxBundle(ExportedBundle):
    """An ONNX export opened in an onnxruntime session."""

    session: object = None  # onnxruntime.InferenceSession

    runtime = "ONNX Runtime"

    @property
    def device(self) -> str:
        return "CUDA" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "CPU"

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def run_completion(self, batch: np.ndarray, prompt: np.ndarray) -> np.ndarray:
        return self.session.run([DEPTH_NAME], {INPUT_NAME: batch, PROMPT_NAME: prompt})[0]


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
    if record.format != "onnx":
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
    return OnnxBundle(record_labels(record), record.image_size_hw, record, folder, path, session)
