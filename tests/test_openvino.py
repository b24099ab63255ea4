"""OpenVINO: the export and its parity check, int8 calibrated on training captures, predict and complete
through OpenVINO, what `--backend auto` picks, and one-line errors without the [openvino] extra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_capture, load_rgb
from depth_lora.errors import ConfigError, ModelError
from depth_lora.inference.predict import load_bundle

EXTRA = "the [openvino] extra is not installed (pip install -e '.[openvino]')"


@pytest.fixture(scope="module")
def run(shared_demo_run):
    return shared_demo_run  # one trained run for the whole session (conftest)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    pytest.importorskip("openvino", reason=EXTRA)
    from depth_lora.deploy.export import export_model

    lines = []
    folder = tmp_path_factory.mktemp("export") / "openvino"
    report = export_model(run[1], folder, "openvino", say=lines.append)
    return folder, report, lines


def test_openvino_export_writes_a_checked_ir_and_a_readme(exported):
    folder, report, lines = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "depth_lora.json", "metrics.json", "model.bin", "model.xml", "split.json"]
    record = json.loads((folder / "depth_lora.json").read_text())
    assert record["format"] == "openvino" and record["openvino_file"] == "model.xml"
    assert record["format_version"] == 2  # a depth-lora before OpenVINO refuses it in one line
    assert record["export"]["openvino"]  # the runtime's version, for the record
    assert record["export"]["timed_on"]  # the CPU its timings (and the int8 choice) hold for
    assert any(line.startswith("parity, OpenVINO vs PyTorch") for line in lines)
    assert report.parity["max_abs_mm"] < 0.05  # fp32 weights kept (not OpenVINO's fp16 default)


def test_predict_through_openvino_agrees_with_pytorch_on_every_capture(exported, run, tmp_path):
    folder, _, _ = exported
    data, out = run
    assert main(["predict", str(data), "--adapter", str(folder), "--out", str(tmp_path / "ov"),
                 "--format", "npy", "--backend", "openvino", "--batch-size", "3"]) == 0
    assert main(["predict", str(data), "--adapter", str(out), "--out", str(tmp_path / "torch"),
                 "--format", "npy", "--precision", "fp32"]) == 0
    files = sorted((tmp_path / "ov").glob("*.npy"))
    assert len(files) == len(find_captures(data)) == 10
    for path in files:
        assert np.abs(np.load(path) - np.load(tmp_path / "torch" / path.name)).max() <= 1.0


def test_complete_through_openvino_keeps_measured_pixels_and_matches_pytorch(exported, run):
    from depth_lora.deploy.openvino_runtime import load_openvino_bundle
    from depth_lora.inference.complete import complete_depth_mm

    folder, _, _ = exported
    data, out = run
    capture = load_capture(find_captures(data)[0])
    measured = capture.valid_mask
    ov_depth, filled = complete_depth_mm(load_openvino_bundle(folder), capture.rgb, capture.depth_mm)
    torch_bundle = load_bundle(out, "cpu", precision="fp32")
    torch_depth, _ = complete_depth_mm(torch_bundle, capture.rgb, capture.depth_mm)
    assert filled.any() and not (filled & measured).any()
    np.testing.assert_array_equal(ov_depth[measured], capture.depth_mm[measured])
    assert np.abs(ov_depth - torch_depth)[filled].max() <= 1.0


def test_readme_recipe_runs_with_openvino_alone(exported, run):
    folder, _, _ = exported
    data, out = run
    image = find_captures(data)[0].image
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    assert "openvino as ov" in code and "onnxruntime" not in code
    code = code.replace('"THIS_FOLDER/', f'"{folder}/').replace('"capture.png"', f'"{image}"')
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the README's own recipe
    bundle = load_bundle(out, "cpu", precision="fp32")
    expected = bundle.predict_mm([load_rgb(image)])[0]
    span = bundle.labels.depth_max_mm - bundle.labels.depth_min_mm
    assert np.median(np.abs(scope["depth_mm"] - expected)) < 1e-3 * span


def test_int8_is_calibrated_on_training_captures_and_used_only_if_faster(run, tmp_path):
    pytest.importorskip("openvino", reason=EXTRA)
    pytest.importorskip("nncf", reason=EXTRA)
    from depth_lora.deploy.export import export_model, int8_choice
    from depth_lora.deploy.openvino_runtime import load_openvino_bundle

    data, out = run
    report = export_model(out, tmp_path / "int8", "openvino", quantize="int8", say=lambda line: None)
    train = json.loads((out / "split.json").read_text())["train"]
    assert report.int8["calibration_captures"] == min(16, len(train))
    assert (tmp_path / "int8" / "model.int8.xml").is_file() and (tmp_path / "int8" / "model.xml").is_file()
    rmse = report.int8["rmse_mm"]
    assert np.isfinite(rmse["pytorch"]) and np.isfinite(rmse["int8"])
    assert report.int8["parity"]["mean_abs_mm"] < rmse["pytorch"]  # int8 moves depth less than the error
    seconds = report.seconds_per_image
    shift, span = report.int8["parity"]["mean_abs_mm"], report.int8["depth_span_mm"]
    assert report.int8["kept"] == int8_choice(seconds["openvino"], seconds["openvino_int8"], shift, span)[0]
    default = load_openvino_bundle(tmp_path / "int8").model_path.name
    assert default == ("model.int8.xml" if report.int8["kept"] else "model.xml")
    assert "int8" in (tmp_path / "int8" / "README.md").read_text()


def test_auto_runs_an_onnx_export_in_openvino_when_installed(tmp_path, monkeypatch):
    from depth_lora.deploy import backends
    from depth_lora.runs.folder import RunRecord, write_record

    folder = tmp_path / "onnx"
    folder.mkdir()
    write_record(folder, RunRecord("m", format="onnx", onnx_file="model.onnx"))
    monkeypatch.setattr(backends, "onnxruntime_has_cuda", lambda: False)
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    assert backends.choose_backend(folder) == "openvino"
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    assert backends.choose_backend(folder) == "onnx"
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "onnxruntime_has_cuda", lambda: True)  # a GPU: ONNX Runtime's CUDA
    assert backends.choose_backend(folder) == "onnx"
    assert backends.choose_backend(folder, "openvino") == "openvino"
    assert backends.choose_backend(tmp_path) == "torch"  # no export record: a PyTorch folder
    monkeypatch.setattr(backends, "onnxruntime_has_cuda", lambda: False)
    write_record(folder, RunRecord("m", format="onnx", onnx_file="model.int8.onnx"))
    assert backends.choose_backend(folder) == "onnx"  # onnxruntime's int8 graph stays where it was timed


def test_int8_becomes_the_model_only_when_clearly_faster_and_the_readme_says_which(exported):
    from depth_lora.deploy.export import int8_choice
    from depth_lora.runs.folder import read_record
    from depth_lora.runs.task import task_of

    assert int8_choice(2.0, 1.5, 5.0, 1000.0) == (True, "")
    assert not int8_choice(2.0, 1.95, 5.0, 1000.0)[0] and not int8_choice(2.0, 2.4, 5.0, 1000.0)[0]
    kept, why = int8_choice(2.0, 1.0, 608.0, 3000.0)  # fast, but it broke the model
    assert not kept and "608.0 mm" in why
    record = read_record(exported[0])
    int8 = {"parity": {"mean_abs_mm": 0.5, "max_abs_mm": 3.0}, "captures": 3, "method": "NNCF"}
    for kept, phrase in [(True, "`depth-lora predict` uses it"),
                         (False, "not used by default: not 5% faster")]:
        record.export = {**record.export, "int8": {**int8, "kept": kept}}
        text = task_of(record).export_readme(record, "x")
        assert phrase in text and record.export["timed_on"] in text


def test_a_backend_that_cannot_run_the_folder_is_one_line(exported, run, tmp_path, capsys):
    folder, _, _ = exported
    data, out = run
    for adapter, backend, expected in [(folder, "onnx", "an OpenVINO export, which --backend onnx"),
                                       (folder, "torch", "an OpenVINO export, which --backend torch"),
                                       (out, "openvino", "--format openvino --output DIR")]:
        assert main(["predict", str(data), "--adapter", str(adapter), "--out", str(tmp_path),
                     "--backend", backend]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1
    assert main(["complete", str(data), "--model", "tiny", "--out", str(tmp_path), "--backend", "onnx"]) == 2
    assert "--model runs in PyTorch" in capsys.readouterr().err


def test_missing_openvino_is_one_line_naming_the_extra(run, tmp_path, monkeypatch, capsys):
    from depth_lora.deploy.openvino_runtime import import_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"\[openvino\]"):
        import_openvino()
    args = ["export", "--adapter", str(run[1]), "--output", str(tmp_path / "x"), "--format", "openvino"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "[openvino]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_openvino_refuses_a_training_folder(run):
    pytest.importorskip("openvino", reason=EXTRA)
    from depth_lora.deploy.openvino_runtime import load_openvino_bundle

    with pytest.raises(ModelError, match="not an exported model"):
        load_openvino_bundle(run[1])


def test_the_export_command_prints_nothing_of_transformers_training_losses(run, tmp_path):
    """A fresh process: transformers says it once per process, so an earlier test cannot hide it."""
    pytest.importorskip("openvino", reason=EXTRA)
    out = subprocess.run([sys.executable, "-m", "depth_lora", "export", "--adapter", str(run[1]), "--format",
                          "openvino", "--output", str(tmp_path / "ov")], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OpenVINO export written" in out.stdout
    assert "loss_type" not in out.stdout + out.stderr and "ForCausalLMLoss" not in out.stdout + out.stderr
