"""Runs as a user runs them in a shell: killed and resumed, and on two processes (gloo, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from depth_lora.data import find_captures, load_capture
from depth_lora.predict import load_bundle, predict_depth_mm
from depth_lora.synthetic import generate_demo_captures

TRAIN = ["train", "--model", "tiny", "--batch-size", "2", "--image-size", "70", "112",
         "--precision", "fp32", "--logging-steps", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    generate_demo_captures(folder, 12, seed=7, size_hw=(120, 194), workers=1)
    return folder


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_a_killed_run_resumes_from_its_last_checkpoint_and_finishes(data, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "depth_lora", *TRAIN, "--data", str(data), "--output", str(out),
            "--epochs", "8"]
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120

    def complete() -> list[Path]:  # the RNG state and the trainer state are the last files written
        return [p for p in out.glob("checkpoint-*")
                if (p / "rng_state.pth").is_file() and (p / "trainer_state.json").is_file()]

    # Kill hard once the first checkpoint is complete.
    while not complete() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert complete(), "the run ended before its first checkpoint"
    assert not (out / "depth_lora.json").exists(), "the run finished before it could be killed"
    for partial in set(out.glob("checkpoint-*")) - set(complete()):  # cut off mid-write: not resumable
        shutil.rmtree(partial)

    refused = subprocess.run(args, env=env(), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run(args + ["--resume"], env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    meta = json.loads((out / "depth_lora.json").read_text())
    steps = -(-len(json.loads((out / "split.json").read_text())["train"]) // 2) * 8  # batch 2, 8 epochs
    assert meta["global_step"] == steps
    state = json.loads((out / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    logged_steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert logged_steps == sorted(set(logged_steps)) and logged_steps[-1] == steps


@pytest.mark.skipif(shutil.which("torchrun") is None and not shutil.which(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_two_processes_train_one_adapter_that_reloads(data, tmp_path):
    out = tmp_path / "out"
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = [torchrun, "--nproc_per_node", "2", "-m", "depth_lora", *TRAIN, "--data", str(data),
            "--output", str(out), "--epochs", "2"]
    run = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("adapter, depth_lora.json and metrics.json written") == 2  # both ranks end
    assert sorted(p.name for p in out.glob("adapter_model*.safetensors")) == ["adapter_model.safetensors"]
    meta = json.loads((out / "depth_lora.json").read_text())
    assert meta["global_step"] == 6  # 10 captures / (2 processes * batch 2) = 3 steps an epoch
    capture = load_capture(find_captures(data)[0])
    depth = predict_depth_mm(load_bundle(out, "cpu"), capture.rgb)
    assert depth.shape == capture.depth_mm.shape and np.isfinite(depth).all()
