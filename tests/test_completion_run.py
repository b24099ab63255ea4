"""A completion run end to end (`train --task complete`): a tiny completer trains, saves, reloads,
completes captures with every measured pixel returned exactly, and is scored on hidden holes of
held-out captures; bad requests get one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_capture
from depth_lora.errors import ConfigError, DataError, ModelError
from depth_lora.evaluation.verdict import completion_reading
from depth_lora.inference.complete import (
    complete_capture,
    complete_with_completer,
    depth_bounds,
    fit_prediction_mm,
)
from depth_lora.inference.local_fit import local_fit_fill
from depth_lora.inference.predict import load_bundle
from depth_lora.numeric.hole_masks import HOLE_KINDS
from depth_lora.runs.folder import META_FILE, read_record
from depth_lora.runs.task import require_task
from depth_lora.training.config import TrainConfig
from depth_lora.training.run import run_training


@pytest.fixture(scope="module")
def completion_run(tmp_path_factory):
    """12 generated captures and a tiny completer trained on them for 6 steps (fp32)."""
    from depth_lora.synthetic.demo import generate_demo_captures

    root = tmp_path_factory.mktemp("completion_run")
    data = root / "data"
    generate_demo_captures(data, 12, seed=21, size_hw=(120, 194), workers=1)
    cfg = TrainConfig(task="complete", data=str(data), output=str(root / "out"), model="tiny", max_steps=6,
                      batch_size=2, image_size=[56, 84], precision="fp32", learning_rate=1e-3)
    result = run_training(cfg, progress=False)
    return data, root / "out", result


def test_a_completion_run_records_what_it_is_and_scores_held_out_holes(completion_run):
    data, out, result = completion_run
    payload = json.loads((out / META_FILE).read_text())
    assert payload["format_version"] == 3  # a depth-lora before completion runs refuses it in one line
    record = read_record(out)
    assert record.task == "complete" and record.completion["output"] == "residual"
    assert record.completion["converted_from"] == "tiny" and record.labels == {}
    test = result.metrics["test"]
    for method in ("completer", "completer_unanchored", "completer_start", "zero_shot", "local_fit",
                   "harmonic", "nearest", "telea"):
        assert np.isfinite(test[method]["rmse_mm"]) and len(test[method]["rmse_mm_ci95"]) == 2
        assert set(test[method]["by_kind"]) == set(HOLE_KINDS)
    assert "border" not in test["training_hole_kinds"]  # a kind training never draws is scored
    # The verdict is what both splits' intervals say (each split's paired comparison of the completer
    # with harmonic over captures), and its text quotes those numbers.
    verdict, text = result.metrics["verdict"]["verdict"], result.metrics["verdict"]["text"]
    readings = [completion_reading(result.hole_reports[split], split) for split in ("val", "test")]
    expected = ("paid_off" if all(r.ci95[1] < 0 for r in readings) else
                "did_worse" if all(r.ci95[0] > 0 for r in readings) else "withheld")
    assert verdict == expected, text
    for r in readings:
        assert f"completer {r.fine_tuned_mm:.1f} mm vs harmonic {r.zero_shot_mm:.1f} mm" in text
    assert "completion model" in (out / "README.md").read_text()


def test_the_reloaded_completer_computes_what_training_left(completion_run):
    data, out, result = completion_run
    bundle = load_bundle(out, device="cpu", precision="fp32")
    capture = load_capture(find_captures(data)[0])
    reloaded = bundle.predict_completion(capture.rgb, capture.depth_mm)
    bundle.model = result.model.to("cpu").eval()  # the trained model itself, same prompt and sizes
    trained = bundle.predict_completion(capture.rgb, capture.depth_mm)
    np.testing.assert_allclose(reloaded, trained, rtol=1e-4, atol=1e-2)
    assert np.isfinite(reloaded).all()


def test_completion_returns_every_measured_pixel_exactly_and_fills_within_bounds(completion_run):
    data, out, _ = completion_run
    bundle = load_bundle(out, device="cpu", precision="fp32")
    split = json.loads((out / "split.json").read_text())
    files = {f.key: f for f in find_captures(data)}
    capture = load_capture(files[split["test"][0]])
    result = complete_capture(bundle, capture.rgb, capture.depth_mm)
    measured = capture.valid_mask
    np.testing.assert_array_equal(result.depth_mm[measured], capture.depth_mm[measured])
    lo, hi = depth_bounds(capture.depth_mm, measured)
    filled = result.depth_mm[result.filled]
    assert result.filled.sum() == (~measured).sum()
    assert filled.min() >= lo and filled.max() <= hi


def test_a_completers_wild_output_never_becomes_an_impossible_depth():
    """A wide-range capture (500-9,900 mm) with large holes; the completer outputs nonsense
    (-20 m..+20 m, NaN): every filled pixel stays within the bounds, the measured ones exact."""
    rng = np.random.default_rng(0)
    h, w = 96, 128
    depth = np.linspace(500.0, 9900.0, w, dtype=np.float32)[None].repeat(h, axis=0)
    depth[20:70, 30:100] = np.nan
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def wild(image, depth_mm):
        out = rng.uniform(-20000, 20000, depth_mm.shape).astype(np.float32)
        out[:5] = np.nan
        return out

    measured = np.isfinite(depth)
    result = complete_with_completer(wild, rgb, depth, (56, 70), measured)
    lo, hi = depth_bounds(depth, measured)
    np.testing.assert_array_equal(result.depth_mm[measured], depth[measured])
    assert result.filled[~measured].all() and result.fallback.any()
    assert lo <= result.depth_mm[~measured].min() and result.depth_mm[~measured].max() <= hi


def test_the_local_fit_follows_a_scale_that_changes_across_the_image():
    """A model whose output is inverse depth with a scale drifting from left to right: one global
    fit cannot follow it; the local fit (Prior Depth Anything's alignment) does, inside holes too."""
    h, w = 90, 160
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = (800.0 + 3.0 * xx + 200.0 * np.sin(yy / 9.0)).astype(np.float32)
    raw = (1000.0 / depth) * (1.0 + xx / w)  # the scale drifts by 2x across the image
    holes = np.zeros((h, w), dtype=bool)
    holes[30:50, 20:40] = holes[40:60, 110:130] = True
    given = np.where(holes, np.nan, depth)
    local = local_fit_fill(raw.astype(np.float32), given, None)
    global_mm, _ = fit_prediction_mm(raw.astype(np.float32), given, None)
    local_rmse = np.sqrt(np.mean((local.depth_mm - depth)[holes] ** 2))
    global_rmse = np.sqrt(np.mean((global_mm - depth)[holes] ** 2))
    assert local_rmse < 0.3 * global_rmse
    np.testing.assert_array_equal(local.depth_mm[~holes], depth[~holes])


def test_cli_complete_evaluate_and_the_refusals(completion_run, tmp_path, capsys):
    data, out, _ = completion_run
    split = json.loads((out / "split.json").read_text())
    files = {f.key: f for f in find_captures(data)}
    one = files[split["test"][0]]
    assert main(["complete", str(one.image.parent.parent), "--adapter", str(out), "--out",
                 str(tmp_path / "done"), "--format", "npy"]) == 0
    completed = np.load(tmp_path / "done" / f"{one.key}_completed_mm.npy")
    original = load_capture(one).depth_mm
    measured = np.isfinite(original)
    np.testing.assert_array_equal(completed[measured], original[measured])
    capsys.readouterr()
    assert main(["predict", str(one.image), "--adapter", str(out), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "depth-lora complete" in err
    assert main(["export", "--adapter", str(out), "--output", str(tmp_path / "x"), "--quantize", "int8"]) == 2
    assert "fp32 only" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["evaluate", "--adapter", str(out), "--data", str(data), "--json", str(tmp_path / "e.json"),
                 "--plots", str(tmp_path / "plots")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["holes"]["completer"]["by_kind"]["border"]["rmse_mm_ci95"]
    assert "harmonic" in capsys.readouterr().out
    assert list((tmp_path / "plots").glob("holes_*.png"))


def test_bad_completion_inputs_get_one_line_errors(completion_run, tmp_path):
    data, out, _ = completion_run
    bundle = load_bundle(out, device="cpu", precision="fp32")
    capture = load_capture(find_captures(data)[0])
    with pytest.raises(DataError, match="measured"):  # nothing measured: nothing to prompt with
        complete_capture(bundle, capture.rgb, np.full(capture.depth_mm.shape, np.nan, np.float32))
    with pytest.raises(DataError, match="depth is"):  # depth and image of different sizes
        complete_capture(bundle, capture.rgb, capture.depth_mm[:-3])
    with pytest.raises(ModelError, match="depth-lora complete"):  # a completer where depth is predicted
        bundle.predict_mm([capture.rgb])
    monocular = read_record(out).derived(task="depth", completion=None)
    with pytest.raises(ModelError, match="--task complete"):  # a monocular run where a completer is needed
        require_task(monocular, "mono_run", "complete", "complete a capture from the measured depth")
    with pytest.raises(ConfigError, match="--task complete"):
        TrainConfig(hole_kinds=["blobs"])
    with pytest.raises(ConfigError, match="--task complete"):
        TrainConfig(prompt_scale=0.25)
    with pytest.raises(ConfigError, match="--prompt-scale"):
        TrainConfig(task="complete", prompt_scale=2.0)
    with pytest.raises(ConfigError, match="does not apply"):
        TrainConfig(task="complete", loss="mse")
    with pytest.raises(ConfigError, match="task"):  # resuming a completion run as a monocular one
        from depth_lora.training.setup import check_resume_config

        check_resume_config(out, TrainConfig(data=str(data), output=str(out), model="tiny", max_steps=6,
                                             image_size=[56, 84], batch_size=2, learning_rate=1e-3))


def test_complete_with_a_prompt_checkpoint_and_no_adapter(tmp_path, capsys):
    """`complete --model FOLDER` with a Prompt Depth Anything checkpoint (as `prompt-small` is) runs
    it as published: the capture's depth is its prompt, the measured pixels come back exactly."""
    from depth_lora.model.checkpoints import build_model
    from depth_lora.model.prompt import to_prompt_model
    from depth_lora.synthetic.demo import generate_demo_captures

    to_prompt_model(build_model("tiny")[0]).save_pretrained(tmp_path / "prompt_model")
    generate_demo_captures(tmp_path / "data", 2, seed=5, size_hw=(120, 194), workers=1)
    assert main(["complete", str(tmp_path / "data"), "--model", str(tmp_path / "prompt_model"), "--out",
                 str(tmp_path / "done"), "--format", "npy", "--image-size", "56", "84"]) == 0
    files = find_captures(tmp_path / "data")
    completed = np.load(tmp_path / "done" / f"{files[0].key}_completed_mm.npy")
    original = load_capture(files[0]).depth_mm
    measured = np.isfinite(original)
    np.testing.assert_array_equal(completed[measured], original[measured])
    assert np.isfinite(completed).all()
    assert "global fit" not in capsys.readouterr().out  # a completion model needs no fit


def test_the_validity_channel_starts_at_nothing_and_reads_back_as_the_measured_share():
    """A second prompt channel (where the camera measured) added with zero weights leaves the
    model's output as it was; normalised as Prompt Depth Anything normalises a prompt, that
    channel is exactly the measured share of each prompt pixel."""
    import copy

    import torch

    from depth_lora.data.completion import build_prompt
    from depth_lora.model.checkpoints import build_model
    from depth_lora.model.prompt import add_validity_channel, to_prompt_model
    from depth_lora.numeric.resize import masked_area_resize

    rng = np.random.default_rng(1)
    depth = rng.uniform(400, 2400, (56, 84)).astype(np.float32)
    visible = rng.random((56, 84)) > 0.4
    one, two = build_prompt(depth, visible, (28, 42), 1), build_prompt(depth, visible, (28, 42), 2)
    np.testing.assert_array_equal(one[0], two[0])
    lo, hi = two.min(), two.max()
    _, coverage = masked_area_resize(depth, visible, (28, 42))
    np.testing.assert_allclose((two[1] - lo) / (hi - lo), coverage, atol=1e-5)
    model = to_prompt_model(build_model("tiny")[0])
    with_validity = copy.deepcopy(model)
    add_validity_channel(with_validity)
    pixels = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        before = model(pixel_values=pixels, prompt_depth=torch.from_numpy(one)[None]).predicted_depth
        after = with_validity(pixel_values=pixels, prompt_depth=torch.from_numpy(two)[None]).predicted_depth
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-3)


def test_a_completer_with_the_validity_channel_and_a_smaller_prompt_trains_and_reloads(completion_run,
                                                                                       tmp_path):
    data, _, _ = completion_run
    cfg = TrainConfig(task="complete", prompt_validity=True, prompt_scale=0.25, data=str(data),
                      output=str(tmp_path / "out"), model="tiny", max_steps=3, batch_size=2,
                      image_size=[56, 84], precision="fp32", learning_rate=1e-3)
    result = run_training(cfg, progress=False)
    completion = read_record(tmp_path / "out").completion
    assert completion["prompt_channels"] == 2 and completion["prompt_scale"] == 0.25
    bundle = load_bundle(tmp_path / "out", device="cpu", precision="fp32")
    capture = load_capture(find_captures(data)[1])
    reloaded = bundle.predict_completion(capture.rgb, capture.depth_mm)
    bundle.model = result.model.to("cpu").eval()
    np.testing.assert_allclose(reloaded, bundle.predict_completion(capture.rgb, capture.depth_mm),
                               rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_completer_exports_with_two_inputs_and_completes_like_pytorch(completion_run, fmt, tmp_path,
                                                                         capsys):
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "openvino")
    from depth_lora.deploy.backends import open_bundle
    from depth_lora.deploy.export import PARITY_TOLERANCE_MM, export_model

    data, out, _ = completion_run
    folder = tmp_path / fmt
    report = export_model(out, folder, fmt, say=lambda *_: None)
    assert 0 <= report.parity["max_abs_mm"] <= PARITY_TOLERANCE_MM and report.parity["images"] >= 1
    record = read_record(folder)
    assert record.task == "complete" and record.format == fmt
    assert record.completion == read_record(out).completion
    from depth_lora.data.completion import prompt_size_hw

    prompt_hw = prompt_size_hw(record.image_size_hw, record.completion["prompt_scale"])
    readme = (folder / "README.md").read_text()
    assert f"`prompt_depth` float32 (batch, 1, {prompt_hw[0]}, {prompt_hw[1]})" in readme
    split = json.loads((out / "split.json").read_text())
    one = {f.key: f for f in find_captures(data)}[split["test"][0]]
    capture = load_capture(one)
    reference = load_bundle(out, device="cpu", precision="fp32")
    pytorch = complete_capture(reference, capture.rgb, capture.depth_mm)
    exported = complete_capture(open_bundle(folder), capture.rgb, capture.depth_mm)
    measured = capture.valid_mask
    np.testing.assert_array_equal(exported.depth_mm[measured], capture.depth_mm[measured])
    assert np.abs(exported.depth_mm - pytorch.depth_mm).max() <= PARITY_TOLERANCE_MM
    capsys.readouterr()
    assert main(["complete", str(one.image.parent.parent), "--adapter", str(folder), "--out",
                 str(tmp_path / "done"), "--format", "npy"]) == 0
    assert (tmp_path / "done" / f"{one.key}_completed_mm.npy").is_file()
    assert main(["predict", str(one.image), "--adapter", str(folder), "--out", str(tmp_path / "p")]) == 2
    assert "depth-lora complete" in capsys.readouterr().err
