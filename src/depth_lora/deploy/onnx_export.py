"""`depth-lora export --format onnx`: the graph written by torch's ONNX exporter, int8 weights by
onnxruntime's dynamic quantization, and how to run it without depth-lora (export.py runs the checks)."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from depth_lora.deploy.exported import INPUT_NAME, OUTPUT_NAME
from depth_lora.deploy.graph import ExportGraph
from depth_lora.deploy.onnx_runtime import INT8_FILE, ONNX_FILE, load_onnx_bundle, require_export_extra
from depth_lora.runs.folder import RunRecord

FORMAT = "onnx"
MODEL_FILE, INT8_MODEL_FILE = ONNX_FILE, INT8_FILE
open_bundle = load_onnx_bundle  # (folder, model file) -> an ExportedBundle


def require() -> dict:
    """The packages this format needs, or a ConfigError naming the [export] extra; their versions."""
    onnx, ort = require_export_extra()
    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}


@contextmanager
def quiet_exporter():
    """Silence torch.export's and the ONNX exporter's progress logs and deprecation notices, for
    the duration of the export only."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # A completion graph's two inputs share one batch dimension, which the exporter remarks on.
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def write_onnx(graph: ExportGraph, path: Path) -> None:
    """Export a run's graph (graph.ExportGraph: images in, labels out; a completion run's takes the
    prompt too and returns depth in mm) to one .onnx file, the batch dimension dynamic."""
    batch = torch.export.Dim("batch", min=1, max=256)
    require_export_extra()
    with quiet_exporter():
        program = torch.onnx.export(
            graph.module, graph.example(), input_names=graph.input_names, output_names=[graph.output_name],
            dynamic_shapes={name: {0: batch} for name in graph.input_names}, dynamo=True, verbose=False,
        )
    program.save(str(path), external_data=False)


def write(graph: ExportGraph, work: Path) -> dict:
    """The fp32 graph in `work` (see `write_onnx`); returns the record's fields for it."""
    write_onnx(graph, work / MODEL_FILE)
    return {"format": FORMAT, "onnx_file": MODEL_FILE}


def graph_info(work: Path) -> dict:
    """What the record keeps of the written graph: its opset."""
    import onnx

    return {"opset": onnx.load(work / MODEL_FILE, load_external_data=False).opset_import[0].version}


def quantize_int8(work: Path, calibration=None) -> dict:
    """Dynamic int8 weights (onnxruntime.quantization: activations quantized at run time, so no
    calibration captures are needed); returns what the record says of the method."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared = work / "model.prepared.onnx"
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # the quantizer warns through the root logger
    try:
        quant_pre_process(work / MODEL_FILE, prepared)  # shape inference and graph clean-up, as advised
        quantize_dynamic(prepared, work / INT8_MODEL_FILE, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    return {"method": "onnxruntime dynamic quantization (int8 weights, activations at run time)"}


def record_fields(model_file: str) -> dict:
    """The record's field naming the folder's model (`model_file` of this format)."""
    return {"onnx_file": model_file}


README_FILES = f"`{MODEL_FILE}`"  # the export folder's README: the files, then what they take and give
README_NOTE = " OpenVINO reads it too (`predict --backend openvino`)."


def readme_snippet(record: RunRecord) -> dict:
    """How the README's snippet runs this format: the packages, imports, the load line, and the line
    that turns `small` ((h, w, 3) uint8) into `labels` ((h, w) float32)."""
    return {
        "needs": "onnxruntime, numpy, Pillow, OpenCV",
        "imports": ["import cv2, numpy as np, onnxruntime as ort", "from PIL import Image"],
        "load": f'session = ort.InferenceSession("THIS_FOLDER/{record.onnx_file}")  # this folder',
        "run": f'labels = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": small[None]}})[0][0]',
    }
