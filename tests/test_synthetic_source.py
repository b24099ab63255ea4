"""Source-domain scenes (rooms, tabletops): reproducible, room-scale clean depth, depth visible in RGB,
written in the layout the rest of the tool reads."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depth_lora.data.captures import find_captures, load_capture
from depth_lora.errors import ConfigError, DataError

# The source scenes are the domain-adaptation experiment's (research code, not the package's).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "domain_adaptation"))
from source_scenes import generate_source_scenes, render_source_scene  # noqa: E402

SIZE_HW = (96, 128)  # 4:3 like the default 240x320, small enough to keep the tests fast
SEEDS = range(10)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb, depth) of ten small scenes, rendered once for the module."""
    return [render_source_scene(seed, SIZE_HW) for seed in SEEDS]


def _ranks(values) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(float)


def test_same_seed_gives_identical_scene_and_other_seeds_differ():
    rgb_a, depth_a = render_source_scene(7, SIZE_HW)
    rgb_b, depth_b = render_source_scene(7, SIZE_HW)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(depth_a, depth_b)  # NaNs in the same places compare equal
    rgb_c, depth_c = render_source_scene(8, SIZE_HW)
    assert not np.array_equal(rgb_a, rgb_c)
    assert not np.array_equal(depth_a, depth_c, equal_nan=True)


def test_scene_has_image_and_z_map_shapes_and_dtypes(scenes):
    for rgb, depth in scenes:
        assert rgb.shape == (*SIZE_HW, 3) and rgb.dtype == np.uint8
        assert depth.shape == SIZE_HW and depth.dtype == np.float32
    rgb, depth = render_source_scene(0, (64, 80))
    assert rgb.shape == (64, 80, 3) and depth.shape == (64, 80)


def test_depth_is_room_scale_millimetres_with_few_holes(scenes):
    for _, depth in scenes:
        ok = np.isfinite(depth)
        assert not np.isinf(depth).any()  # invalid is NaN, never inf
        assert ok.mean() > 0.8  # a clean sensor: NaN only for sky or beyond 12 m
        assert 300 <= depth[ok].min() and depth[ok].max() <= 12500
    pooled = np.concatenate([d[np.isfinite(d)] for _, d in scenes])
    assert 1000 <= np.median(pooled) <= 8000
    medians = [np.nanmedian(d) for _, d in scenes]
    assert max(medians) > 2 * min(medians)  # near tabletops and far room views both occur


def test_camera_looks_about_horizontally_so_the_top_of_the_image_is_farther(scenes):
    # Unlike the target's top-down bin camera, a floor fills the bottom and walls the top.
    h = SIZE_HW[0]
    farther_up = [np.nanmedian(d[: h // 3]) > np.nanmedian(d[-h // 3 :]) for _, d in scenes]
    assert sum(farther_up) >= 0.8 * len(scenes), farther_up


def test_image_brightness_falls_with_depth_within_scenes(scenes):
    # Depth must show in RGB (FACTS.md): a light at the camera falls off as 1 / d^2, so brighter
    # pixels are nearer. A generator without falloff gives rank correlations near 0.
    rhos = []
    for rgb, depth in scenes:
        ok = np.isfinite(depth)
        rhos.append(np.corrcoef(_ranks(rgb.mean(-1)[ok]), _ranks(depth[ok]))[0, 1])
    assert np.mean(rhos) < -0.3 and sum(r < 0 for r in rhos) >= 0.8 * len(rhos), rhos


def test_generate_writes_source_named_pairs_that_the_data_loader_reads(tmp_path):
    out = tmp_path / "source"
    pairs = generate_source_scenes(out, 3, seed=5, size_hw=SIZE_HW, workers=1)
    assert [(i.name, d.name) for i, d in pairs] == [
        (f"source-{i:06d}_color.png", f"source-{i:06d}_rawDepth.npy") for i in range(3)
    ]
    assert all(i.parent == out / "images" and d.parent == out / "depth" for i, d in pairs)
    files = find_captures(out)
    assert [f.key for f in files] == [f"source-{i:06d}" for i in range(3)]
    for f, (image, depth) in zip(files, pairs, strict=True):
        assert (f.image, f.depth) == (image, depth)
        with Image.open(image) as im:
            assert im.mode == "RGB" and im.size == (SIZE_HW[1], SIZE_HW[0])
        raw = np.load(depth)
        assert raw.shape == SIZE_HW and raw.dtype == np.float32
        capture = load_capture(f)  # refuses metres and NaN-only maps
        np.testing.assert_array_equal(capture.depth_mm, raw)
        assert capture.valid_mask.mean() > 0.8
    assert not np.array_equal(np.load(pairs[0][1]), np.load(pairs[1][1]), equal_nan=True)
    assert not any(re.match(r"\d", f.key) for f in files)  # never looks like a user's stamped capture


def test_generate_is_reproducible_and_the_process_pool_matches_one_process(tmp_path):
    serial = generate_source_scenes(tmp_path / "a", 2, seed=9, size_hw=SIZE_HW, workers=1)
    pooled = generate_source_scenes(tmp_path / "b", 2, seed=9, size_hw=SIZE_HW, workers=2)
    other = generate_source_scenes(tmp_path / "c", 2, seed=10, size_hw=SIZE_HW, workers=1)
    for (img_a, dep_a), (img_b, dep_b) in zip(serial, pooled, strict=True):
        assert img_a.name == img_b.name
        np.testing.assert_array_equal(np.asarray(Image.open(img_a)), np.asarray(Image.open(img_b)))
        np.testing.assert_array_equal(np.load(dep_a), np.load(dep_b))
    assert not np.array_equal(np.load(serial[0][1]), np.load(other[0][1]), equal_nan=True)


@pytest.mark.parametrize("existing", ["images/mine_color.png", "depth/mine_rawDepth.npy"])
def test_generate_refuses_a_folder_holding_captures_and_deletes_nothing(tmp_path, existing):
    old = tmp_path / existing
    old.parent.mkdir()
    old.write_bytes(b"a user's file")
    with pytest.raises(DataError) as err:
        generate_source_scenes(tmp_path, 1, size_hw=SIZE_HW, workers=1)
    assert err.value.path == tmp_path and "already holds 1 capture file" in str(err.value)
    assert old.read_bytes() == b"a user's file"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == [existing]


def test_generate_refuses_a_file_as_the_output_folder(tmp_path):
    path = tmp_path / "not_a_folder"
    path.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        generate_source_scenes(path, 1, size_hw=SIZE_HW, workers=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 0}, "count must be an integer >= 1"),
        ({"count": 2.5}, "count must be an integer >= 1"),
        ({"count": True}, "count must be an integer >= 1"),
        ({"count": 1, "seed": -1}, "seed must be an integer >= 0"),
        ({"count": 1, "workers": 0}, "workers must be an integer >= 1"),
        ({"count": 1, "size_hw": (32, 128)}, "at least 64x64"),
        ({"count": 1, "size_hw": "big"}, "two integers"),
    ],
)
def test_bad_count_seed_size_or_workers_raise_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        generate_source_scenes(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


def test_render_rejects_a_size_below_64_pixels():
    with pytest.raises(ConfigError, match="at least 64x64"):
        render_source_scene(0, (48, 64))
