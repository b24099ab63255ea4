"""`depth-lora bench`'s inference table: one capture, PNG in and depth in mm out at full resolution,
in every runtime installed (PyTorch fp32 and `auto`, ONNX Runtime, OpenVINO fp32 and int8), at the
trained input size and smaller ones; beside it, the CPU's vector features and its measured matrix
multiply rate, so each time can be read as a share of what the CPU can do.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from depth_lora.data.captures import load_rgb
from depth_lora.data.dataset import LabelScheme, processor_size_hw, resize_rgb
from depth_lora.deploy.export import compare_mm, paired_seconds
from depth_lora.deploy.graph import image_graph, plain_model
from depth_lora.inference.predict import ModelBundle, predict_depth_mm
from depth_lora.model.precision import cpu_features

CALIBRATION_IMAGES = 4  # bench's int8 calibration: the first bench captures (for timing, not accuracy)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best fp32 rate of an n x n matrix product in torch, GFLOP/s: what this CPU's cores reach
    on the kernel they run best (a practical peak; a model's layers get less)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def forward_gflop(model: torch.nn.Module, size_hw: tuple[int, int]) -> float:
    """GFLOP of one forward pass at `size_hw`, batch 1 (torch's FlopCounterMode; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(pixel_values=torch.zeros(1, 3, *size_hw))
    return counter.get_total_flops() / 1e9


def inference_sizes(trained_hw: tuple[int, int], short_sides: list[int]) -> list[tuple[int, int]]:
    """The trained size, then the same aspect ratio at each smaller short side (multiples of 14)."""
    h, w = trained_hw
    smaller = [processor_size_hw(h, w, target=side) for side in short_sides if side < min(h, w)]
    return list(dict.fromkeys([tuple(trained_hw), *smaller]))  # each size once, the trained one first


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed(fn, repeats: int) -> float:
    """Mean seconds of `fn()` over `repeats` calls after one warm-up call."""
    fn()
    return float(np.mean([_seconds(fn) for _ in range(repeats)]))


def measurable(bundles: dict, name: str, build) -> None:
    """bundles[name] = build(), or the reason it could not be built (a row saying so, not a crash)."""
    try:
        bundles[name] = build()
    except Exception as exc:  # not installed (ConfigError), or the exporter or converter failed
        bundles[name] = f"not measured ({exc.__class__.__name__}: {str(exc)[:80]})"


def runtime_bundles(model, merged, labels: LabelScheme, size_hw, precision: str, calibration,
                    work: Path) -> dict:
    """name -> a bundle that predicts mm (or why that runtime was not measured): PyTorch as `predict`
    runs a run folder (`model`, the adapter unmerged), and on a CPU every export runtime installed,
    exported from `merged` into `work`; int8 calibrated on `calibration` (full-size images)."""
    from depth_lora.deploy import onnx_export, openvino_export
    from depth_lora.deploy.onnx_runtime import OnnxBundle, session_options
    from depth_lora.deploy.openvino_runtime import OpenVinoBundle, compile_model, openvino_installed
    from depth_lora.runs.folder import RunRecord

    record = RunRecord("bench", labels=labels.to_dict(), image_size_hw=size_hw)  # a monocular model's
    bundles = {"pytorch fp32": ModelBundle(model, labels, size_hw, record, work, "fp32")}
    if precision != "fp32":
        bundles[f"pytorch {precision} (auto)"] = ModelBundle(model, labels, size_hw, record, work, precision)
    if next(model.parameters()).device.type != "cpu":
        return bundles  # the export runtimes below run on the CPU
    args = (labels, size_hw, record, work)
    onnx_file, ir, int8 = (work / f for f in (onnx_export.MODEL_FILE, openvino_export.MODEL_FILE,
                                               openvino_export.INT8_MODEL_FILE))

    def onnxruntime_bundle():
        onnx_export.require()
        onnx_export.write(image_graph(merged, size_hw), work)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_file), session_options(),
                                               providers=["CPUExecutionProvider"])
        return OnnxBundle(*args, onnx_file, session)

    def openvino_int8_bundle():
        openvino_export.quantize_int8(work, [resize_rgb(rgb, size_hw) for rgb in calibration])
        return OpenVinoBundle(*args, int8, compile_model(int8))

    def openvino_bundle():
        openvino_export.write(image_graph(merged, size_hw), work)
        return OpenVinoBundle(*args, ir, compile_model(ir))

    measurable(bundles, "onnxruntime fp32", onnxruntime_bundle)
    if not openvino_installed():
        bundles["openvino"] = "not measured (the [openvino] extra is not installed)"
        return bundles
    if onnx_file.is_file():  # what `predict --backend auto` ran for an ONNX export before the IR beside it
        measurable(bundles, "openvino fp32 (onnx graph)",
                    lambda: OpenVinoBundle(*args, onnx_file, compile_model(onnx_file)))
    measurable(bundles, "openvino fp32", openvino_bundle)
    if ir.is_file():
        measurable(bundles, "openvino int8", openvino_int8_bundle)
    return bundles


