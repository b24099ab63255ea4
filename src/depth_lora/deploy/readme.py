"""The README of an export folder: what the files are, how to run them with depth-lora and without it."""

from __future__ import annotations

from depth_lora.data.completion import prompt_shape
from depth_lora.data.dataset import METRIC_HEAD_UNIT_MM
from depth_lora.deploy.export import FORMATS, INT8_MIN_GAIN
from depth_lora.deploy.exported import DEPTH_NAME, INPUT_NAME, OUTPUT_NAME, PROMPT_NAME
from depth_lora.runs.folder import EXPORT_FORMAT_NAMES, RunRecord


def int8_line(int8: dict) -> str:
    """What the int8 model costs, in one sentence."""
    parity = int8["parity"]
    text = (f"Against PyTorch fp32 its depth differs by {parity['mean_abs_mm']:.2f} mm on average (max "
            f"{parity['max_abs_mm']:.1f} mm)")
    if "rmse_mm" in int8:
        rmse = int8["rmse_mm"]
        text += (f"; RMSE on {int8['captures']} held-out capture(s) {rmse['pytorch']:.1f} mm (PyTorch fp32) "
                 f"-> {rmse.get('int8', rmse.get('onnx_int8')):.1f} mm (int8)")
    return text + "."


def ir_beside_lines(record: RunRecord) -> list[str]:
    """An ONNX export's OpenVINO IR (export.beside_ir), in one README line; none without one."""
    if record.format != "onnx" or not record.openvino_file:
        return []
    return [f"- `{record.openvino_file}` + its `.bin`: the same fp32 model as an OpenVINO IR, converted from "
            "PyTorch; `depth-lora predict` runs it on a CPU when OpenVINO is installed (OpenVINO runs it "
            "faster than the ONNX graph)."]


def depth_readme(record: RunRecord, folder_name: str) -> str:
    """A monocular run's export: how to run it with its runtime alone (numpy, Pillow, OpenCV; no
    torch, no depth-lora)."""
    writer = FORMATS[record.format]
    labels, (h, w) = record.labels, record.image_size_hw
    lo, hi = labels["depth_min_mm"], labels["depth_max_mm"]
    decode = {
        "minmax": f"labels * ({hi!r} - {lo!r}) + {lo!r}",
        "metric": f"labels * {METRIC_HEAD_UNIT_MM!r}  # the metric head predicts metres",
        "inverse": f"{lo!r} / np.maximum(labels, {lo / (4 * hi)!r})",
    }[labels["kind"]]
    export, snippet = record.export, writer.readme_snippet(record)
    int8 = export.get("int8")
    int8_lines = []
    if int8:
        kept = int8.get("kept", True)  # ONNX exports before the speed check always used int8
        where = "where it was exported" + (f" ({export['timed_on']})" if export.get("timed_on") else "")
        why_not = int8.get("why_not", f"not {INT8_MIN_GAIN:.0%} faster")
        use = (f"`depth-lora predict` uses it (it was faster than fp32 {where}). " if kept
               else f"not used by default: {why_not} {where}. ")
        method = int8.get("method", "dynamic quantization")
        int8_lines = [f"- `{writer.INT8_MODEL_FILE}`: the same model in int8 ({method}); {use}"
                      + int8_line(int8)]
    lines = [
        f"# {folder_name}: a depth-lora model exported to {EXPORT_FORMAT_NAMES[record.format]}",
        "",
        f"Exported from `{record.exported_from}` (base model `{record.base_model}`) by "
        "`depth-lora export`.",
        "",
        *([f"**Warning:** {record.warning}.", ""] if record.warning else []),
        f"- {writer.README_FILES}: fp32, input `{INPUT_NAME}` uint8 (batch, {h}, {w}, 3) RGB at the trained "
        f"input size (batch dynamic), output `{OUTPUT_NAME}` float32 (batch, {h}, {w}): the model's "
        f"{labels['kind']} labels.{writer.README_NOTE}",
        *int8_lines,
        *ir_beside_lines(record),
        parity_line(export),
        "",
        "## With depth-lora",
        "",
        "Wherever you run it from, with `THIS_FOLDER` the path of this folder:",
        "",
        "```bash",
        "depth-lora predict IMAGES... --adapter THIS_FOLDER --out predictions",
        "depth-lora complete CAPTURES... --adapter THIS_FOLDER --out completed",
        "```",
        "",
        f"## Without depth-lora ({snippet['needs']})",
        "",
        "Resize like the training (bicubic), run, upsample the labels bilinearly, then decode to mm:",
        "",
        "```python",
        *snippet["imports"],
        "",
        snippet["load"],
        'rgb = np.asarray(Image.open("capture.png").convert("RGB"))  # (H, W, 3) uint8',
        f"small = np.asarray(Image.fromarray(rgb).resize(({w}, {h}), Image.BICUBIC))",
        snippet["run"],
        "labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)",
        f"depth_mm = {decode}  # (H, W) float32 mm",
        "```",
        "",
        "OpenCV's bilinear upsampling matches PyTorch's (`align_corners=False`) to about 1e-4 of the label "
        "range; depth-lora itself upsamples with PyTorch.",
    ]
    return "\n".join(lines) + "\n"


