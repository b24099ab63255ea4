"""`depth-lora bench`'s completion row: what filling a capture's holes with a completion model (a
`--task complete` run) costs over the monocular inference of the same architecture, at the trained
size, in PyTorch and on the deployment path (`export`, then OpenVINO reading the ONNX graph).

The two are timed in turn (`paired_seconds`), so a slow moment of the machine falls on both: the
completer reads the prompt (the measured depth area-averaged to half the input size, its holes filled
harmonically), runs the network with its prompt branch, and its output is anchored to each hole's
border and bounded (`complete_capture`), while the monocular path only predicts.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np

from depth_lora.bench.runtimes import measurable
from depth_lora.data.captures import load_rgb
from depth_lora.data.completion import PROMPT_SCALE
from depth_lora.data.dataset import LabelScheme
from depth_lora.deploy.export import paired_seconds
from depth_lora.deploy.graph import plain_model
from depth_lora.inference.complete import complete_capture
from depth_lora.inference.predict import ModelBundle, predict_depth_mm
from depth_lora.runs.folder import RunRecord
from depth_lora.runs.task import task_of

COMPLETION = {"output": "residual", "prompt_scale": PROMPT_SCALE, "prompt_channels": 1}  # the defaults


def bench_completer(model_name: str):
    """The completer a `--task complete` run trains from `model_name`, as it runs after training
    (the prompt branch added, the residual head), with LoRA where the bench's monocular model has it
    (the merged graphs the deployment path runs do not depend on where)."""
    from depth_lora.model.lora import apply_lora, to_channels_last
    from depth_lora.model.prompt import build_completer, start_residual_head

    completer = build_completer(model_name)[0]
    start_residual_head(completer)
    return to_channels_last(apply_lora(completer)).eval()


def completion_timing(model, labels: LabelScheme, model_name: str, size_hw, image: Path, depth_mm: np.ndarray,
                      precision: str, repeats: int, say=print) -> dict:
    """{"pytorch <precision>": {...}, "openvino fp32 (onnx graph)": {...} or why not}: per runtime,
    the median seconds of the monocular inference (`model`, PNG in, mm out) and of completing the
    capture with a completer of the same architecture, and their paired difference (extra_s)."""
    device = next(model.parameters()).device
    completer = bench_completer(model_name).to(device)
    record = RunRecord("bench", labels=labels.to_dict(), image_size_hw=tuple(size_hw))
    completer_record = RunRecord("bench", task="complete", completion=COMPLETION,
                                 image_size_hw=tuple(size_hw))
    pairs = {f"pytorch {precision}": (ModelBundle(model, labels, size_hw, record, image.parent, precision),
                                      ModelBundle(completer, None, size_hw, completer_record, image.parent,
                                                  precision))}
    out = {}
    with tempfile.TemporaryDirectory(prefix="depth_lora_bench_completion_") as work:
        if device.type == "cpu":  # the pair, or a row saying why not (not installed, exporter failed)
            measurable(pairs, "openvino fp32 (onnx graph)",
                       lambda: openvino_pair(model, completer, record, completer_record, Path(work)))
        for name, pair in pairs.items():
            if isinstance(pair, str):
                out[name] = pair
                continue
            monocular, completion = pair
            infer_s, complete_s, extra_s = paired_seconds(
                lambda b=monocular: predict_depth_mm(b, load_rgb(image)),
                lambda b=completion: complete_capture(b, load_rgb(image), depth_mm), repeats)
            out[name] = {"infer_s": infer_s, "complete_s": complete_s, "extra_s": extra_s}
            say(f"bench: completer, {name}: {complete_s:.3f} s per capture, {extra_s:+.3f} s over monocular "
                "inference")
    return out


def openvino_pair(model, completer, record: RunRecord, completer_record: RunRecord, work: Path) -> tuple:
    """The monocular model and the completer exported to ONNX in `work` and opened in OpenVINO (what
    `predict`/`complete --backend auto` run for an ONNX export on a CPU)."""
    from depth_lora.deploy import onnx_export
    from depth_lora.deploy.exported import record_labels
    from depth_lora.deploy.openvino_runtime import OpenVinoBundle, compile_model, import_openvino

    import_openvino()
    size_hw = record.image_size_hw
    bundles = []
    for name, net, run_record in (("monocular", model, record), ("completer", completer, completer_record)):
        folder = work / name
        folder.mkdir()
        merged = plain_model(copy.deepcopy(net).cpu())
        onnx_export.write(task_of(run_record).export_graph(merged, size_hw, run_record.completion), folder)
        path = folder / onnx_export.MODEL_FILE
        bundles.append(OpenVinoBundle(record_labels(run_record), size_hw, run_record, folder, path,
                                      compile_model(path)))
    return tuple(bundles)


def format_completion_timing(timing: dict) -> list[str]:
    """The bench's lines for it."""
    lines = []
    for name, row in timing.items():
        if isinstance(row, str):
            lines.append(f"completer, {name}: {row}")
            continue
        lines.append(f"completer, {name}: {row['complete_s']:.3f} s per capture (prompt, network, anchors), "
                     f"{row['extra_s']:+.3f} s over monocular inference ({row['infer_s']:.3f} s; medians, "
                     "timed in turn)")
    return lines
