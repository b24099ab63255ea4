"""`depth-lora bench` measures every figure it promises (tiny model: numbers, not speed)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np

from depth_lora.cli.commands import main
from depth_lora.synthetic.demo import generate_demo_captures


def runtime_packages(runtime: str) -> tuple[str, ...]:
    """What a row of bench's inference table needs installed (the export and openvino extras)."""
    needs = (("onnxruntime", ("onnxruntime", "onnxscript")), ("openvino int8", ("openvino", "nncf")),
             ("openvino fp32 (onnx graph)", ("openvino", "onnxscript")), ("openvino", ("openvino",)))
    for prefix, packages in needs:
        if runtime.startswith(prefix):
            return packages
    return ()


def test_bench_reports_ours_reference_bare_model_inference_and_memory(tmp_path, capsys):
    data = tmp_path / "data"
    generate_demo_captures(data, 4, seed=11, size_hw=(120, 194), workers=1)
    out = tmp_path / "bench.json"
    args = ["bench", "--data", data, "--model", "tiny", "--image-size", 70, 112, "--batch-size", 2,
            "--steps", 3, "--precision", "fp32", "--short-sides", 56, 434, "--json", out]
    assert main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    for key in ("train_samples_per_s", "reference_samples_per_s", "speedup_vs_reference",
                "model_only_samples_per_s", "overhead", "data_fraction", "infer_s_per_capture",
                "complete_s_per_capture", "classical_s_per_capture", "train_peak_rss_mb", "infer_peak_rss_mb",
                "prepare_cold_s", "prepare_warm_s"):
        assert report[key] == report[key] and report[key] is not None, key  # present, not NaN
    assert report["train_samples_per_s"] > 0 and report["reference_samples_per_s"] > 0
    assert 0 <= report["data_fraction"] < 1
    assert report["prepare_cold_s"] > 0 and report["prepare_warm_s"] > 0  # both passes were timed
    assert "prepare captures         cold" in printed
    assert report["inference"]["size_hw"] == [120, 194]  # depth at the capture's full resolution
    assert report["reference"]["precision"] == "fp32"  # the original trained fp32 on CPU
    assert report["machine"]["device"].startswith("CPU") and report["machine"]["torch"]
    assert "speedup vs reference" in printed and "over inference" in printed
    assert report["complete_s_per_capture"] > 0 and report["classical_s_per_capture"] > 0
    assert "classical_s_per_capture" in printed
    table = report["inference"]["runtimes"]
    assert table["matmul_gflops"] > 0 and "torch_capability" in table["cpu"]
    names = [row["runtime"] for row in table["rows"]]
    assert names[0] == "pytorch fp32" and "onnxruntime fp32" in names
    assert "openvino fp32" in names or "openvino" in names  # measured, or a row saying it was not
    sizes = [tuple(row["size_hw"]) for row in table["rows"]]
    assert set(sizes) == {(70, 112), (56, 84)}  # 434 is above the trained short side: not a smaller size
    for size in set(sizes):  # one default per size: the deployment path
        defaults = [r for r in table["rows"] if tuple(r["size_hw"]) == size and r.get("deploy_default")]
        assert len(defaults) == 1, size
    assert "56x84" in printed
    for row in table["rows"]:  # measured wherever its runtime is installed, else a reason it was not
        if all(importlib.util.find_spec(package) for package in runtime_packages(row["runtime"])):
            assert "s_per_capture" in row and row["max_abs_mm_vs_fp32"] < 1.0, row
        else:
            assert row["note"].startswith("not"), row
    assert "CPU vector features" in printed and "the deployment path" in printed
    completer = report["inference"]["completer"]  # a completion model of the same architecture, timed
    for row in completer.values():
        assert isinstance(row, str) or row["complete_s"] > 0 and np.isfinite(row["extra_s"])
    assert "pytorch fp32" in completer and "completer, pytorch fp32" in printed


def test_bench_of_a_completion_run_times_its_hole_bank_and_its_loader_against_its_steps(tmp_path, capsys):
    data = tmp_path / "data"
    generate_demo_captures(data, 4, seed=13, size_hw=(120, 194), workers=1)
    out = tmp_path / "bench.json"
    args = ["bench", "--data", data, "--model", "tiny", "--image-size", 70, 112, "--batch-size", 2,
            "--steps", 4, "--precision", "fp32", "--phases", "ours", "--task", "complete", "--json", out]
    assert main([str(a) for a in args]) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "complete" and report["ours"]["hole_draws"] == 8
    assert report["phases"] == ["ours"] and "inference" not in report
    assert "reference_samples_per_s" not in report
    assert report["ours"]["hole_bank_s"] > 0 and report["ours"]["loader_s_per_batch"] > 0
    assert report["loader_share"] == report["ours"]["loader_s_per_batch"] / report["ours"]["step_s"]
    assert "task complete" in capsys.readouterr().out
    refused = main([str(a) for a in args[:-6]] + ["--task", "complete"])  # every phase: refused in one line
    assert refused == 2 and "--phases ours" in capsys.readouterr().err


def test_bench_compiles_the_bare_model_when_asked(tmp_path):
    data = tmp_path / "data"
    generate_demo_captures(data, 2, seed=14, size_hw=(120, 194), workers=1)
    out = tmp_path / "bench.json"
    args = ["bench", "--data", data, "--model", "tiny", "--image-size", 56, 84, "--batch-size", 2,
            "--steps", 3, "--precision", "fp32", "--phases", "model_only", "--compile", "--json", out]
    assert main([str(a) for a in args]) == 0
    report = json.loads(out.read_text())
    assert report["compile"] is True
    # The first step compiled the model: far slower than the compiled steps after it.
    assert report["model_only"]["first_step_s"] > 2 * 2 / report["model_only_samples_per_s"]
