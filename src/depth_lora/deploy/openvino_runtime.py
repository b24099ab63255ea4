"""Run an exported model with OpenVINO: an OpenVINO export's IR (`export --format openvino`), or an
ONNX export's graph, which OpenVINO reads directly (see exported.py for what the graphs take and
return). OpenVINO is Intel's inference runtime for CPUs; it runs on any x86-64 CPU (AVX2 and up) and
on ARM, and uses int8 units (VNNI, AMX) where the CPU has them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_lora.deploy.exported import INPUT_NAME, PROMPT_NAME, ExportedBundle, record_labels
from depth_lora.errors import ConfigError, ModelError
from depth_lora.runs.folder import read_record

OPENVINO_FILE = "model.xml"  # the IR: model.xml (the graph) + model.bin (the weights)
OPENVINO_INT8_FILE = "model.int8.xml"
OPENVINO_EXTRA = 'pip install -e ".[openvino]" (openvino, nncf)'
DEVICE = "CPU"
# The latency hint: one request at a time uses every core (a robot cell predicts one capture at a time).
# fp32 inference: OpenVINO's CPU plugin would otherwise run bf16 on CPUs with AVX-512 BF16 or AMX,
# unchecked by the parity check and unlike what the export says it is.
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def import_openvino():
    """openvino, or a ConfigError naming the optional extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"OpenVINO needs the optional packages: {OPENVINO_EXTRA}") from None
    return openvino


def openvino_installed() -> bool:
    try:
        import_openvino()
    except ConfigError:
        return False
    return True


@dataclass
class OpenVinoBundle(ExportedBundle):
    """An exported graph compiled by OpenVINO for the CPU."""

    compiled: object = None  # openvino.CompiledModel

    runtime = "OpenVINO"

    def __post_init__(self) -> None:
        self._request = self.compiled.create_infer_request()  # reused: no allocation per call

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        return self._request.get_output_tensor(0).data.copy()  # the tensor's memory is reused

    def run_completion(self, batch: np.ndarray, prompt: np.ndarray) -> np.ndarray:
        self._request.infer({INPUT_NAME: batch, PROMPT_NAME: prompt})
        return self._request.get_output_tensor(0).data.copy()


def compile_model(path: Path):
    """The model file (.xml IR or .onnx) compiled for the CPU with the latency hint."""
    ov = import_openvino()
    try:
        return ov.Core().compile_model(str(path), DEVICE, COMPILE_CONFIG)
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types
        raise ModelError(f"{path}: OpenVINO cannot load it ({exc.__class__.__name__}: {exc})") from None


def load_openvino_bundle(folder: str | Path, model_file: str | None = None) -> OpenVinoBundle:
    """Open an export folder with OpenVINO: an OpenVINO export's IR, or an ONNX export's IR written
    beside its graph (export.beside_ir), else its graph.

    model_file: which model of the folder (default: the one depth_lora.json names for OpenVINO).
    """
    folder = Path(folder)
    record = read_record(folder)
    if not record.is_export:
        raise ModelError(f"{folder}: not an exported model (make one with `depth-lora export --adapter "
                         f"{folder} --format openvino --output DIR`)")
    import_openvino()
    path = folder / (model_file or record.openvino_file or record.model_file)
    if not path.is_file():
        raise ModelError(f"{path}: the exported model is missing")
    return OpenVinoBundle(record_labels(record), record.image_size_hw, record, folder, path,
                          compile_model(path))
