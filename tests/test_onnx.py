"""ONNX export, its parity check, the onnx backend of predict, and reduced-precision / batched inference."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys

import numpy as np
import pytest
from conftest import demo_run

from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_rgb
from depth_lora.errors import ConfigError, ModelError
from depth_lora.inference.predict import load_bundle, predict_files

EXTRA = "the [export] extra is not installed (pip install -e '.[export]')"


@pytest.fixture(scope="module")
def run(shared_demo_run):
    return shared_demo_run  # one trained run for the whole session (conftest)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason=EXTRA)
    pytest.importorskip("onnxscript", reason=EXTRA)
    from depth_lora.deploy.export import export_model

    _, out = run
    lines = []
    folder = tmp_path_factory.mktemp("export") / "onnx"
    report = export_model(out, folder, "onnx", say=lines.append)
    return folder, report, lines


def test_export_writes_a_checked_graph_and_a_readme(exported):
    folder, report, lines = exported
    # With OpenVINO installed, its IR beside the graph: what `predict --backend auto` runs on a CPU.
    ir = ["model.bin", "model.xml"] if importlib.util.find_spec("openvino") else []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["README.md", "depth_lora.json", "metrics.json", "model.onnx", "split.json", *ir])
    parity_line = next(line for line in lines if line.startswith("parity"))
    printed = float(re.search(r"max \|diff\| ([\d.]+) mm", parity_line).group(1))
    assert printed == pytest.approx(report.parity["max_abs_mm"], abs=1e-4)
    assert report.parity["max_abs_mm"] < 0.05  # fp32 on both sides: well inside the 1 mm tolerance
    test_keys = json.loads((folder / "split.json").read_text())["test"]
    assert report.parity["images"] == min(3, len(test_keys))
    assert f"{len(test_keys)} test capture(s) of the run" in report.check_source
    assert not folder.with_name("onnx.partial").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # like any folder the user makes, not 0700


def test_onnx_and_pytorch_backends_write_the_same_depth(exported, run, tmp_path):
    folder, _, _ = exported
    data, out = run
    assert main(["predict", str(data), "--adapter", str(folder), "--out", str(tmp_path / "onnx"),
                 "--format", "npy", "--batch-size", "3", "--backend", "onnx"]) == 0  # ONNX Runtime itself
    assert main(["predict", str(data), "--adapter", str(out), "--out", str(tmp_path / "torch"),
                 "--format", "npy", "--precision", "fp32"]) == 0
    onnx_files = sorted((tmp_path / "onnx").glob("*.npy"))
    assert len(onnx_files) == len(find_captures(data)) == 10
    for path in onnx_files:
        a, b = np.load(path), np.load(tmp_path / "torch" / path.name)
        assert a.shape == b.shape == (120, 194)
        assert np.abs(a - b).max() <= 1.0


def test_readme_recipe_runs_without_depth_lora(exported, run):
    """The README's snippet (onnxruntime, numpy, Pillow, OpenCV) gives depth-lora's depth."""
    folder, _, _ = exported
    data, out = run
    image = find_captures(data)[0].image
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    assert '"THIS_FOLDER/' in code and "--adapter THIS_FOLDER" in (folder / "README.md").read_text()
    code = code.replace('"THIS_FOLDER/', f'"{folder}/').replace('"capture.png"', f'"{image}"')
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the README's own recipe
    expected = load_bundle(out, "cpu", precision="fp32").predict_mm([load_rgb(image)])[0]
    labels = load_bundle(out, "cpu").labels
    assert scope["depth_mm"].shape == expected.shape
    # OpenCV's bilinear weights are rounded to about 1e-4: a small share of the depth range.
    span = labels.depth_max_mm - labels.depth_min_mm
    assert np.median(np.abs(scope["depth_mm"] - expected)) < 1e-3 * span


def test_int8_export_reports_its_cost_on_the_held_out_captures(run, tmp_path):
    pytest.importorskip("onnxruntime", reason=EXTRA)
    pytest.importorskip("onnxscript", reason=EXTRA)
    from depth_lora.deploy.export import export_model

    _, out = run
    report = export_model(out, tmp_path / "int8", "onnx", quantize="int8", say=lambda line: None)
    assert (tmp_path / "int8" / "model.int8.onnx").is_file()
    rmse = report.int8["rmse_mm"]
    assert np.isfinite(rmse["pytorch"]) and np.isfinite(rmse["int8"])
    # int8 weights move the depth, but not by more than the error the model already makes.
    assert report.int8["parity"]["mean_abs_mm"] < rmse["pytorch"]
    # The folder's model is int8 only where int8 ran faster than fp32 (timed in the same export).
    from depth_lora.deploy.export import int8_pays
    from depth_lora.deploy.onnx_runtime import load_onnx_bundle

    kept = int8_pays(report.seconds_per_image["onnx"], report.seconds_per_image["onnx_int8"])
    assert report.int8["kept"] == kept
    default = load_onnx_bundle(tmp_path / "int8").model_path.name
    assert default == ("model.int8.onnx" if kept else "model.onnx")


def test_a_failed_parity_check_writes_nothing(run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason=EXTRA)
    pytest.importorskip("onnxscript", reason=EXTRA)
    from depth_lora.deploy import export as onnx_export

    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE_MM", -1.0)  # any difference at all fails
    with pytest.raises(ModelError, match="differs from PyTorch by up to"):
        onnx_export.export_model(run[1], tmp_path / "bad", "onnx", say=lambda line: None)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_export_never_writes_into_a_non_empty_folder(run, tmp_path, capsys):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    assert main(["export", "--adapter", str(run[1]), "--output", str(tmp_path / "keep")]) == 2
    assert "output folder is not empty" in capsys.readouterr().err
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_onnx_backend_on_a_training_folder_says_to_export_first(run, tmp_path, capsys):
    data, out = run
    args = ["predict", str(data), "--adapter", str(out), "--out", str(tmp_path), "--backend", "onnx"]
    assert main(args) == 2
    assert "depth-lora export --adapter" in capsys.readouterr().err


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    from depth_lora.deploy.onnx_runtime import import_onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"\[export\]"):
        import_onnxruntime()


def test_export_without_the_extra_is_one_line_naming_it(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--adapter", str(run[1]), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "[export]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_other_commands_refuse_an_export_folder_in_one_line(exported, run, capsys):
    folder, _, _ = exported
    assert main(["evaluate", "--data", str(run[0]), "--adapter", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "an ONNX export" in err and "only `predict`" in err


@pytest.mark.parametrize("overrides", [{"model": "tiny-metric", "learning_rate": 1e-3},
                                       {"finetune": "full"}], ids=["metric-head", "full-fine-tune"])
def test_metric_and_fully_fine_tuned_runs_export_in_mm(overrides, tmp_path):
    """A metric head's metres and a whole fine-tuned model export like an adapter: the parity check
    compares millimetres, so a wrong unit or a lost weight would fail it."""
    pytest.importorskip("onnxruntime", reason=EXTRA)
    pytest.importorskip("onnxscript", reason=EXTRA)
    from depth_lora.deploy.export import export_model

    data, out = demo_run(tmp_path, captures_seed=13, **overrides)
    report = export_model(out, tmp_path / "onnx", "onnx", say=lambda line: None)
    assert report.parity["max_abs_mm"] < 0.05
    rgb = load_rgb(find_captures(data)[0].image)
    from depth_lora.deploy.onnx_runtime import load_onnx_bundle

    depth = load_onnx_bundle(tmp_path / "onnx").predict_mm([rgb])[0]
    expected = load_bundle(out, "cpu", precision="fp32").predict_mm([rgb])[0]
    assert np.abs(depth - expected).max() < 0.05 and np.median(depth) > 100  # mm, not metres


def test_bf16_inference_stays_close_to_fp32(run):
    """bf16 autocast (the default on CPUs with native bf16) moves depth by a small share of the range;
    the output is fp32 either way."""
    data, out = run
    rgbs = [load_rgb(f.image) for f in find_captures(data)[:3]]
    fp32 = load_bundle(out, "cpu", precision="fp32")
    bf16 = load_bundle(out, "cpu", precision="bf16")
    span = fp32.labels.depth_max_mm - fp32.labels.depth_min_mm
    for a, b in zip(fp32.predict_mm(rgbs), bf16.predict_mm(rgbs), strict=True):
        assert b.dtype == np.float32
        assert np.abs(a - b).mean() < 0.02 * span
        assert not np.array_equal(a, b)  # bf16 really ran


def test_batched_prediction_equals_one_at_a_time(run, tmp_path):
    data, out = run
    bundle = load_bundle(out, "cpu", precision="fp32")
    images = [f.image for f in find_captures(data)[:5]]
    predict_files(bundle, images, tmp_path / "one", formats=("npy",), progress=False)
    predict_files(bundle, images, tmp_path / "batch", formats=("npy",), progress=False, batch_size=4)
    for path in sorted((tmp_path / "one").glob("*.npy")):
        np.testing.assert_allclose(np.load(tmp_path / "batch" / path.name), np.load(path), atol=0.01)


def test_on_a_cpu_auto_runs_the_openvino_ir_written_beside_the_graph(exported):
    pytest.importorskip("openvino", reason="the IR is written when OpenVINO is installed")
    from depth_lora.deploy.backends import describe_bundle, open_bundle
    from depth_lora.runs.folder import read_record

    folder, report, _ = exported
    record = read_record(folder)
    assert (record.format, record.onnx_file, record.openvino_file) == ("onnx", "model.onnx", "model.xml")
    bundle = open_bundle(folder)  # --backend auto, no GPU here
    assert bundle.runtime == "OpenVINO" and bundle.model_path.name == "model.xml"
    assert "model.xml" in describe_bundle(bundle)
    assert open_bundle(folder, "onnx").model_path.name == "model.onnx"  # ONNX Runtime keeps the graph
    assert report.parity_by_runtime["OpenVINO"]["max_abs_mm"] < 0.05  # the IR was checked too
    assert "`model.xml` + its `.bin`" in (folder / "README.md").read_text()
