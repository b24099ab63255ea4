"""`depth-lora export`: the merged model as an ONNX graph or an OpenVINO IR, checked against PyTorch in mm.

The exported graph (see graph.py, exported.py) takes uint8 images at the trained input size with a
dynamic batch dimension and returns the model's labels; the label scheme, input size and this
export's checks are written beside it in depth_lora.json, with a README (readme.py) that runs it
without depth-lora. A completion run's graph also takes the prompt depth and returns mm; it is
exported in fp32 and checked on captures with depth. What differs between formats (writing, int8,
the README's snippet) is in onnx_export.py and openvino_export.py; the checks, the folder and the
record are here, the same for both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from depth_lora.data.dataset import resize_rgb
from depth_lora.deploy import onnx_export, openvino_export
from depth_lora.deploy.graph import plain_model
from depth_lora.errors import ConfigError, DataError, ModelError
from depth_lora.model.precision import describe_cpu
from depth_lora.runs.folder import (
    CARD_FILE,
    EXPORT_FORMAT_NAMES,
    check_new_folder,
    copy_run_records,
    read_record,
    read_split,
    write_record,
)
from depth_lora.runs.task import task_of

# The fp32 graph must reproduce PyTorch's fp32 depth to within this, at full resolution, on every
# checked pixel (measured: about 1e-3 mm on the Small architecture; operator order differs).
PARITY_TOLERANCE_MM = 1.0
CHECK_CAPTURES = 3  # parity inputs
ACCURACY_CAPTURES = 20  # held-out captures scored for the int8 accuracy cost
CALIBRATION_CAPTURES = 16  # training captures that calibrate OpenVINO's int8 activation ranges
QUANTIZE_CHOICES = ("int8",)
SPEED_CAPTURES = 3  # images fp32 and int8 are raced on, as one batch (3 rounds, in turn)
INT8_MIN_GAIN = 0.05  # int8 becomes the folder's model only if at least this much faster than fp32
INT8_MAX_MEAN_SHIFT = 0.01  # ... and if it moves the depth by at most this share of its range on average
FORMATS = {"onnx": onnx_export, "openvino": openvino_export}
RUNTIME_NAMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass
class ExportReport:
    """What `export_model` wrote and measured; mm differences are at full resolution."""

    folder: Path
    format: str
    check_source: str
    parity: dict  # {"max_abs_mm", "mean_abs_mm", "images"} fp32 model vs PyTorch, the worst runtime's
    seconds_per_image: dict = field(default_factory=dict)  # {"pytorch", "<format>", "<format>_int8"}
    parity_by_runtime: dict = field(default_factory=dict)  # runtime name -> its parity
    int8: dict | None = None  # {"parity", "rmse_mm": {"pytorch", "int8"}, "captures", "kept", "method"}

    def to_dict(self) -> dict:
        return {"check_source": self.check_source, "parity": self.parity, "tolerance_mm": PARITY_TOLERANCE_MM,
                "parity_by_runtime": self.parity_by_runtime, "seconds_per_image": self.seconds_per_image,
                "int8": self.int8}


def check_inputs(bundle, images: list[Path] | None, limit: int) -> tuple[list, str]:
    """(captures, where they come from) for the checks: the given images (no depth), else up to
    `limit` of the run's test captures (validation if it has no test split), else two generated
    captures."""
    from depth_lora.data.captures import load_capture, load_rgb

    if images:
        return [(Path(p).stem, load_rgb(p), None) for p in images], f"{len(images)} given image(s)"
    split = read_split(bundle.folder, bundle.record) or {}
    data = bundle.record.data
    files = run_captures(bundle, split.get("test") or split.get("val") or [])[:limit]
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


def run_captures(bundle, keys: list[str]) -> list:
    """The capture files (data.CaptureFiles) of `keys` in the folder the run was trained on, those
    still there; none if the folder is gone."""
    from depth_lora.data.captures import find_captures

    try:
        by_key = {f.key: f for f in find_captures(bundle.record.data)} if keys and bundle.record.data else {}
    except DataError:
        by_key = {}
    return [by_key[k] for k in keys if k in by_key]


def compare_mm(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Max and mean |a - b| in mm over every pixel of every image (full resolution)."""
    diffs = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b, strict=True)])
    return {"max_abs_mm": float(diffs.max()), "mean_abs_mm": float(diffs.mean()), "images": len(a)}