def parity_line(export: dict) -> str:
    """The README's line on the fp32 parity check."""
    parity = export["parity"]
    return (f"- Parity with PyTorch (fp32) on {export['check_source']}, full resolution"
            + (f", checked in {' and '.join(export['parity_by_runtime'])} (the worst shown)"
               if export.get("parity_by_runtime") else "")
            + f": max |diff| {parity['max_abs_mm']:.4f} mm, mean {parity['mean_abs_mm']:.5f} mm "
            f"(tolerance {export['tolerance_mm']:g} mm).")


def completion_readme(record: RunRecord, folder_name: str) -> str:
    """A completion run's export: two inputs (the image and the prompt built from the measured
    depth), depth in mm out. The prompt (area-averaged depth, holes filled harmonically) is
    depth-lora's, so the README runs it with depth-lora and says what the graph takes for anyone
    who rebuilds the prompt."""
    writer = FORMATS[record.format]
    (h, w), completion = record.image_size_hw, record.completion
    channels, ph, pw = prompt_shape((h, w), completion)
    return "\n".join([
        f"# {folder_name}: a depth-lora completion model exported to {EXPORT_FORMAT_NAMES[record.format]}",
        "",
        f"Exported from `{record.exported_from}` (a `--task complete` run, base model `{record.base_model}`) "
        "by `depth-lora export`.",
        "",
        *([f"**Warning:** {record.warning}.", ""] if record.warning else []),
        f"- {writer.README_FILES}: fp32, inputs `{INPUT_NAME}` uint8 (batch, {h}, {w}, 3) RGB at the trained "
        f"input size and `{PROMPT_NAME}` float32 (batch, {channels}, {ph}, {pw}), output `{DEPTH_NAME}` "
        f"float32 (batch, {h}, {w}): depth in mm (batch dynamic)."
        + writer.README_NOTE.replace("predict --backend", "complete --backend"),
        parity_line(record.export),
        "",
        "## With depth-lora",
        "",
        "```bash",
        "depth-lora complete CAPTURES... --adapter THIS_FOLDER --out completed",
        "```",
        "",
        "It builds the prompt as training did, runs the graph, upsamples its depth bilinearly to the "
        "capture's resolution, anchors it to each hole's border and returns every measured pixel exactly.",
        "",
        "## The prompt, for your own runtime",
        "",
        f"`{PROMPT_NAME}` is the capture's measured depth in mm averaged over the measured pixels of "
        f"each cell of a {ph} x {pw} grid, cells with no measured pixel filled by harmonic (Laplace) "
        "interpolation"
        + (", and a second channel: the measured share of each cell, written as min + share x (max - "
           "min) of the first channel" if channels == 2 else "")
        + " (`depth_lora.data.completion.capture_prompt`). The model reads it normalised by its min "
        "and max, so it must have no hole and no NaN.",
    ]) + "\n"
