"""Dataset analysis: numbers checked against an independent computation over all pixels."""

from __future__ import annotations

import json

import numpy as np
from conftest import write_capture
from PIL import Image

from depth_lora.cli.commands import main
from depth_lora.data.analysis import analyze_dataset


def all_valid_depths(data_dir):
    """Every valid Z of the folder, read without the package (independent of the code under test)."""
    zs, fractions = [], []
    for path in sorted((data_dir / "depth").glob("*.npy")):
        z = np.load(path)[..., 2].astype(np.float64)
        ok = np.isfinite(z) & (z > 0)
        zs.append(z[ok])
        fractions.append(ok.mean())
    return np.concatenate(zs), fractions


def test_statistics_match_an_independent_computation(mixed_dataset):
    stats, kept = analyze_dataset(mixed_dataset, keep=2, progress=False)
    z, fractions = all_valid_depths(mixed_dataset)
    assert stats.count == 5 and len(kept) == 2
    assert stats.resolutions == [[48, 64], [60, 97]]
    assert stats.valid_pixels == z.size
    np.testing.assert_allclose(stats.depth_min_mm, z.min(), rtol=1e-6)
    np.testing.assert_allclose(stats.depth_max_mm, z.max(), rtol=1e-6)
    np.testing.assert_allclose(stats.depth_mean_mm, z.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats.depth_std_mm, z.std(), rtol=1e-6)
    np.testing.assert_allclose(stats.valid_fraction_mean, np.mean(fractions), rtol=1e-9)
    assert sum(stats.histogram_counts) == z.size


def test_std_is_stable_for_large_offsets(tmp_path):
    # Depth ~3000 mm with a 0.01 mm spread: a naive sum-of-squares variance loses it.
    rng = np.random.default_rng(5)
    for i in range(3):
        z = (3000.0 + 0.01 * rng.standard_normal((40, 50))).astype(np.float64)
        write_capture(tmp_path, f"c{i}", np.zeros((40, 50, 3), np.uint8), z)
    stats, _ = analyze_dataset(tmp_path, progress=False)
    # The loader stores float32, so compare with the float32 values it saw.
    z = np.concatenate([np.load(p).astype(np.float32).ravel() for p in (tmp_path / "depth").glob("*.npy")])
    np.testing.assert_allclose(stats.depth_std_mm, z.astype(np.float64).std(), rtol=1e-3)


def test_cli_analyze_writes_json_with_the_documented_keys_and_plots(mixed_dataset, tmp_path, capsys):
    out_json, plots = tmp_path / "a.json", tmp_path / "plots"
    assert main(["analyze", str(mixed_dataset), "--json", str(out_json), "--plots", str(plots)]) == 0
    printed = capsys.readouterr().out
    z, fractions = all_valid_depths(mixed_dataset)
    report = json.loads(out_json.read_text())
    for key in ("count", "resolutions", "depth_min_mm", "depth_max_mm", "depth_mean_mm",
                "depth_std_mm", "valid_fraction_mean"):
        assert key in report
    assert report["count"] == 5
    assert report["resolutions"] == [[48, 64], [60, 97]]
    np.testing.assert_allclose(report["depth_mean_mm"], z.mean(), rtol=1e-6)
    assert f"{z.mean():.2f}" in printed
    for name in ("depth_histogram.png", "capture_gallery.png"):
        with Image.open(plots / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200


def test_cli_metres_folder_gives_one_line_error_and_writes_nothing(tmp_path, capsys):
    write_capture(tmp_path, "m", np.zeros((8, 9, 3), np.uint8), np.full((8, 9), 1.5, np.float32))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "Traceback" not in err
    err = error_lines[0]
    assert "m_rawDepth.npy: depth looks like metres" in err and "--depth-unit m" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert main(["analyze", str(tmp_path), "--depth-unit", "m"]) == 0
    assert "1500.00" in capsys.readouterr().out
