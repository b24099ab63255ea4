"""`depth-lora export --format onnx`: the merged model as an ONNX graph, checked against PyTorch in mm.

The graph (see onnx_backend) takes uint8 images at the trained input size with a dynamic batch
dimension and returns the model's labels; the label scheme, input size and this export's checks
are written beside it in depth_lora.json, with a README that runs it without depth-lora.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depth_lora.data.dataset import METRIC_HEAD_UNIT_MM, rgb_to_pixel_values
from depth_lora.deploy.onnx_runtime import (
    INPUT_NAME,
    INT8_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    load_onnx_bundle,
    require_export_extra,
)
from depth_lora.errors import DataError, ModelError
from depth_lora.runs.folder import (
    CARD_FILE,
    RunRecord,
    check_new_folder,
    copy_run_records,
    read_split,
    write_record,
)

# The fp32 graph must reproduce PyTorch's fp32 depth to within this, at full resolution, on every
# checked pixel (measured: about 1e-3 mm on the Small architecture; operator order differs).
PARITY_TOLERANCE_MM = 1.0
CHECK_CAPTURES = 3  # parity inputs
ACCURACY_CAPTURES = 20  # held-out captures scored for the int8 accuracy cost
QUANTIZE_CHOICES = ("int8",)


class ImageToLabels(nn.Module):
    """uint8 (B, h, w, 3) images at the model size -> the model's labels (B, h, w) float32, with
    the very normalisation the PyTorch path uses (dataset.rgb_to_pixel_values)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=rgb_to_pixel_values(image)).predicted_depth.float()


@dataclass
class ExportReport:
    """What `export_onnx` wrote and measured; mm differences are at full resolution."""

    folder: Path
    check_source: str
    parity: dict  # {"max_abs_mm", "mean_abs_mm", "images"} fp32 graph vs PyTorch
    seconds_per_image: dict = field(default_factory=dict)  # {"pytorch", "onnx", "onnx_int8"}
    int8: dict | None = None  # {"parity": ..., "rmse_mm": {"pytorch", "onnx_int8"}, "captures"}

    def to_dict(self) -> dict:
        return {"check_source": self.check_source, "parity": self.parity, "tolerance_mm": PARITY_TOLERANCE_MM,
                "seconds_per_image": self.seconds_per_image, "int8": self.int8}


def plain_model(model: nn.Module) -> nn.Module:
    """A model ready to export: the adapter folded in (PEFT merge_and_unload, in place), fp32,
    contiguous memory, eval mode."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.float().to(memory_format=torch.contiguous_format).eval()


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
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def write_onnx(model: nn.Module, size_hw: tuple[int, int], path: Path) -> None:
    """Export `ImageToLabels(model)` to one .onnx file, the batch dimension dynamic."""
    example = torch.zeros(2, *size_hw, 3, dtype=torch.uint8)  # batch 2: torch.export fixes a size-1 dim
    batch = torch.export.Dim("batch", min=1, max=256)
    require_export_extra()
    with quiet_exporter():
        program = torch.onnx.export(
            ImageToLabels(model).eval(), (example,), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes={"image": {0: batch}}, dynamo=True, verbose=False,
        )
    program.save(str(path), external_data=False)


def check_inputs(bundle, images: list[Path] | None, limit: int) -> tuple[list, str]:
    """(captures, where they come from) for the checks: the given images (no depth), else up to
    `limit` of the run's test captures (validation if it has no test split), else two generated
    captures."""
    from depth_lora.data.captures import find_captures, load_capture, load_rgb

    if images:
        return [(Path(p).stem, load_rgb(p), None) for p in images], f"{len(images)} given image(s)"
    split = read_split(bundle.folder, bundle.record) or {}
    keys = split.get("test") or split.get("val") or []
    data = bundle.record.data
    try:
        by_key = {f.key: f for f in find_captures(data)} if keys and data else {}
    except DataError:
        by_key = {}
    files = [by_key[k] for k in keys if k in by_key][:limit]
    if files:
        unit = bundle.record.depth_unit
        captures = [(f.key, c.rgb, c.depth_mm) for f in files for c in [load_capture(f, unit)]]
        which = "test" if split.get("test") else "validation"
        return captures, f"{len(files)} {which} capture(s) of the run ({data})"
    from depth_lora.synthetic.scenes import render_capture

    size = tuple((bundle.record.camera or {}).get("size_hw") or (1200, 1944))
    generated = [render_capture(seed, size) for seed in (0, 1)]
    return ([(f"generated-{i}", rgb, xyz[..., 2]) for i, (rgb, xyz) in enumerate(generated)],
            f"2 generated {size[0]}x{size[1]} captures (the run's captures were not found at {data})")


def compare_mm(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Max and mean |a - b| in mm over every pixel of every image (full resolution)."""
    diffs = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b, strict=True)])
    return {"max_abs_mm": float(diffs.max()), "mean_abs_mm": float(diffs.mean()), "images": len(a)}


