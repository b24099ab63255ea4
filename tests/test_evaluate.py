"""Evaluation, prediction and merge on a tiny model trained on generated captures."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_capture, write_capture
from PIL import Image
from plyfile import PlyData
from transformers import AutoModelForDepthEstimation

from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_capture, load_rgb
from depth_lora.data.dataset import PreparedCapture, prepare_capture
from depth_lora.errors import DataError, ModelError
from depth_lora.evaluation.calibration import fit_calibration
from depth_lora.evaluation.report import METHODS, run_evaluation
from depth_lora.inference.predict import load_bundle, predict_depth_mm
from depth_lora.model.choices import BUNDLED_MODELS
from depth_lora.numeric.align import align_disparity_to_depth_mm
from depth_lora.numeric.geometry import intrinsics_from_xyz
from depth_lora.numeric.metrics import depth_metrics
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.synthetic.scenes import camera_intrinsics

# A relative base (every run here) has no unaligned metric zero_shot row: five rows.
ROWS = [m for m in METHODS if m != "zero_shot"]


@pytest.fixture(scope="module")
def run(shared_demo_run):
    return shared_demo_run  # one trained run for the whole session (conftest)


def test_evaluate_writes_the_five_row_table_with_intervals_json_csv_and_plots(run, tmp_path, capsys):
    data, out = run
    args = ["evaluate", "--data", data, "--adapter", out, "--json", tmp_path / "r.json",
            "--csv", tmp_path / "c.csv", "--plots", tmp_path / "plots", "--tolerances-mm", "2.5", "10"]
    assert main([str(a) for a in args]) == 0
    table = capsys.readouterr().out
    assert "\nzero_shot " not in table
    for method in ROWS:
        assert method in table
    assert "oracle" in table and "anecdotal" in table  # oracle rows named; a 1-3 capture test split
    assert "<=2.5 mm" in table and "<=10 mm" in table and "<=5 mm" not in table
    report = json.loads((tmp_path / "r.json").read_text())
    test_keys = json.loads((out / "split.json").read_text())["test"]
    assert set(report) >= {*ROWS, "captures", "pooled", "comparison"} and "zero_shot" not in report
    for method in ROWS:
        row = report[method]
        assert row["captures"] == len(test_keys)
        for key in ("rmse_mm", "mae_mm", "abs_rel", "delta1"):
            lo, hi = row[f"{key}_ci95"]
            assert lo <= row[key] + 1e-9 and row[key] <= hi + 1e-9, (method, key)
    comparison = report["comparison"]
    difference = report["fine_tuned"]["rmse_mm"] - report["zero_shot_calibrated"]["rmse_mm"]
    assert comparison["fine_tuned_minus_zero_shot_calibrated_rmse_mm"] == pytest.approx(difference)
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert len(rows) == len(ROWS) * len(test_keys) and {r["capture"] for r in rows} == set(test_keys)
    figures = {p.name for p in (tmp_path / "plots").iterdir()}
    assert figures == {f"{k}.png" for k in test_keys} | {"metrics.png"}
    # quickstart's plain reading: the kept checkpoint, then the verdict from both held-out splits
    reading = table.split("== What the table says\n", 1)[1]
    assert reading.startswith("Kept: the checkpoint of step ") and "best of " in reading
    assert "  validation " in reading and "  test " in reading
    assert ("Verdict: " in reading) != ("No verdict: " in reading)


def test_evaluate_plots_without_a_folder_go_inside_the_run_folder(run, tmp_path, capsys, monkeypatch):
    data, shared = run
    out = shutil.copytree(shared, tmp_path / "run")  # the shared run is never written into
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["evaluate", "--data", str(data), "--adapter", str(out), "--split", "val", "--plots"]) == 0
    assert f"figures written to {out / 'evaluation' / 'val'}" in capsys.readouterr().out
    assert (out / "evaluation" / "val" / "metrics.png").is_file()
    assert not list((tmp_path / "elsewhere").iterdir())  # nothing in the current directory


def test_constant_baseline_matches_a_hand_computed_rmse_at_full_resolution(run):
    data, out = run
    report = run_evaluation(data, out, split="all", progress=False)
    mean_mm = json.loads((out / "depth_lora.json").read_text())["train_depth_mean_mm"]
    rmses = []
    for path in sorted((data / "depth").glob("*.npy")):
        z = np.load(path)[..., 2].astype(np.float64)
        z = z[np.isfinite(z) & (z > 0)]
        rmses.append(np.sqrt(np.mean((z - mean_mm) ** 2)))
    np.testing.assert_allclose(report.mean["constant"]["rmse_mm"], np.mean(rmses), rtol=1e-4)
    assert report.mean["constant"]["captures"] == 10


def base_output(base, rgb: np.ndarray, size_hw, out_hw) -> np.ndarray:
    """The base model's raw output for an RGB image resized (bicubic) to size_hw, ImageNet-normalised,
    upsampled bilinearly to out_hw: written here without the package's predict helpers."""
    small = np.asarray(Image.fromarray(rgb).resize((size_hw[1], size_hw[0]), Image.BICUBIC), np.float32)
    x = (small / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        y = base(pixel_values=x).predicted_depth[:, None]
    return torch.nn.functional.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_zero_shot_calibrated_matches_an_independent_computation(run):
    # One affine map, fitted once on the training split's pixels (at the model's input size) and
    # applied unchanged to each test capture at full resolution: recomputed here with np.polyfit.
    data, out = run
    meta = json.loads((out / "depth_lora.json").read_text())
    calibration, size_hw = meta["zero_shot_calibration"], meta["image_size_hw"]
    split = json.loads((out / "split.json").read_text())
    files = {f.key: f for f in find_captures(data)}
    base = AutoModelForDepthEstimation.from_pretrained(BUNDLED_MODELS["demo-pretrained"]).eval()
    xs, ys = [], []
    for key in split["train"]:
        seen = prepare_capture(load_capture(files[key]), tuple(size_hw))  # labels as training sees them
        raw = base_output(base, seen.rgb, size_hw, seen.depth_mm.shape)
        valid = np.isfinite(seen.depth_mm)
        z = seen.depth_mm[valid].astype(np.float64)
        xs.append(raw[valid])
        ys.append(1.0 / z if calibration["space"] == "inverse_depth" else z)
    scale, shift = np.polyfit(np.concatenate(xs), np.concatenate(ys), 1)
    assert calibration["scale"] == pytest.approx(scale, rel=1e-3, abs=1e-9)
    assert calibration["shift"] == pytest.approx(shift, rel=1e-3, abs=1e-9)
    lo, hi = calibration["min_depth_mm"], calibration["max_depth_mm"]
    rmses = []
    for key in split["test"]:
        capture = load_capture(files[key])
        y = scale * base_output(base, capture.rgb, size_hw, capture.depth_mm.shape) + shift
        depth = 1.0 / np.clip(y, 1 / hi, 1 / lo) if calibration["space"] == "inverse_depth" else y
        depth = np.clip(depth, lo, hi)
        valid = capture.valid_mask
        rmses.append(np.sqrt(np.mean((depth[valid] - capture.depth_mm[valid]) ** 2)))
    report = run_evaluation(data, out, split="test", progress=False, precision="fp32")  # as computed above
    assert report.precision == "fp32"
    assert report.mean["zero_shot_calibrated"]["rmse_mm"] == pytest.approx(np.mean(rmses), rel=1e-3)


def synthetic_disparities(rng, count: int, same_map: bool):
    """Captures whose depth z (mm) is known and a "model output" a / z + b: per capture (a, b)
    drawn at random, or one (a, b) for all."""
    captures, raws = [], []
    for i in range(count):
        z = rng.uniform(300, 2000) + rng.uniform(-200, 200, (24, 32)).cumsum(1) / 10
        a, b = (4000.0, 0.5) if same_map else (rng.uniform(1000, 9000), rng.uniform(-1, 3))
        rgb = np.zeros((24, 32, 3), np.uint8)
        captures.append(PreparedCapture(f"c{i}", rgb, z.astype(np.float32), (24, 32)))
        raws.append(a / z + b)
    return captures, raws


@pytest.mark.parametrize("seed", range(3))
def test_the_oracle_alignment_beats_one_calibration_when_each_capture_has_its_own_map(seed):
    rng = np.random.default_rng(seed)
    train, raw_train = synthetic_disparities(rng, 8, same_map=False)
    val, raw_val = synthetic_disparities(rng, 3, same_map=False)
    test, raw_test = synthetic_disparities(rng, 5, same_map=False)
    calibration = fit_calibration(raw_train, train, raw_val, val)
    for capture, raw in zip(test, raw_test, strict=True):
        oracle = depth_metrics(align_disparity_to_depth_mm(raw, capture.depth_mm), capture.depth_mm)
        calibrated = depth_metrics(calibration.apply(raw), capture.depth_mm)
        assert oracle["rmse_mm"] <= calibrated["rmse_mm"]
        assert oracle["rmse_mm"] < 1e-3  # an exact affine map in inverse depth: recovered exactly


def test_one_calibration_recovers_a_map_shared_by_every_capture():
    rng = np.random.default_rng(0)
    train, raw_train = synthetic_disparities(rng, 4, same_map=True)
    val, raw_val = synthetic_disparities(rng, 2, same_map=True)
    calibration = fit_calibration(raw_train, train, raw_val, val)
    assert calibration.space == "inverse_depth"  # the space the data was made in wins on validation
    assert calibration.scale == pytest.approx(1 / 4000.0) and calibration.shift == pytest.approx(-0.5 / 4000)
    (capture,), (raw,) = synthetic_disparities(rng, 1, same_map=True)
    np.testing.assert_allclose(calibration.apply(raw), capture.depth_mm, rtol=1e-6)


def test_evaluate_on_another_folder_needs_split_all(run, tmp_path):
    data, out = run
    generate_demo_captures(tmp_path / "other", 3, seed=9, size_hw=(120, 194), workers=1)
    with pytest.raises(DataError, match="--split all"):
        run_evaluation(tmp_path / "other", out, split="test", progress=False)
    report = run_evaluation(tmp_path / "other", out, split="all", progress=False)
    assert report.mean["fine_tuned"]["captures"] == 3


def test_predict_writes_depth_at_each_images_resolution_and_a_valid_ply(run, tmp_path, capsys):
    data, out = run
    images = tmp_path / "images"
    images.mkdir()
    for h, w in [(120, 194), (48, 64)]:
        rgb, _ = random_capture(np.random.default_rng(h), h, w)
        Image.fromarray(rgb).save(images / f"img_{h}x{w}.png")
    (images / "broken.png").write_bytes(b"not an image")
    xyz = next((data / "depth").glob("*.npy"))
    code = main(["predict", str(images), "--adapter", str(out), "--out", str(tmp_path / "pred"),
                 "--format", "npy,png,ply", "--intrinsics-from", str(xyz)])
    err = capsys.readouterr().err
    assert code == 1 and "broken.png: cannot read image" in err and "Traceback" not in err
    for h, w in [(120, 194), (48, 64)]:
        depth = np.load(tmp_path / "pred" / f"img_{h}x{w}_depth_mm.npy")
        assert depth.shape == (h, w) and depth.dtype == np.float32 and np.isfinite(depth).all()
        assert (tmp_path / "pred" / f"img_{h}x{w}_depth.png").is_file()
        # Read back by plyfile, not by our own layout: one vertex per pixel, row-major, Z the depth
        # and X, Y back-projected with the intrinsics estimated from the camera's XYZ map.
        ply = PlyData.read(str(tmp_path / "pred" / f"img_{h}x{w}.ply"))
        assert ply.text is False and ply.byte_order == "<"
        vertices = ply["vertex"]
        assert vertices.count == h * w
        assert [p.name for p in vertices.properties] == ["x", "y", "z", "red", "green", "blue"]
        np.testing.assert_allclose(vertices["z"], depth.ravel(), rtol=1e-6)
        fx, fy, cx, cy = intrinsics_from_xyz(np.load(xyz))
        v, u = np.divmod(np.arange(h * w), w)
        np.testing.assert_allclose(vertices["x"], (u - cx) * depth.ravel() / fx, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(vertices["y"], (v - cy) * depth.ravel() / fy, rtol=1e-4, atol=1e-3)
        rgb = np.asarray(Image.open(images / f"img_{h}x{w}.png").convert("RGB")).reshape(-1, 3)
        np.testing.assert_array_equal(np.stack([vertices[c] for c in ("red", "green", "blue")], -1), rgb)


def test_intrinsics_are_recovered_from_an_xyz_map(tmp_path):
    generate_demo_captures(tmp_path, 1, seed=2, size_hw=(120, 194), workers=1)
    xyz = np.load(next((tmp_path / "depth").glob("*.npy")))
    np.testing.assert_allclose(intrinsics_from_xyz(xyz), camera_intrinsics((120, 194)), rtol=1e-3)


def test_merged_model_predicts_like_the_adapter(run, tmp_path, capsys):
    data, out = run
    assert main(["merge", "--adapter", str(out), "--output", str(tmp_path / "merged")]) == 0
    plain = AutoModelForDepthEstimation.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in plain.named_parameters())
    rgb = load_rgb(next((data / "images").glob("*.png")))
    np.testing.assert_allclose(
        predict_depth_mm(load_bundle(tmp_path / "merged", "cpu", precision="fp32"), rgb),
        predict_depth_mm(load_bundle(out, "cpu", precision="fp32"), rgb),
        rtol=1e-4, atol=1e-2,
    )


@pytest.mark.parametrize(
    "make_folder, message",
    [
        (lambda p: None, "adapter folder does not exist"),
        (lambda p: p.mkdir(), "no depth_lora.json, so not a depth-lora output folder"),
    ],
)
def test_bad_adapter_folders(tmp_path, capsys, make_folder, message):
    folder = tmp_path / "adapter"
    make_folder(folder)
    with pytest.raises(ModelError, match=message):
        load_bundle(folder)
    rgb, xyz = random_capture(np.random.default_rng(0), 20, 30)
    write_capture(tmp_path / "data", "c", rgb, xyz)
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--adapter", str(folder)]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_a_folder_without_captures(run, tmp_path, capsys):
    _, out = run
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--data", str(tmp_path / "empty"), "--adapter", str(out)]) == 2
    assert "no captures found" in capsys.readouterr().err


def test_outputs_of_a_model_fine_tuned_from_the_demo_model_say_so(run, tmp_path, capsys):
    data, out = run  # trained from demo-pretrained
    assert "offline demo model" in json.loads((out / "depth_lora.json").read_text())["warning"]
    image = next((data / "images").glob("*.png"))
    assert main(["predict", str(image), "--adapter", str(out), "--out", str(tmp_path / "p")]) == 0
    assert "WARNING" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(data), "--adapter", str(out)]) == 0
    assert "WARNING: this model was fine-tuned from the offline demo model" in capsys.readouterr().out


