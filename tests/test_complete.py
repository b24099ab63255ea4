"""`depth-lora complete` and `evaluate --holes` end to end, on a tiny model trained on generated captures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData
from scipy.spatial import cKDTree

from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_capture
from depth_lora.data.dataset import resize_depth
from depth_lora.evaluation.holes import (
    FILL_METHODS,
    format_hole_table,
    run_hole_evaluation,
    scoring_size,
)
from depth_lora.inference.complete import complete_capture, complete_depth_mm, complete_raw
from depth_lora.inference.options import HOLE_SCORING_MAX_PIXELS
from depth_lora.inference.predict import load_bundle
from depth_lora.numeric.fill import nearest_fill
from depth_lora.numeric.guided_fill import DEFAULT_FILL
from depth_lora.numeric.hole_masks import HOLE_KINDS, hidden_masks


@pytest.fixture(scope="module")
def run(shared_demo_run):
    return shared_demo_run  # one trained run for the whole session (conftest)


def read_ply(path):
    """(header lines, vertex array) as plyfile reads them back."""
    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"  # binary little-endian, as documented
    return [str(line) for line in ply.header.splitlines()], ply["vertex"].data


def test_complete_writes_depth_mask_xyz_ply_and_figure_keeping_every_measured_pixel(run, tmp_path, capsys):
    data, out = run
    files = find_captures(data)[:2]
    code = main(["complete", str(data), "--adapter", str(out), "--out", str(tmp_path / "c"),
                 "--format", "npy,png,ply"])
    assert code == 0
    assert "10 of 10 captures completed" in capsys.readouterr().out
    for f in files:
        capture = load_capture(f)
        measured = capture.valid_mask
        xyz = np.load(f.depth)
        completed = np.load(tmp_path / "c" / f"{f.key}_completed_mm.npy")
        assert completed.shape == capture.size_hw and np.isfinite(completed).all()
        assert np.array_equal(completed[measured], capture.depth_mm[measured])  # exact camera values
        mask = np.asarray(Image.open(tmp_path / "c" / f"{f.key}_filled_mask.png")) > 0
        assert np.array_equal(mask, ~measured)
        points = np.load(tmp_path / "c" / f"{f.key}_completed_xyz.npy")
        assert points.shape == (*capture.size_hw, 3)
        assert np.array_equal(points[measured], xyz[measured])  # the camera's own X, Y, Z
        np.testing.assert_allclose(points[~measured][:, 2], completed[~measured], rtol=1e-5)
        header, vertices = read_ply(tmp_path / "c" / f"{f.key}_completed.ply")
        assert f"element vertex {measured.size}" in header and len(vertices) == measured.size
        assert "property uchar filled" in header
        assert int(vertices["filled"].sum()) == int((~measured).sum())
        cloud = np.stack([vertices[a] for a in "xyz"], axis=-1)  # row-major pixel order
        np.testing.assert_allclose(cloud, points.reshape(-1, 3), rtol=1e-6)
        np.testing.assert_array_equal(np.stack([vertices[c] for c in ("red", "green", "blue")], -1),
                                      capture.rgb.reshape(-1, 3))
        assert (tmp_path / "c" / f"{f.key}_completion.png").stat().st_size > 10_000


def test_the_python_api_completes_one_capture(run):
    data, out = run
    capture = load_capture(find_captures(data)[0])
    completed, filled = complete_depth_mm(load_bundle(out, device="cpu"), capture.rgb, capture.depth_mm)
    assert np.array_equal(filled, ~capture.valid_mask)
    assert np.array_equal(completed[capture.valid_mask], capture.depth_mm[capture.valid_mask])
    lo, hi = np.nanpercentile(capture.depth_mm, [0, 100])
    assert np.all((completed > lo - 0.5 * (hi - lo)) & (completed < hi + 0.5 * (hi - lo)))


def test_zero_shot_completion_of_an_image_file_with_a_z_only_depth_file(run, tmp_path, capsys):
    data, _ = run
    f = find_captures(data)[0]
    z_only = tmp_path / "cap" / "depth" / f"{f.key}_rawDepth.npy"
    z_only.parent.mkdir(parents=True)
    np.save(z_only, np.load(f.depth)[..., 2])
    (tmp_path / "cap" / "images").mkdir()
    image = shutil.copy(f.image, tmp_path / "cap" / "images")
    args = ["complete", image, "--model", "demo-pretrained", "--image-size", "70", "112",
            "--out", str(tmp_path / "c"), "--format", "npy,ply"]
    assert main([str(a) for a in args]) == 1  # done, but says what it could not write
    err = capsys.readouterr().err
    assert "Z only and no --intrinsics" in err and "DEMO model" in err
    assert (tmp_path / "c" / f"{f.key}_completed_mm.npy").is_file()
    assert main([str(a) for a in args + ["--intrinsics", "150", "150", "97", "60"]]) == 0
    _, vertices = read_ply(tmp_path / "c" / f"{f.key}_completed.ply")
    assert len(vertices) == 120 * 194


def test_bad_captures_get_one_line_errors_and_the_others_are_still_completed(run, tmp_path, capsys):
    data, out = run
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    f = find_captures(bad)[0]
    np.save(f.depth, np.full((120, 194), np.nan, np.float32))
    assert main(["complete", str(bad), "--adapter", str(out), "--out", str(tmp_path / "c")]) == 1
    captured = capsys.readouterr()
    assert "9 of 10 captures completed" in captured.out
    line = next(x for x in captured.err.splitlines() if f.depth.name in x)
    assert "no valid pixel" in line
    lonely = tmp_path / "lonely.png"
    shutil.copy(f.image, lonely)
    assert main(["complete", str(lonely), "--adapter", str(out), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lonely.png: no depth file" in err
    assert main(["complete", str(data), "--adapter", str(out), "--out", str(tmp_path / "d"),
                 "--format", "npy,obj"]) == 2
    assert "unknown format(s) obj" in capsys.readouterr().err


def test_classical_completion_needs_no_model_and_stays_within_each_capture(run, tmp_path, capsys):
    data, _ = run
    out = tmp_path / "c"
    assert main(["complete", str(data), "--classical", "--out", str(out), "--format", "npy,png"]) == 0
    printed = capsys.readouterr()
    assert "classical completion (no model)" in printed.out and "10 of 10 captures completed" in printed.out
    assert "DEMO model" not in printed.err
    for f in find_captures(data):
        capture = load_capture(f)
        measured = capture.valid_mask
        completed = np.load(out / f"{f.key}_completed_mm.npy")
        assert np.array_equal(completed[measured], capture.depth_mm[measured])
        assert np.isfinite(completed).all()
        lo, hi = capture.depth_mm[measured].min(), capture.depth_mm[measured].max()
        assert completed.min() >= lo - 1e-3 and completed.max() <= hi + 1e-3  # the maximum principle
        assert (out / f"{f.key}_completion.png").is_file()
        sigma = np.load(out / f"{f.key}_completed_sigma_mm.npy")
        assert np.isnan(sigma[measured]).all() and (sigma[~measured] >= 0.5).all()
    model = json.loads((out / "fill_error.json").read_text())
    assert model["fill"] == DEFAULT_FILL and model["format_version"] == 1 and model["captures"] >= 1
    assert main(["complete", str(data), "--classical", "--backend", "onnx", "--out", str(out)]) == 2
    assert "--classical runs no model" in capsys.readouterr().err
    assert main(["complete", str(data), "--adapter", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "--classical for no model" in capsys.readouterr().err


def test_hole_evaluation_scores_only_hidden_pixels_and_nearest_matches_a_kd_tree(run):
    data, out = run
    report = run_hole_evaluation(data, out, split="all", progress=False)
    files = find_captures(data)
    captures = [load_capture(f) for f in files]
    assert set(report.by_kind) == set(HOLE_KINDS)
    for row in report.captures:
        assert row["metrics"]["valid_pixels"] == row["hidden_pixels"] > 0  # hidden pixels, all of them
    rmse = {kind: [] for kind in HOLE_KINDS}
    for i, capture in enumerate(captures):
        other = captures[(i + 1) % len(captures)]
        for kind, hidden in hidden_masks(capture.depth_mm, other.depth_mm, seed=i).items():
            visible = capture.valid_mask & ~hidden
            filled = nearest_fill(np.where(visible, capture.depth_mm, np.nan))[hidden]
            # Checked against a k-d tree: each hidden pixel took the depth of a measured pixel at
            # the smallest distance (of several equidistant ones, any may be picked).
            distances, index = cKDTree(np.argwhere(visible)).query(np.argwhere(hidden), k=16)
            ties = np.isclose(distances, distances[:, :1])
            candidates = capture.depth_mm[visible][np.minimum(index, visible.sum() - 1)]
            assert ((candidates == filled[:, None]) & ties).any(axis=1).all(), kind
            rmse[kind].append(np.sqrt(np.mean((filled - capture.depth_mm[hidden]) ** 2)))
    for kind in HOLE_KINDS:  # the report scores exactly that fill on exactly those pixels
        scored = report.by_kind[kind]["nearest"]["rmse_mm"]
        assert scored == pytest.approx(np.mean(rmse[kind]), rel=1e-5), kind


def test_large_captures_are_scored_at_an_integer_fraction_of_their_size(run):
    assert scoring_size((1200, 1944), HOLE_SCORING_MAX_PIXELS) == (600, 972)  # a Zivid 2: halved
    assert scoring_size((1200, 1944), None) == (1200, 1944)
    assert scoring_size((120, 194), 6000) == (60, 97) and scoring_size((120, 194), 5000) == (40, 64)
    block = np.array([[1000.0, np.nan, 1000.0, 1010.0], [np.nan, np.nan, np.nan, np.nan]])
    # The labels' rule: the mean of the measured pixels, kept where at least half were measured.
    expected = np.array([[np.nan, 1005.0]], dtype=np.float32)
    np.testing.assert_array_equal(resize_depth(block, (1, 2))[0], expected)
    data, out = run
    full = run_hole_evaluation(data, out, split="all", progress=False, max_pixels=None)
    half = run_hole_evaluation(data, out, split="all", progress=False, max_pixels=6000)
    assert full.scored_hw == [(120, 194)] and half.scored_hw == [(60, 97)]
    assert "at 60 x 97 (H x W)" in format_hole_table(half)
    hidden = {r["kind"]: r["hidden_pixels"] for r in half.captures if r["method"] == "nearest"}
    hidden_full = {r["kind"]: r["hidden_pixels"] for r in full.captures if r["method"] == "nearest"}
    assert all(0 < hidden[kind] < hidden_full[kind] for kind in hidden), (hidden, hidden_full)


def test_a_negative_hole_scoring_size_is_a_one_line_error(run, capsys):
    data, out = run
    assert main(["evaluate", "--data", str(data), "--adapter", str(out), "--holes",
                 "--holes-max-pixels", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--holes-max-pixels must be >= 0" in err


def test_evaluate_holes_writes_one_object_per_method_with_intervals(run, tmp_path, capsys):
    data, out = run
    assert main(["evaluate", "--data", str(data), "--adapter", str(out), "--split", "all", "--holes",
                 "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "hidden pixels only" in printed and "edge_bands" in printed and "telea" in printed
    holes = json.loads((tmp_path / "r.json").read_text())["holes"]
    assert holes["scored_at"] == [[120, 194]]  # small captures: their own size
    assert list(holes)[1:] == [m for m in FILL_METHODS if not m.startswith("completer")]  # monocular rows
    for kind, row in holes["default"]["by_kind"].items():  # what complete --classical runs, with error bars
        assert row["rmse_mm"] == holes[DEFAULT_FILL]["by_kind"][kind]["rmse_mm"]
        assert 0.0 <= row["coverage_90"] <= 1.0 and row["interval_mm"] > 0.0
        assert "coverage_90" not in holes[DEFAULT_FILL]["by_kind"][kind]
    assert "default fill's 90 % interval" in printed and (out / "fill_error.json").is_file()
    # A model learned with other fill settings is stale: learned again, and said.
    stale = json.loads((out / "fill_error.json").read_text())
    (out / "fill_error.json").write_text(json.dumps({**stale, "settings": {"variance_factor": 0.6}}))
    report = run_hole_evaluation(data, out, split="all", progress=True)
    assert "error bars learned on" in capsys.readouterr().out
    assert json.loads((out / "fill_error.json").read_text())["settings"] == stale["settings"]
    assert "coverage_90" in report.to_dict()["default"]
    for method, row in list(holes.items())[1:]:
        for key in ("rmse_mm", "mae_mm", "within_5mm"):
            lo, hi = row[f"{key}_ci95"]
            assert lo <= row[key] <= hi, (method, key)
        assert set(row["by_kind"]) == set(HOLE_KINDS)
    assert len(list((tmp_path / "plots").glob("holes_*.png"))) == 10


class RingArtefact:
    """A bundle whose outermost output pixels (one pixel of the model's input, all around) are off
    by a factor 2: what zero-padded convolutions that were never supervised at the border do."""

    def __init__(self, bundle):
        self.bundle, self.labels, self.image_size_hw = bundle, bundle.labels, bundle.image_size_hw
        self.record = bundle.record

    def predict_raw(self, rgb):
        raw = self.bundle.predict_raw(rgb).copy()
        ring_y = -(-raw.shape[0] // self.image_size_hw[0])
        ring_x = -(-raw.shape[1] // self.image_size_hw[1])
        border = np.ones(raw.shape, dtype=bool)
        border[ring_y:-ring_y, ring_x:-ring_x] = False
        raw[border] *= 2.0
        return raw


def test_a_border_hole_is_filled_as_if_the_model_had_no_border_artefact(run):
    """Strips of measured pixels hidden along the image border are completed the same with or
    without an artefact in the model's outermost output pixels: the image is mirrored outward
    before the model runs (complete.border_safe_raw), so that ring falls outside the image. Without
    the mirroring the same artefact moves the fill by tens of mm (checked below)."""
    data, out = run
    bundle = load_bundle(out, precision="fp32")
    artefact = RingArtefact(bundle)
    clean, with_artefact, unmirrored = [], [], []
    for files in find_captures(data):
        capture = load_capture(files)
        measured = np.isfinite(capture.depth_mm)
        width = measured.shape[1] // 30
        for start in (0, measured.shape[1] - width):
            hidden = np.zeros_like(measured)
            hidden[:, start:start + width] = True
            hidden &= measured
            if not hidden.any():
                continue
            depth = np.where(hidden, np.nan, capture.depth_mm)
            fills = (complete_capture(bundle, capture.rgb, depth),
                     complete_capture(artefact, capture.rgb, depth),
                     complete_raw(artefact.predict_raw(capture.rgb), depth, bundle.labels))
            for scores, fill in zip((clean, with_artefact, unmirrored), fills, strict=True):
                scores.append(float(np.sqrt(np.mean((fill.depth_mm - capture.depth_mm)[hidden] ** 2))))
    assert len(clean) >= 10
    np.testing.assert_allclose(with_artefact, clean, rtol=0.02, atol=0.5)
    assert np.mean(unmirrored) > np.mean(clean) + 10, (np.mean(unmirrored), np.mean(clean))