def timed_predictions(bundle, rgbs: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Each image's depth in mm, one at a time, and the mean seconds per image after the first."""
    out, times = [], []
    for rgb in rgbs:
        start = time.perf_counter()
        out += bundle.predict_mm([rgb])
        times.append(time.perf_counter() - start)
    return out, float(np.mean(times[1:] or times))


def mean_rmse_mm(preds: list[np.ndarray], targets: list[np.ndarray]) -> float:
    from depth_lora.numeric.metrics import depth_metrics

    rows = [depth_metrics(p, t, np.isfinite(t)) for p, t in zip(preds, targets, strict=True)]
    return float(np.mean([r["rmse_mm"] for r in rows if r]))


def export_onnx(adapter_dir: str | Path, output_dir: str | Path, quantize: str | None = None,
                images: list[Path] | None = None, say=print) -> ExportReport:
    """Merge the adapter, export it to ONNX in `output_dir` and check it against PyTorch.

    Writes model.onnx (fp32; with quantize="int8" also model.int8.onnx, dynamic int8 weights),
    depth_lora.json (labels, input size, the checks) and README.md. The folder appears only once
    the fp32 graph passed the parity check: a failed export leaves nothing behind.
    Raises ModelError if the fp32 graph differs from PyTorch by more than PARITY_TOLERANCE_MM.
    """
    from depth_lora.inference.predict import load_bundle

    onnx, ort = require_export_extra()
    output_dir = Path(output_dir)
    check_new_folder(output_dir, "the export")
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ModelError(f"--quantize takes {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    bundle = load_bundle(adapter_dir, device="cpu", precision="fp32")
    # Parity needs a few captures; the int8 accuracy cost all held-out ones (up to a limit).
    limit = ACCURACY_CAPTURES if quantize else CHECK_CAPTURES
    captures, source = check_inputs(bundle, images, limit)  # a bad --check-images fails before exporting
    rgbs = [rgb for _, rgb, _ in captures]
    # The reference is the run as `predict` loads it, adapter unmerged: the check covers the merge too.
    torch_mm, torch_s = timed_predictions(bundle, rgbs)
    say(f"exporting {adapter_dir} at {bundle.image_size_hw[0]} x {bundle.image_size_hw[1]} ...")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.partial-"))
    try:
        write_onnx(plain_model(bundle.model), bundle.image_size_hw, work / ONNX_FILE)
        record = bundle.record.derived(format="onnx", onnx_file=ONNX_FILE, exported_from=str(adapter_dir),
                                       base_model_dir=None)
        write_record(work, record)
        onnx_mm, onnx_s = timed_predictions(load_onnx_bundle(work), rgbs[:CHECK_CAPTURES])
        report = ExportReport(output_dir, source, compare_mm(onnx_mm, torch_mm[:CHECK_CAPTURES]),
                              {"pytorch": torch_s, "onnx": onnx_s})
        parity = report.parity
        say(f"parity, ONNX Runtime vs PyTorch (fp32) on {source}, full resolution: max |diff| "
            f"{parity['max_abs_mm']:.4f} mm, mean {parity['mean_abs_mm']:.5f} mm "
            f"(tolerance {PARITY_TOLERANCE_MM:g} mm)")
        if parity["max_abs_mm"] > PARITY_TOLERANCE_MM:
            raise ModelError(f"{adapter_dir}: the ONNX graph differs from PyTorch by up to "
                             f"{parity['max_abs_mm']:.3f} mm (tolerance {PARITY_TOLERANCE_MM:g} mm); "
                             "nothing was written")
        if quantize == "int8":
            report.int8 = quantize_int8(work, captures, torch_mm, report, say)
            record.onnx_file = INT8_FILE
        opset = onnx.load(work / ONNX_FILE, load_external_data=False).opset_import[0].version
        record.export = {**report.to_dict(), "opset": opset, "onnxruntime": ort.__version__,
                         "torch": torch.__version__}
        write_record(work, record)
        copy_run_records(adapter_dir, work, record)  # the split and metrics, for the record
        (work / CARD_FILE).write_text(export_readme(record, output_dir.name))
        if output_dir.exists():
            output_dir.rmdir()  # empty: checked above
        work.chmod(0o777 & ~current_umask())  # mkdtemp makes it private (0700); a folder is not
        work.rename(output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def current_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def quantize_int8(work: Path, captures, torch_mm, report: ExportReport, say) -> dict:
    """Dynamic int8 weights (onnxruntime.quantization) and what they cost, in mm."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared = work / "model.prepared.onnx"
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # the quantizer warns through the root logger
    try:
        quant_pre_process(work / ONNX_FILE, prepared)  # shape inference and graph clean-up, as advised
        quantize_dynamic(prepared, work / INT8_FILE, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    int8_mm, int8_s = timed_predictions(load_onnx_bundle(work, INT8_FILE), [rgb for _, rgb, _ in captures])
    report.seconds_per_image["onnx_int8"] = int8_s
    result = {"parity": compare_mm(int8_mm, torch_mm), "captures": len(captures)}
    say(f"int8 vs PyTorch fp32: max |diff| {result['parity']['max_abs_mm']:.1f} mm, mean "
        f"{result['parity']['mean_abs_mm']:.2f} mm")
    targets = [depth for _, _, depth in captures]
    if all(t is not None for t in targets):
        result["rmse_mm"] = {"pytorch": mean_rmse_mm(torch_mm, targets),
                             "onnx_int8": mean_rmse_mm(int8_mm, targets)}
        say(f"accuracy cost of int8 on {report.check_source}: RMSE {result['rmse_mm']['pytorch']:.1f} mm "
            f"(PyTorch fp32) -> {result['rmse_mm']['onnx_int8']:.1f} mm (int8)")
    return result


def int8_line(int8: dict) -> str:
    """What the int8 weights cost, in one sentence."""
    parity = int8["parity"]
    text = (f"Against PyTorch fp32 its depth differs by {parity['mean_abs_mm']:.2f} mm on average (max "
            f"{parity['max_abs_mm']:.1f} mm)")
    if "rmse_mm" in int8:
        rmse = int8["rmse_mm"]
        text += (f"; RMSE on {int8['captures']} held-out capture(s) {rmse['pytorch']:.1f} mm (PyTorch fp32) "
                 f"-> {rmse['onnx_int8']:.1f} mm (int8)")
    return text + "."


def export_readme(record: RunRecord, folder_name: str) -> str:
    """How to run the export with onnxruntime alone (numpy, Pillow, OpenCV; no torch, no depth-lora)."""
    labels, (h, w) = record.labels, record.image_size_hw
    lo, hi = labels["depth_min_mm"], labels["depth_max_mm"]
    decode = {
        "minmax": f"labels * ({hi!r} - {lo!r}) + {lo!r}",
        "metric": f"labels * {METRIC_HEAD_UNIT_MM!r}  # the metric head predicts metres",
        "inverse": f"{lo!r} / np.maximum(labels, {lo / (4 * hi)!r})",
    }[labels["kind"]]
    export = record.export
    parity = export["parity"]
    lines = [
        f"# {folder_name}: a depth-lora model exported to ONNX",
        "",
        f"Exported from `{record.exported_from}` (base model `{record.base_model}`) by "
        "`depth-lora export`.",
        "",
        *([f"**Warning:** {record.warning}.", ""] if record.warning else []),
        f"- `{ONNX_FILE}`: fp32, input `{INPUT_NAME}` uint8 (batch, {h}, {w}, 3) RGB at the trained input "
        f"size (batch dynamic), output `{OUTPUT_NAME}` float32 (batch, {h}, {w}): the model's "
        f"{labels['kind']} labels.",
        *([f"- `{INT8_FILE}`: the same graph with int8 weights (dynamic quantization); "
           f"`depth-lora predict` uses it. {int8_line(export['int8'])}"] if export.get("int8") else []),
        f"- Parity with PyTorch (fp32) on {export['check_source']}, full resolution: max |diff| "
        f"{parity['max_abs_mm']:.4f} mm, mean {parity['mean_abs_mm']:.5f} mm "
        f"(tolerance {export['tolerance_mm']:g} mm).",
        "",
        "## With depth-lora",
        "",
        "Wherever you run it from, with `THIS_FOLDER` the path of this folder:",
        "",
        "```bash",
        "depth-lora predict IMAGES... --adapter THIS_FOLDER --out predictions",
        "```",
        "",
        "## Without depth-lora (onnxruntime, numpy, Pillow, OpenCV)",
        "",
        "Resize like the training (bicubic), run, upsample the labels bilinearly, then decode to mm:",
        "",
        "```python",
        "import cv2, numpy as np, onnxruntime as ort",
        "from PIL import Image",
        "",
        f'session = ort.InferenceSession("THIS_FOLDER/{record.onnx_file}")  # the path of this folder',
        'rgb = np.asarray(Image.open("capture.png").convert("RGB"))  # (H, W, 3) uint8',
        f"small = np.asarray(Image.fromarray(rgb).resize(({w}, {h}), Image.BICUBIC))",
        f'labels = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": small[None]}})[0][0]',
        "labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)",
        f"depth_mm = {decode}  # (H, W) float32 mm",
        "```",
        "",
        "OpenCV's bilinear upsampling matches PyTorch's (`align_corners=False`) to about 1e-4 of the label "
        "range; depth-lora itself upsamples with PyTorch.",
    ]
    return "\n".join(lines) + "\n"
