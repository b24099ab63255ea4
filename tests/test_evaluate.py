"""Evaluation, prediction and merge on a tiny model trained on generated captures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import random_capture, write_capture
from PIL import Image
from transformers import AutoModelForDepthEstimation

from depth_lora.cli import main
from depth_lora.config import TrainConfig
from depth_lora.data import load_rgb
from depth_lora.errors import DataError, ModelError
from depth_lora.evaluate import METHODS, run_evaluation
from depth_lora.export import intrinsics_from_xyz
from depth_lora.predict import load_bundle, predict_depth_mm
from depth_lora.synthetic import camera_intrinsics, generate_demo_captures
from depth_lora.train import run_training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    generate_demo_captures(data, 10, seed=5, size_hw=(120, 194), workers=1)
    cfg = TrainConfig(data=str(data), output=str(root / "out"), model="tiny", max_steps=4, batch_size=2,
                      image_size=[70, 112], train_head=True, learning_rate=1e-3, precision="fp32")
    run_training(cfg, progress=False)
    return data, root / "out"


def test_evaluate_writes_the_three_row_table_json_csv_and_plots(run, tmp_path, capsys):
    data, out = run
    args = ["evaluate", "--data", data, "--adapter", out, "--json", tmp_path / "r.json",
            "--csv", tmp_path / "c.csv", "--plots", tmp_path / "plots", "--tolerances-mm", "2.5", "10"]
    assert main([str(a) for a in args]) == 0
    table = capsys.readouterr().out
    for method in METHODS:
        assert method in table
    assert "oracle" in table  # the zero-shot baseline's alignment is stated
    assert "within_2.5mm" in table and "within_10mm" in table and "within_5mm" not in table
    report = json.loads((tmp_path / "r.json").read_text())
    test_keys = json.loads((out / "split.json").read_text())["test"]
    assert set(report) >= {"fine_tuned", "zero_shot_aligned", "constant", "captures", "pooled"}
    assert report["fine_tuned"]["captures"] == len(test_keys)
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert len(rows) == 3 * len(test_keys) and {r["capture"] for r in rows} == set(test_keys)
    figures = {p.name for p in (tmp_path / "plots").iterdir()}
    assert figures == {f"{k}.png" for k in test_keys} | {"metrics.png"}


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
        raw = (tmp_path / "pred" / f"img_{h}x{w}.ply").read_bytes()
        header, body = raw.split(b"end_header\n", 1)
        assert header.startswith(b"ply\nformat binary_little_endian 1.0\n")
        count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
        assert count == h * w and len(body) == count * (3 * 4 + 3)
        xyz_pred = np.frombuffer(body, dtype=[("p", "<f4", 3), ("c", "u1", 3)])
        np.testing.assert_allclose(xyz_pred["p"][:, 2], depth.ravel(), rtol=1e-6)


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
        predict_depth_mm(load_bundle(tmp_path / "merged", "cpu"), rgb),
        predict_depth_mm(load_bundle(out, "cpu"), rgb),
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