def timed_predictions(bundle, captures: list) -> tuple[list[np.ndarray], float]:
    """Each capture's depth in mm (`predict_one`), one at a time, and the mean seconds per capture
    after the first."""
    out, times = [], []
    for capture in captures:
        start = time.perf_counter()
        out.append(predict_one(bundle, capture))
        times.append(time.perf_counter() - start)
    return out, float(np.mean(times[1:] or times))


def predict_one(bundle, capture: tuple) -> np.ndarray:
    """A (key, rgb, depth or None) capture's depth in mm at full resolution: the image's for a depth
    run, the completion model's output (before anchoring) for a completion run."""
    return task_of(bundle.record).predict_one(bundle, capture)


def mean_rmse_mm(preds: list[np.ndarray], targets: list[np.ndarray]) -> float:
    from depth_lora.numeric.metrics import depth_metrics

    rows = [depth_metrics(p, t, np.isfinite(t)) for p, t in zip(preds, targets, strict=True)]
    return float(np.mean([r["rmse_mm"] for r in rows if r]))


def export_model(adapter_dir: str | Path, output_dir: str | Path, format: str = "onnx",
                 quantize: str | None = None, images: list[Path] | None = None, say=print) -> ExportReport:
    """Merge the adapter, export it as `format` ("onnx" or "openvino") in `output_dir` and check it
    against PyTorch.

    Writes the fp32 model (model.onnx, or model.xml + model.bin), depth_lora.json (labels, input
    size, the checks) and README.md; with quantize="int8" also the int8 model (see `add_int8`). The
    folder appears only once the fp32 model passed the parity check: a failed export leaves nothing.
    Raises ModelError if the fp32 model differs from PyTorch by more than PARITY_TOLERANCE_MM, and
    ConfigError if the format's optional packages are missing (before anything is loaded).
    """
    from depth_lora.inference.predict import load_bundle

    if format not in FORMATS:
        raise ConfigError(f"--format takes {', '.join(FORMATS)}, got {format!r}")
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ConfigError(f"--quantize takes {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    writer = FORMATS[format]
    versions = writer.require()
    output_dir = Path(output_dir)
    check_new_folder(output_dir, "the export")
    record = read_record(adapter_dir)  # what the task cannot export is refused before loading
    completion = task_of(record).export_settings(adapter_dir, record, quantize, images)
    bundle = load_bundle(adapter_dir, device="cpu", precision="fp32")
    # Parity needs a few captures; the int8 accuracy cost all held-out ones (up to a limit).
    limit = ACCURACY_CAPTURES if quantize else CHECK_CAPTURES
    captures, source = check_inputs(bundle, images, limit)  # a bad --check-images fails before exporting
    calibration = training_images(bundle, CALIBRATION_CAPTURES) if quantize and format == "openvino" else None
    # The reference is the run as `predict` loads it, adapter unmerged: the check covers the merge too.
    torch_mm, torch_s = timed_predictions(bundle, captures)
    say(f"exporting {adapter_dir} to {EXPORT_FORMAT_NAMES[format]} at {bundle.image_size_hw[0]} x "
        f"{bundle.image_size_hw[1]} ...")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.partial-"))
    try:
        merged = plain_model(bundle.model)  # the adapter folded in once, for every file written
        graph = task_of(record).export_graph(merged, bundle.image_size_hw, completion)
        fields = writer.write(graph, work)
        fields |= beside_ir(writer, graph, work)
        record = bundle.record.derived(**fields, exported_from=str(adapter_dir), base_model_dir=None)
        write_record(work, record)
        report = ExportReport(output_dir, format, source, {}, {"pytorch": torch_s})
        for runtime, bundle in checked_runtimes(writer, work):  # every runtime `--backend auto` may pick
            exported_mm, seconds = timed_predictions(bundle, captures[:CHECK_CAPTURES])
            report.seconds_per_image.setdefault(format, seconds)
            parity = compare_mm(exported_mm, torch_mm[:CHECK_CAPTURES])
            check_parity(parity, runtime, report.check_source, adapter_dir, say)
            report.parity_by_runtime[runtime] = parity
            if parity["max_abs_mm"] >= report.parity.get("max_abs_mm", -1.0):
                report.parity = parity  # the worst runtime's
        if quantize == "int8":
            report.int8 = add_int8(writer, work, captures, torch_mm, report, calibration, say)
            if report.int8["kept"]:
                record = record.derived(**writer.record_fields(writer.INT8_MODEL_FILE))
        record.export = {**report.to_dict(), **writer.graph_info(work), **versions,
                         "torch": torch.__version__, "timed_on": describe_cpu()}
        write_record(work, record)
        copy_run_records(adapter_dir, work, record)  # the split and metrics, for the record
        (work / CARD_FILE).write_text(task_of(record).export_readme(record, output_dir.name))
        if output_dir.exists():
            output_dir.rmdir()  # empty: checked above
        work.chmod(0o777 & ~current_umask())  # mkdtemp makes it private (0700); a folder is not
        work.rename(output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def beside_ir(writer, graph, work: Path) -> dict:
    """An ONNX export's OpenVINO IR, written beside the graph when OpenVINO is installed: on a CPU
    `--backend auto` runs it, the fastest fp32 path measured on CPUs (OpenVINO compiles the IR it
    converts from the PyTorch module into a faster program than the one it reads from the ONNX graph:
    benchmarks/RESULTS.md). Returns the record's field naming it (none without OpenVINO)."""
    from depth_lora.deploy.openvino_runtime import openvino_installed

    if writer.FORMAT != "onnx" or not openvino_installed():
        return {}
    return {"openvino_file": FORMATS["openvino"].write(graph, work)["openvino_file"]}


def checked_runtimes(writer, work: Path) -> list[tuple[str, object]]:
    """(runtime name, the fp32 export opened in it) for each runtime that may run the folder: ONNX
    Runtime and, when installed, OpenVINO (which `--backend auto` prefers) for an ONNX export, on
    the IR written beside the graph."""
    from depth_lora.deploy.openvino_runtime import load_openvino_bundle, openvino_installed

    runtimes = [(RUNTIME_NAMES[writer.FORMAT], writer.open_bundle(work))]
    if writer.FORMAT == "onnx" and openvino_installed():
        runtimes.append((RUNTIME_NAMES["openvino"], load_openvino_bundle(work)))
    return runtimes


def check_parity(parity: dict, runtime: str, source: str, adapter_dir, say) -> None:
    """Print one runtime's fp32 parity line; a ModelError (nothing is written) beyond the tolerance."""
    say(f"parity, {runtime} vs PyTorch (fp32) on {source}, full "
        f"resolution: max |diff| {parity['max_abs_mm']:.4f} mm, mean {parity['mean_abs_mm']:.5f} mm "
        f"(tolerance {PARITY_TOLERANCE_MM:g} mm)")
    if parity["max_abs_mm"] > PARITY_TOLERANCE_MM:
        raise ModelError(f"{adapter_dir}: the exported model run by {runtime} differs from PyTorch by up to "
                         f"{parity['max_abs_mm']:.3f} mm (tolerance {PARITY_TOLERANCE_MM:g} mm); "
                         "nothing was written")


def training_images(bundle, limit: int) -> list[np.ndarray]:
    """Up to `limit` of the run's training captures, resized to the model's input size: (h, w, 3)
    uint8, what int8 calibration sees (never a held-out capture). A run whose training captures
    cannot be found is a one-line ConfigError."""
    from depth_lora.data.captures import load_rgb

    files = run_captures(bundle, (read_split(bundle.folder, bundle.record) or {}).get("train") or [])
    if not files:
        raise ConfigError(f"{bundle.folder}: int8 calibration needs the run's training captures, not "
                          f"found at {bundle.record.data} (the folder the run was trained on)")
    step = max(1, len(files) // limit)  # spread over the whole training split
    return [resize_rgb(load_rgb(f.image), bundle.image_size_hw) for f in files[::step][:limit]]


def current_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def add_int8(writer, work: Path, captures, torch_mm, report: ExportReport, calibration, say) -> dict:
    """The int8 model beside the fp32 one, what it costs in mm (against PyTorch fp32 and, on held-out
    captures with depth, in RMSE) and whether it is faster than fp32 in the same runtime here. It
    becomes the folder's default model only if it is clearly faster and moves the depth little (see
    `int8_choice`): int8 that is not faster costs accuracy for nothing (on CPUs without int8 units it
    can be slower), and a quantization that broke the model must not be deployed because it is fast."""
    method = writer.quantize_int8(work, calibration)
    rgbs = [rgb for _, rgb, _ in captures]
    int8_bundle = writer.open_bundle(work, writer.INT8_MODEL_FILE)
    int8_mm = int8_bundle.predict_mm(rgbs)
    fp32_bundle, images = writer.open_bundle(work), rgbs[:SPEED_CAPTURES]
    fp32_s, int8_s, _ = paired_seconds(lambda: fp32_bundle.predict_mm(images),
                                       lambda: int8_bundle.predict_mm(images), repeats=3)
    fp32_s, int8_s = fp32_s / len(images), int8_s / len(images)  # per image
    report.seconds_per_image[report.format] = fp32_s  # timed beside int8: the fair comparison
    report.seconds_per_image[f"{report.format}_int8"] = int8_s
    result = {**method, "parity": compare_mm(int8_mm, torch_mm), "captures": len(captures)}
    span_mm = float(np.subtract(*np.nanpercentile(np.concatenate([d.ravel() for d in torch_mm]), [99, 1])))
    result["depth_span_mm"] = span_mm  # the fp32 depth's 1-99 % range: what the shift is judged against
    result["kept"], why = int8_choice(fp32_s, int8_s, result["parity"]["mean_abs_mm"], span_mm)
    if not result["kept"]:
        result["why_not"] = why
    say(f"int8 vs PyTorch fp32: max |diff| {result['parity']['max_abs_mm']:.1f} mm, mean "
        f"{result['parity']['mean_abs_mm']:.2f} mm")
    targets = [depth for _, _, depth in captures]
    if all(t is not None for t in targets):
        result["rmse_mm"] = {"pytorch": mean_rmse_mm(torch_mm, targets),
                             "int8": mean_rmse_mm(int8_mm, targets)}
        say(f"accuracy cost of int8 on {report.check_source}: RMSE {result['rmse_mm']['pytorch']:.1f} mm "
            f"(PyTorch fp32) -> {result['rmse_mm']['int8']:.1f} mm (int8)")
    verdict = "kept as the folder's model" if result["kept"] else (
        f"{why} here, so the folder's model stays fp32 ({writer.INT8_MODEL_FILE} is written beside it)")
    say(f"int8 {int8_s:.3f} s vs fp32 {fp32_s:.3f} s per image in {RUNTIME_NAMES[report.format]} on this "
        f"CPU, {describe_cpu()}: {verdict}")
    return result


def paired_seconds(first, second, repeats: int) -> tuple[float, float, float]:
    """Median seconds of `first()` and `second()` run in turn `repeats` times (after a warm-up of
    each), and the median of their paired differences: a slow moment of the machine falls on both.
    (export races fp32 against int8 with it, bench inference against completion.)"""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(np.median(a)), float(np.median(b)), float(np.median(np.subtract(b, a)))


def int8_pays(fp32_s: float, int8_s: float) -> bool:
    """int8 is worth its accuracy cost only if clearly faster: by INT8_MIN_GAIN at least."""
    return int8_s < (1 - INT8_MIN_GAIN) * fp32_s


def int8_choice(fp32_s: float, int8_s: float, mean_shift_mm: float, span_mm: float) -> tuple[bool, str]:
    """(int8 becomes the folder's model, why not): clearly faster (`int8_pays`), and its depth within
    INT8_MAX_MEAN_SHIFT of the fp32 depth's range on average (a quantization that broke the model
    shows here: on the 0.5 M-parameter demo model NNCF's int8 moved the depth by 608 mm)."""
    if not int8_pays(fp32_s, int8_s):
        return False, f"it was not {INT8_MIN_GAIN:.0%} faster than fp32"
    if mean_shift_mm > INT8_MAX_MEAN_SHIFT * span_mm:
        return False, (f"it moves the depth by {mean_shift_mm:.1f} mm on average, more than "
                       f"{INT8_MAX_MEAN_SHIFT:.0%} of the depth range ({span_mm:.0f} mm)")
    return True, ""
