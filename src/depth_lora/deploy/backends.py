"""Which runtime runs a folder: PyTorch for a training run's folder, ONNX Runtime or OpenVINO for an
export folder (`--backend` of predict and complete).

`auto` picks the fastest runtime installed for the folder. Measured on 2-core CPUs, the same graph
runs faster in OpenVINO than in ONNX Runtime (benchmarks/RESULTS.md), so an ONNX export runs in
OpenVINO when it is installed and no CUDA GPU is there for ONNX Runtime; an OpenVINO export runs in
OpenVINO, a training folder in PyTorch. An ONNX export whose model is onnxruntime's dynamic int8
graph stays in ONNX Runtime, where it was timed against fp32.
"""

from __future__ import annotations

from pathlib import Path

from depth_lora.deploy.onnx_runtime import INT8_FILE, load_onnx_bundle
from depth_lora.deploy.openvino_runtime import load_openvino_bundle, openvino_installed
from depth_lora.errors import ModelError
from depth_lora.inference.options import BACKENDS
from depth_lora.runs.folder import EXPORT_FORMAT_NAMES, export_format, read_record

__all__ = ["BACKENDS", "choose_backend", "describe_bundle", "open_bundle"]
# backend -> the export formats it runs
RUNS = {"torch": (None,), "onnx": ("onnx",), "openvino": ("onnx", "openvino")}


def onnxruntime_has_cuda() -> bool:
    """ONNX Runtime can run on a CUDA GPU here: built with CUDA (onnxruntime-gpu) and a GPU present."""
    try:
        import onnxruntime
    except ImportError:
        return False
    import torch

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available()


def choose_backend(folder: str | Path, backend: str = "auto") -> str:
    """The runtime for `folder` ("torch", "onnx" or "openvino"), or a one-line ModelError when the
    backend asked for cannot run that folder."""
    fmt = export_format(folder)
    if backend == "auto":
        if fmt is None:
            return "torch"
        if fmt == "openvino":
            return "openvino"
        # An ONNX export's int8 graph is onnxruntime's dynamic quantization, timed in ONNX Runtime.
        int8 = read_record(folder).onnx_file == INT8_FILE
        return "openvino" if openvino_installed() and not onnxruntime_has_cuda() and not int8 else "onnx"
    if fmt in RUNS[backend]:
        return backend
    if fmt is None:
        raise ModelError(f"{folder}: a training run's folder, which PyTorch runs; for --backend {backend} "
                         f"make an export first: `depth-lora export --adapter {folder} --format "
                         f"{'onnx' if backend == 'onnx' else 'openvino'} --output DIR`")
    runs = [name for name, formats in RUNS.items() if fmt in formats]
    raise ModelError(f"{folder}: an {EXPORT_FORMAT_NAMES[fmt]} export, which --backend {backend} cannot run; "
                     f"use --backend {' or '.join(runs)} (or the folder it was exported from for PyTorch)")


def open_bundle(folder: str | Path, backend: str = "auto", precision: str = "auto"):
    """The folder opened for inference in its runtime: a predict.ModelBundle (PyTorch, in `precision`)
    or a deploy.exported.ExportedBundle (`precision` is the graph's own there)."""
    from depth_lora.inference.predict import load_bundle

    chosen = choose_backend(folder, backend)
    if chosen == "torch":
        return load_bundle(folder, precision=precision)
    return load_onnx_bundle(folder) if chosen == "onnx" else load_openvino_bundle(folder)


def describe_bundle(bundle) -> str:
    """One line: which runtime runs what (printed by predict and complete)."""
    if hasattr(bundle, "runtime"):
        return f"{bundle.runtime} on {bundle.device}: {bundle.model_path} (fp32; --precision is for PyTorch)"
    return f"PyTorch, {bundle.precision} on {bundle.device.type}"
