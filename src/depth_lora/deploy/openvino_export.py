"""`depth-lora export --format openvino`: the OpenVINO IR converted from the PyTorch module
(`openvino.convert_model`, weights kept fp32), int8 by NNCF post-training quantization calibrated on
the run's training captures, and how to run it without depth-lora (export.py runs the checks)."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from depth_lora.deploy.graph import ExportGraph
from depth_lora.deploy.openvino_runtime import (
    OPENVINO_EXTRA,
    OPENVINO_FILE,
    OPENVINO_INT8_FILE,
    import_openvino,
    load_openvino_bundle,
)
from depth_lora.errors import ConfigError
from depth_lora.runs.folder import RunRecord

FORMAT = "openvino"
MODEL_FILE, INT8_MODEL_FILE = OPENVINO_FILE, OPENVINO_INT8_FILE
open_bundle = load_openvino_bundle  # (folder, model file) -> an ExportedBundle


def require() -> dict:
    """The packages this format needs, or a ConfigError naming the [openvino] extra; their versions."""
    ov = import_openvino()
    return {"openvino": ov.__version__}


@contextmanager
def quiet_transformers():
    """transformers at error level: tracing reads every attribute of the model, and its
    `loss_function` then logs "`loss_type=None` was set in the config but it is unrecognized", which
    is about training language models, not about this export."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def write(graph: ExportGraph, work: Path) -> dict:
    """The fp32 IR (model.xml + model.bin) of a run's graph (graph.ExportGraph) in `work`, batch
    dynamic; returns the record's fields."""
    ov = import_openvino()
    example = graph.example(1)
    shapes = [ov.PartialShape([-1, *x.shape[1:]]) for x in example]
    with warnings.catch_warnings(), quiet_transformers():  # the tracer's notices about constant shapes
        warnings.simplefilter("ignore")
        converted = ov.convert_model(graph.module, example_input=example, input=shapes)
    for port, name in zip(converted.inputs, graph.input_names, strict=True):
        port.get_tensor().set_names({name})
    converted.outputs[0].get_tensor().set_names({graph.output_name})
    # save_model stores weights as fp16 by default: keep fp32, so the parity check holds to < 1 mm.
    ov.save_model(converted, str(work / MODEL_FILE), compress_to_fp16=False)
    return {"format": FORMAT, "openvino_file": MODEL_FILE}


def graph_info(work: Path) -> dict:
    """What the record keeps of the written IR: nothing beyond the runtime's version."""
    return {}


def quantize_int8(work: Path, calibration: list[np.ndarray] | None = None) -> dict:
    """int8 weights and activations by NNCF post-training quantization (transformer preset), the
    activation ranges calibrated on `calibration`: (h, w, 3) uint8 images at the model size, the
    run's training captures. Returns what the record says of the method."""
    ov = import_openvino()
    try:
        import nncf
    except ImportError:
        raise ConfigError(f"int8 for OpenVINO needs NNCF: {OPENVINO_EXTRA}") from None
    if not calibration:
        raise ConfigError("int8 calibration needs the run's training captures, and none was found")
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)  # its progress bars and notices, not ours
    try:
        quantized = nncf.quantize(
            ov.Core().read_model(str(work / MODEL_FILE)),
            nncf.Dataset(calibration, lambda image: image[None]),
            model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
        )
    finally:
        nncf_logger.setLevel(level)
    ov.save_model(quantized, str(work / INT8_MODEL_FILE), compress_to_fp16=False)
    return {"method": "NNCF post-training quantization (int8 weights and activations, transformer preset)",
            "calibration_captures": len(calibration), "nncf": nncf.__version__}


def record_fields(model_file: str) -> dict:
    """The record's field naming the folder's model (`model_file` of this format)."""
    return {"openvino_file": model_file}


README_FILES = f"`{MODEL_FILE}` + `model.bin` (OpenVINO IR)"  # see onnx_export.README_FILES
README_NOTE = ""


def readme_snippet(record: RunRecord) -> dict:
    """How the README's snippet runs this format (see onnx_export.readme_snippet)."""
    return {
        "needs": "openvino, numpy, Pillow, OpenCV",
        "imports": ["import cv2, numpy as np, openvino as ov", "from PIL import Image"],
        "load": f'model = ov.Core().compile_model("THIS_FOLDER/{record.openvino_file}", "CPU")',
        "run": "labels = model(small[None])[0][0]",
    }
