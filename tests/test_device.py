"""One device and one precision for every stage of a run, and the fp16 path's dtype plumbing.

No test here needs a GPU. On a CPU every device is the CPU, so a real run shows the stage record
and the precision each stage's forwards ran in; the failure rule of `benchmarks/gpu_check.sh`
(a stage whose forwards ran off the run's device) is shown with a run device that is not this
one. The fp16 tests run torch's CPU fp16 autocast and `GradScaler("cpu")`: they exercise the fp16
dtype plumbing (which layers run in fp16, the head and the loss in fp32, the scaler's unscale),
not the CUDA kernels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import demo_run

from depth_lora.model.checkpoints import build_model
from depth_lora.model.lora import apply_lora
from depth_lora.model.precision import resolve_device, resolve_precision
from depth_lora.runs.folder import read_stages
from depth_lora.training.losses import build_loss
from depth_lora.training.stages import StageLog, autocast_precision


def test_a_device_asked_for_is_kept_and_none_resolves_to_this_machines():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    assert resolve_precision("auto") == resolve_precision("auto", expected)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A real tiny run in bf16 autocast (emulated where the CPU has no bf16: slower, same dtypes)."""
    return demo_run(tmp_path_factory.mktemp("bf16_run"), captures_seed=3, precision="bf16")


def test_every_stage_of_a_run_ran_its_model_on_the_runs_device_in_the_runs_precision(bf16_run):
    _, out = bf16_run
    stages = read_stages(out)
    assert stages["device"] == "cpu" and stages["precision"] == "bf16"
    assert list(stages["stages"]) == ["calibration", "training", "held_out"]
    for name, entry in stages["stages"].items():
        assert entry["devices"] == ["cpu"], name
        assert entry["precisions"] == ["bf16"], name  # the calibration too: the precision evaluate applies
        assert entry["seconds"] > 0
    split = json.loads((out / "split.json").read_text())
    assert stages["stages"]["calibration"]["forwards"] == len(split["train"]) + len(split["val"])
    training = stages["stages"]["training"]
    assert training["steps"] == 4 and training["evaluations"] >= 1
    assert 0 < training["step_s"] and 0 < training["first_step_s"]
    record = json.loads((out / "depth_lora.json").read_text())
    assert record["precision"] == "bf16"


def test_a_stage_whose_forward_ran_off_the_runs_device_is_named():
    model = build_model("tiny")[0].eval()
    log = StageLog(torch.device("cuda", 0), "bf16")  # a GPU run whose model stayed on the CPU
    with log.stage("calibration"), torch.no_grad():
        model(pixel_values=torch.rand(1, 3, 28, 42))
    with log.stage("idle"):
        pass  # a stage that ran no forward at all is named too
    assert log.off_device() == ["calibration", "idle"]
    assert log.stages["calibration"]["devices"] == ["cpu"]
    assert log.stages["calibration"]["precisions"] == ["fp32"]
    assert log.stages["calibration"]["forwards"] == 1  # the model's, not its backbone's inside it
    assert "calibration" in log.summary_line() and "ON cpu" in log.summary_line()
    on_cpu = StageLog(torch.device("cpu"), "fp32")
    with on_cpu.stage("calibration"), torch.no_grad():
        model(pixel_values=torch.rand(1, 3, 28, 42))
    assert on_cpu.off_device() == []


def test_autocast_precision_names_the_autocast_in_force():
    assert autocast_precision("cpu") == "fp32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_precision("cpu") == "bf16"
    with torch.autocast("cpu", dtype=torch.float16):
        assert autocast_precision("cpu") == "fp16"


@pytest.mark.parametrize("name, size_hw", [("tiny", (70, 112)), ("small-random", (56, 84))])
def test_fp16_autocast_forward_and_scaled_backward_are_finite_with_head_and_loss_in_fp32(name, size_hw):
    torch.manual_seed(0)
    model = apply_lora(build_model(name, seed=0)[0], train_head=True).train()
    linear_dtypes = []
    query = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))  # under LoRA
    query.register_forward_hook(lambda module, args, output: linear_dtypes.append(output.dtype))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pixel_values = torch.rand(2, 3, *size_hw)
    labels = torch.rand(2, *size_hw)
    valid = torch.rand(2, *size_hw) > 0.3
    with torch.autocast("cpu", dtype=torch.float16):
        pred = model(pixel_values=pixel_values).predicted_depth
        loss = build_loss("mse")(pred, labels, valid)
    assert linear_dtypes == [torch.float16]  # the backbone's matrix products ran in fp16
    assert pred.dtype == torch.float32 and loss.dtype == torch.float32  # the head and the loss: fp32
    assert torch.isfinite(loss)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)  # master weights stay fp32
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**10  # no inf or NaN gradient: the step was taken, the scale kept
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert np.isfinite([float(p.abs().max()) for p in after]).all()