# What `export` + `predict --backend auto` run on a CPU: the IR written beside the ONNX graph when
# OpenVINO is installed (deploy.export.beside_ir), else the graph in ONNX Runtime.
DEPLOY_DEFAULT = ("openvino fp32", "onnxruntime fp32")


def runtime_table(model, labels: LabelScheme, trained_hw, short_sides, image: Path, depth_mm, rgbs,
                  calibration, precision: str, repeats: int, say=print) -> dict:
    """Seconds per capture (PNG in, mm out, full resolution) per runtime and input size, each row's
    max |diff| from PyTorch fp32 at the same size, the forward's GFLOP and the CPU's matmul rate; at
    the trained size also `complete` (the capture's holes filled), timed in turn with inference, in
    PyTorch and on the deployment path (`export` with its defaults, then --backend auto)."""
    from depth_lora.inference.complete import complete_capture

    on_cpu = next(model.parameters()).device.type == "cpu"
    peak = matmul_gflops()
    merged = plain_model(copy.deepcopy(model).cpu())  # exported; `model` stays as predict runs it
    rows, complete = [], {}
    for size_hw in inference_sizes(trained_hw, short_sides):
        gflop = forward_gflop(merged, size_hw)
        with tempfile.TemporaryDirectory(prefix="depth_lora_bench_") as work:
            bundles = runtime_bundles(model, merged, labels, size_hw, precision, calibration, Path(work))
            exported = [name for name in DEPLOY_DEFAULT if not isinstance(bundles.get(name, ""), str)]
            deploy = exported[0] if exported else None
            reference = bundles["pytorch fp32"].predict_mm(rgbs)
            for name, bundle in bundles.items():
                row = {"runtime": name, "size_hw": list(size_hw), "forward_gflop": gflop}
                if isinstance(bundle, str):
                    rows.append({**row, "note": bundle})
                    continue
                seconds = timed(lambda b=bundle: predict_depth_mm(b, load_rgb(image)), repeats)
                diff = compare_mm(bundle.predict_mm(rgbs), reference)["max_abs_mm"]
                row.update(s_per_capture=seconds, max_abs_mm_vs_fp32=diff, deploy_default=name == deploy,
                           gflop_per_s=gflop / seconds)
                if on_cpu or not name.startswith("pytorch"):  # the peak is the CPU's
                    row["share_of_matmul_peak"] = gflop / seconds / peak
                rows.append(row)
                say(f"bench: {name:<28} {size_hw[0]}x{size_hw[1]}  {seconds:.3f} s per capture")
            if tuple(size_hw) == tuple(trained_hw):
                torch_name = [n for n in bundles if n.startswith("pytorch")][-1]  # the auto precision
                for name in dict.fromkeys(n for n in (torch_name, deploy) if n):
                    bundle = bundles[name]
                    infer_s, complete_s, extra_s = paired_seconds(
                        lambda b=bundle: predict_depth_mm(b, load_rgb(image)),
                        lambda b=bundle: complete_capture(b, load_rgb(image), depth_mm), repeats)
                    complete[name] = {"s_per_capture": complete_s, "infer_s": infer_s, "extra_s": extra_s}
    return {"cpu": cpu_features(), "matmul_gflops": peak, "rows": rows, "complete_s_per_capture": complete}


def format_runtime_table(table: dict, capture_hw) -> list[str]:
    """The table's lines for `format_bench`."""
    cpu = table["cpu"]
    lines = [f"CPU vector features: {', '.join(cpu['features']) or 'none listed'}; torch kernels "
             f"{cpu['torch_capability']}; fp32 matmul {table['matmul_gflops']:.0f} GFLOP/s (2048^2, best of "
             "5: the 'peak' below)",
             f"inference per {capture_hw[0]}x{capture_hw[1]} capture (PNG in, mm out), by runtime and input "
             "size:",
             f"  {'runtime':<28} {'input':>9} {'s/capture':>10} {'GFLOP/s':>8} {'of peak':>8} "
             f"{'max|d| mm':>10}"]
    for row in table["rows"]:
        size = f"{row['size_hw'][0]}x{row['size_hw'][1]}"
        name = row["runtime"] + (" *" if row.get("deploy_default") else "")
        if "note" in row:
            lines.append(f"  {name:<28} {size:>9} {row['note']}")
            continue
        share = f"{100 * row['share_of_matmul_peak']:>7.0f}%" if "share_of_matmul_peak" in row else f"{'':>8}"
        lines.append(f"  {name:<28} {size:>9} {row['s_per_capture']:>10.3f} {row['gflop_per_s']:>8.1f} "
                     f"{share} {row['max_abs_mm_vs_fp32']:>10.3f}")
    if any(row.get("deploy_default") for row in table["rows"]):
        lines.append("  * the deployment path: `export` with its defaults, then predict/complete "
                     "--backend auto")
    for name, timing in table["complete_s_per_capture"].items():
        lines.append(f"complete, {name}: {timing['s_per_capture']:.3f} s per capture, "
                     f"{timing['extra_s']:+.3f} s over inference ({timing['infer_s']:.3f} s; medians, "
                     "timed in turn)")
    return lines
