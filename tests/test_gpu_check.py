"""benchmarks/gpu_check.sh: its arguments, and its end-to-end part run on the CPU (--cpu), so the
script a lent GPU will run is known to work before it gets there."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(SCRIPT.parent))  # benchmarks/stage_report.py, the rule the script applies


def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "from_env")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path)


def test_unknown_option_and_two_folders_are_refused_in_one_line(tmp_path):
    for args, message in [(("--fast",), "unknown option --fast"), (("--cpu", "a", "b"), "one output folder")]:
        result = run_script(*args, tmp_path=tmp_path)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is here: the GPU part would run")
def test_without_a_gpu_it_says_so_and_names_the_cpu_mode(tmp_path):
    result = run_script(tmp_path=tmp_path)
    assert result.returncode == 2 and "--cpu" in result.stderr
    assert not (tmp_path / "from_env").exists()


def test_cpu_mode_reports_stages_and_inference_and_runs_every_verb_end_to_end(tmp_path):
    result = run_script("--cpu", str(tmp_path / "out"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    stages = (tmp_path / "out" / "stages.txt").read_text()
    for stage in ("calibration", "training", "held_out"):
        assert re.search(rf"^{stage} +cpu +fp32 +[1-9]", stages, re.M), stage
    assert "first step" in stages and "stages: every stage ran its model on cpu" in stages
    infer = (tmp_path / "out" / "infer.txt").read_text()
    assert re.search(r"batch +1: +[0-9.]+ ms per image", infer) and "best:" in infer
    log = (tmp_path / "out" / "e2e.txt").read_text()
    assert "gpu_check: end to end passed (fp32" in log
    assert "12 of 12 images predicted" in log and "12 of 12 captures completed" in log
    assert "fine_tuned" in log  # the evaluation table
    exporting = importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript")
    assert ("ONNX export written" if exporting else "export: skipped") in log
    assert not (tmp_path / "from_env").exists()  # the folder given wins over $OUT


def _stages(**devices) -> dict:
    return {"device": "cuda:0", "precision": "bf16",
            "stages": {name: {"devices": found, "precisions": ["bf16"], "forwards": len(found),
                              "seconds": 1.0} for name, found in devices.items()}}


def test_the_stage_rule_fails_a_stage_on_the_cpu_one_that_ran_nothing_and_a_missing_one(tmp_path, capsys):
    from stage_report import faults, main

    whole = _stages(calibration=["cuda:0"], training=["cuda:0"], held_out=["cuda:0"])
    assert faults(whole, "cuda") == []
    assert faults(_stages(calibration=["cpu"], training=["cuda:0"], held_out=["cuda:0"]), "cuda") == [
        "calibration: ran on cpu, not on cuda"]
    assert faults(_stages(calibration=["cuda:0"], training=[], held_out=["cuda:0"]), "cuda") == [
        "training: ran no forward of a model"]
    assert faults(_stages(calibration=["cuda:0"], training=["cuda:0"]), "cuda") == [
        "held_out: missing (the run has calibration, training)"]
    (tmp_path / "stages.json").write_text(json.dumps(_stages(calibration=["cpu"], training=["cuda:1"],
                                                             held_out=["cuda:1"])))
    assert main([str(tmp_path), "--expect", "cuda"]) == 1
    printed = capsys.readouterr()
    assert "STAGE OFF DEVICE: calibration: ran on cpu" in printed.err and "stages: FAILED" in printed.out
    assert main([str(tmp_path / "nothing"), "--expect", "cuda"]) == 2
