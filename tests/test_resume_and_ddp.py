"""Runs as a user runs them in a shell: killed and resumed, and on two processes (gloo, CPU)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from depth_lora.data.captures import find_captures, load_capture
from depth_lora.data.dataset import prepare_captures
from depth_lora.inference.predict import load_bundle, predict_depth_mm
from depth_lora.synthetic.demo import generate_demo_captures

TRAIN = ["train", "--model", "tiny", "--batch-size", "2", "--image-size", "70", "112",
         "--precision", "fp32", "--logging-steps", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    generate_demo_captures(folder, 12, seed=7, size_hw=(120, 194), workers=1)
    return folder


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# The run, killed hard (SIGKILL, as by the OOM killer or a power cut) the moment its first checkpoint
# is complete: deterministic, no polling race against the run.
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from depth_lora.training.trainer import DepthTrainer
save = DepthTrainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
DepthTrainer._save_checkpoint = save_then_die
from depth_lora.cli.commands import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_from_its_last_checkpoint_and_finishes(data, tmp_path):
    out = tmp_path / "out"
    options = [*TRAIN, "--data", str(data), "--output", str(out), "--epochs", "8"]
    args = [sys.executable, "-m", "depth_lora", *options]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT, *options], env=env(),
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = [p.name for p in out.glob("checkpoint-*")]
    assert len(checkpoints) == 1 and (out / checkpoints[0] / "rng_state.pth").is_file()
    assert not (out / "depth_lora.json").exists()

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
    assert run.stdout.count("adapter, depth_lora.json and metrics.json written") == 1  # rank 0 wrote them
    assert sorted(p.name for p in out.glob("adapter_model*.safetensors")) == ["adapter_model.safetensors"]
    meta = json.loads((out / "depth_lora.json").read_text())
    train = len(json.loads((out / "split.json").read_text())["train"])
    assert meta["global_step"] == 2 * math.ceil(train / (2 * 2))  # 2 epochs of 2 processes x batch 2
    # The zero-shot calibration ran after the process group started, each rank on its share of the
    # captures, and the shares were gathered: rank 0 ran half of them, the fit saw every pixel.
    split = json.loads((out / "split.json").read_text())
    rank_0_share = -(-len(split["train"]) // 2) + -(-len(split["val"]) // 2)  # every 2nd, from the 1st
    assert json.loads((out / "stages.json").read_text())["stages"]["calibration"]["forwards"] == rank_0_share
    calibration = meta["zero_shot_calibration"]
    assert calibration["train_captures"] == len(split["train"])
    size = tuple(meta["image_size_hw"])
    by_key = {f.key: f for f in find_captures(data)}
    assert calibration["train_pixels"] == sum(
        int(np.isfinite(prepare_captures([by_key[k]], size, progress=False)[0].depth_mm).sum())
        for k in split["train"])
    capture = load_capture(find_captures(data)[0])
    depth = predict_depth_mm(load_bundle(out, "cpu"), capture.rgb)
    assert depth.shape == capture.depth_mm.shape and np.isfinite(depth).all()