def test_every_figure_of_a_demo_model_run_carries_the_warning(run, tmp_path, monkeypatch, capsys):
    # Every figure the commands save from a run fine-tuned from demo-pretrained: evaluate's per-capture
    # and metrics figures, the hole-filling figures, predict's and complete's PNGs.
    import depth_lora.viz as viz

    saved = {}

    def recording_save(fig, path, **kwargs):
        saved[Path(path).name] = fig.get_suptitle()
        return original(fig, path, **kwargs)

    original = viz.save_figure
    monkeypatch.setattr(viz, "save_figure", recording_save)
    data, out = run
    image = next((data / "images").glob("*.png"))
    assert main(["evaluate", "--data", str(data), "--adapter", str(out), "--plots", str(tmp_path / "e"),
                 "--holes"]) == 0
    assert main(["predict", str(image), "--adapter", str(out), "--out", str(tmp_path / "p")]) == 0
    assert main(["complete", str(data), "--adapter", str(out), "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    test_keys = json.loads((out / "split.json").read_text())["test"]
    expected = ({f"{k}.png" for k in test_keys} | {f"holes_{k}.png" for k in test_keys} | {"metrics.png"}
                | {f"{image.stem}_depth.png"} | {f"{f.key}_completion.png" for f in find_captures(data)})
    assert set(saved) == expected
    assert all(title.startswith(viz.DEMO_BANNER) for title in saved.values()), saved
    # the TensorBoard panel is drawn by the same rule
    capture = load_capture(find_captures(data)[0])
    panel = viz.plot_prediction_panel(capture.rgb, capture.depth_mm, capture.depth_mm, title="c",
                                      warning="fine-tuned from the offline demo model")
    assert panel.get_suptitle() == f"{viz.DEMO_BANNER}\nc"
    assert viz.plot_prediction_panel(capture.rgb, capture.depth_mm, capture.depth_mm).get_suptitle() == ""
