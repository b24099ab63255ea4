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
from depth_lora.deploy.export import compare_mm
from depth_lora.deploy.graph import plain_model
from depth_lora.inference.predict import ModelBundle, predict_depth_mm

# /proc/cpuinfo flag -> the name the table prints: what decides which kernels a runtime can use.
CPU_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
             "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX-BF16",
             "amx_int8": "AMX-INT8"}
CALIBRATION_IMAGES = 4  # bench's int8 calibration: the bench captures (timing, not accuracy)


def cpu_features() -> dict:
    """The CPU's vector features as /proc/cpuinfo lists them, and the kernels torch picked."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"features": [name for flag, name in CPU_FLAGS.items() if flag in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


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
    return [tuple(trained_hw), *[s for s in smaller if s != tuple(trained_hw)]]


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed(fn, repeats: int) -> float:
    """Mean seconds of `fn()` over `repeats` calls after one warm-up call."""
    fn()
    return float(np.mean([_seconds(fn) for _ in range(repeats)]))


def runtime_bundles(model, merged, labels: LabelScheme, size_hw, precision: str, calibration,
                    work: Path) -> dict:
    """name -> a bundle that predicts mm (or why that runtime was not measured): PyTorch as `predict`
    runs a run folder (`model`, the adapter unmerged), and on a CPU every export runtime installed,
    exported from `merged` into `work`."""
    from depth_lora.deploy import onnx_export, openvino_export
    from depth_lora.deploy.onnx_runtime import OnnxBundle, session_options
    from depth_lora.deploy.openvino_runtime import OpenVinoBundle, compile_model, openvino_installed

    bundles = {"pytorch fp32": ModelBundle(model, labels, size_hw, {}, work, "fp32")}
    if precision != "fp32":
        bundles[f"pytorch {precision} (auto)"] = ModelBundle(model, labels, size_hw, {}, work, precision)
    if next(model.parameters()).device.type != "cpu":
        return bundles  # the export runtimes below run on the CPU
    plain, args = merged, (labels, size_hw, {}, work)
    try:
        onnx_export.require()
        onnx_export.write(plain, size_hw, work)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(work / onnx_export.MODEL_FILE), session_options(),
                                               providers=["CPUExecutionProvider"])
        bundles["onnxruntime fp32"] = OnnxBundle(*args, work / onnx_export.MODEL_FILE, session)
    except Exception as exc:  # not installed (ConfigError) or the exporter failed: a row that says so
        bundles["onnxruntime fp32"] = f"not measured ({exc.__class__.__name__}: {str(exc)[:80]})"
    if not openvino_installed():
        bundles["openvino"] = "not measured (the [openvino] extra is not installed)"
        return bundles
    onnx_file = work / onnx_export.MODEL_FILE
    if onnx_file.is_file():  # what `predict --backend auto` runs for an ONNX export on a CPU
        bundles["openvino fp32 (onnx graph)"] = OpenVinoBundle(*args, onnx_file, compile_model(onnx_file))
    openvino_export.write(plain, size_hw, work)
    ir = work / openvino_export.MODEL_FILE
    bundles["openvino fp32"] = OpenVinoBundle(*args, ir, compile_model(ir))
    try:
        openvino_export.quantize_int8(work, [resize_rgb(rgb, size_hw) for rgb in calibration])
        int8 = work / openvino_export.INT8_MODEL_FILE
        bundles["openvino int8"] = OpenVinoBundle(*args, int8, compile_model(int8))
    except Exception as exc:  # NNCF missing or failing: say so in the table
        bundles["openvino int8"] = f"not measured ({exc.__class__.__name__}: {str(exc)[:80]})"
    return bundles


DEPLOY_DEFAULT = ("openvino fp32 (onnx graph)", "onnxruntime fp32")  # what `export` + `predict` run


def runtime_table(model, labels: LabelScheme, trained_hw, short_sides, image: Path, depth_mm, rgbs,
                  precision: str, repeats: int, say=print) -> dict:
    """Seconds per capture (PNG in, mm out, full resolution) per runtime and input size, each row's
    max |diff| from PyTorch fp32 at the same size, the forward's GFLOP and the CPU's matmul rate; at
    the trained size also `complete` (the capture's holes filled) in PyTorch and on the deployment
    path (`export` with its defaults, then `predict`/`complete` with --backend auto)."""
    from depth_lora.inference.complete import complete_capture

    peak = matmul_gflops()
    merged = plain_model(copy.deepcopy(model).cpu())  # exported; `model` stays as predict runs it
    rows, complete = [], {}
    for size_hw in inference_sizes(trained_hw, short_sides):
        gflop = forward_gflop(merged, size_hw)
        with tempfile.TemporaryDirectory(prefix="depth_lora_bench_") as work:
            bundles = runtime_bundles(model, merged, labels, size_hw, precision, rgbs, Path(work))
            deploy = next((name for name in DEPLOY_DEFAULT if not isinstance(bundles.get(name, ""), str)),
                          "pytorch fp32")
            if tuple(size_hw) == tuple(trained_hw):
                torch_name = [n for n in bundles if n.startswith("pytorch")][-1]  # the auto precision
                for name in dict.fromkeys((torch_name, deploy)):
                    run = lambda b=bundles[name]: complete_capture(b, load_rgb(image), depth_mm)  # noqa: E731
                    complete[name] = timed(run, repeats)
            reference = bundles["pytorch fp32"].predict_mm(rgbs)
            for name, bundle in bundles.items():
                row = {"runtime": name, "size_hw": list(size_hw), "forward_gflop": gflop}
                if isinstance(bundle, str):
                    rows.append({**row, "note": bundle})
                    continue
                seconds = timed(lambda b=bundle: predict_depth_mm(b, load_rgb(image)), repeats)
                diff = compare_mm(bundle.predict_mm(rgbs), reference)["max_abs_mm"]
                rows.append({**row, "s_per_capture": seconds, "max_abs_mm_vs_fp32": diff, "deploy_default":
                             name == deploy, "gflop_per_s": gflop / seconds,
                             "share_of_matmul_peak": gflop / seconds / peak})
                say(f"bench: {name:<28} {size_hw[0]}x{size_hw[1]}  {seconds:.3f} s per capture")
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
        lines.append(f"  {name:<28} {size:>9} {row['s_per_capture']:>10.3f} {row['gflop_per_s']:>8.1f} "
                     f"{100 * row['share_of_matmul_peak']:>7.0f}% {row['max_abs_mm_vs_fp32']:>10.3f}")
    lines.append("  * the deployment path: `export` with its defaults, then predict/complete --backend auto")
    trained = table["rows"][0]["size_hw"]  # the first size is the trained one (inference_sizes)
    by_name = {r["runtime"]: r for r in table["rows"] if "s_per_capture" in r and r["size_hw"] == trained}
    for name, seconds in table["complete_s_per_capture"].items():
        infer = by_name[name]["s_per_capture"]
        lines.append(f"complete, {name:<22} {seconds:.3f} s per capture ({seconds - infer:+.3f} s over "
                     "inference)")
    return lines
