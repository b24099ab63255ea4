"""benchmarks/gpu_check.sh: its arguments, and its end-to-end part run on the CPU (--cpu), so the
script a lent GPU will run is known to work before it gets there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


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


def test_cpu_mode_runs_train_evaluate_predict_complete_export_end_to_end(tmp_path):
    result = run_script("--cpu", str(tmp_path / "out"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "out" / "e2e.txt").read_text()
    assert "gpu_check: end to end passed (fp32" in log
    assert "12 of 12 images predicted" in log and "12 of 12 captures completed" in log
    assert "fine_tuned" in log  # the evaluation table
    assert "export written" in log or "export: skipped" in log
    assert not (tmp_path / "from_env").exists()  # the folder given wins over $OUT
