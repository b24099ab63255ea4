"""Generated Zivid-like captures: reproducible, Zivid-shaped, with metric depth visible in RGB."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from depth_lora.errors import ConfigError, DataError
from depth_lora.synthetic.demo import (
    capture_seeds,
    capture_stamp,
    capture_stamps,
    generate_demo_captures,
    session_plan,
)
from depth_lora.synthetic.scenes import (
    CELL_WORK_RANGE_MM,
    CELLS_WORK_RANGE_MM,
    camera_intrinsics,
    render_capture,
)
from depth_lora.training.config import DEMO_COUNT

SIZE_HW = (120, 194)  # a tenth of the Zivid 2 resolution keeps the tests fast
SEEDS = range(12)


@pytest.fixture(scope="module")
def captures() -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb, xyz) of twelve small captures, rendered once for the module."""
    return [render_capture(seed, SIZE_HW) for seed in SEEDS]


def test_same_seed_gives_identical_capture_and_other_seeds_differ():
    rgb_a, xyz_a = render_capture(7, SIZE_HW)
    rgb_b, xyz_b = render_capture(7, SIZE_HW)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(xyz_a, xyz_b)  # NaNs in the same places compare equal
    rgb_c, xyz_c = render_capture(8, SIZE_HW)
    assert not np.array_equal(rgb_a, rgb_c)
    assert not np.array_equal(np.isnan(xyz_a), np.isnan(xyz_c))


def test_capture_has_zivid_shapes_and_dtypes(captures):
    for rgb, xyz in captures:
        assert rgb.shape == (*SIZE_HW, 3) and rgb.dtype == np.uint8
        assert xyz.shape == (*SIZE_HW, 3) and xyz.dtype == np.float32
    rgb, xyz = render_capture(0, (64, 80))
    assert rgb.shape == (64, 80, 3) and xyz.shape == (64, 80, 3)


def test_invalid_pixels_are_nan_in_all_three_channels(captures):
    for _, xyz in captures:
        nan = np.isnan(xyz)
        assert (nan[..., 0] == nan[..., 1]).all() and (nan[..., 1] == nan[..., 2]).all()
        assert np.isfinite(xyz[~nan[..., 2]]).all()  # no inf either


def test_x_and_y_follow_the_scaled_zivid_intrinsics(captures):
    fx, fy, cx, cy = camera_intrinsics(SIZE_HW)
    assert fx == pytest.approx(1780 * 194 / 1944) and cy == pytest.approx(60.0)
    v, u = np.mgrid[0 : SIZE_HW[0], 0 : SIZE_HW[1]]
    for _, xyz in captures:
        z, ok = xyz[..., 2], np.isfinite(xyz[..., 2])
        np.testing.assert_allclose(xyz[..., 0][ok], ((u - cx) * z / fx)[ok], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(xyz[..., 1][ok], ((v - cy) * z / fy)[ok], rtol=1e-5, atol=1e-3)


def test_depth_is_in_zivid_range_with_realistic_holes(captures):
    fractions = []
    for _, xyz in captures:
        z = xyz[..., 2]
        ok = np.isfinite(z)
        assert 200 <= z[ok].min() and z[ok].max() <= 4500
        fractions.append(ok.mean())
    # Real Zivid captures are 65-68 % valid: every capture has holes and none is mostly empty.
    assert all(0.2 < f < 0.99 for f in fractions), fractions
    assert 0.55 <= np.mean(fractions) <= 0.85, fractions
    medians = [np.nanmedian(xyz[..., 2]) for _, xyz in captures]
    assert min(medians) < 800 and max(medians) > 1500  # the camera distance varies


def _ranks(values) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def test_image_brightness_falls_with_distance(captures):
    # Metric depth must be visible in RGB: the projector's light falls off with distance, so
    # farther captures are darker. A generator normalising brightness per image would fail.
    brightness = [rgb.mean(-1)[np.isfinite(xyz[..., 2])].mean() for rgb, xyz in captures]
    distance = [np.nanmedian(xyz[..., 2]) for _, xyz in captures]
    spearman = np.corrcoef(_ranks(brightness), _ranks(distance))[0, 1]
    assert spearman < -0.5, (spearman, brightness, distance)


def test_capture_stamps_look_like_zivid_and_sort_in_capture_order():
    stamps = capture_stamps(3, 3000)  # crosses midnight
    assert all(re.fullmatch(r"demo-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", s) for s in stamps)
    assert sorted(stamps) == stamps and len(set(stamps)) == len(stamps)
    assert capture_stamp(0, 0) == "demo-2026-01-01_08-00-00"
    assert capture_stamp(4, 0) != capture_stamp(3, 0)
    assert [capture_stamp(3, i) for i in range(5)] == stamps[:5]


def test_demo_captures_come_in_sessions_that_the_split_keeps_together(tmp_path):
    from depth_lora.data.split import group_captures

    for cells, low, high in ((1, 3, 3), (5, 2, 4)):
        groups = group_captures(capture_stamps(1, 39, cells))
        sizes = sorted(Counter(groups.values()).values())
        assert low <= sizes[0] and sizes[-1] <= high and len(sizes) >= 10, (cells, sizes)
    # One session is one cell seen from one pose: the crates and the camera stay, the parts move.
    pairs = generate_demo_captures(tmp_path, 3, seed=1, size_hw=SIZE_HW, workers=1)
    assert len(set(group_captures([p.name.removesuffix("_color.png") for p, _ in pairs]).values())) < 3
    (_, a), (_, b) = pairs[0], pairs[1]
    za, zb = np.load(a)[..., 2], np.load(b)[..., 2]
    both = np.isfinite(za) & np.isfinite(zb)
    same = np.abs(za[both] - zb[both]) < 5  # mm
    assert same.mean() > 0.5  # mostly the same surfaces at the same depths
    assert not np.array_equal(np.isnan(za), np.isnan(zb))  # but not the same capture


@pytest.mark.parametrize("seed", range(5))
def test_the_demo_split_holds_out_two_sessions_and_five_captures_each_without_a_warning(seed):
    from depth_lora.data.split import group_captures, make_split
    from depth_lora.training.config import TrainConfig

    cfg = TrainConfig()  # the fractions a run uses by default
    stamps = capture_stamps(seed, DEMO_COUNT)
    groups = group_captures(stamps)
    split = make_split(stamps, cfg.val_fraction, cfg.test_fraction, seed, groups)
    for name in ("val", "test"):
        assert len({groups[k] for k in split[name]}) >= 2 and len(split[name]) >= 5, (name, split)
    held_out = len(split["val"]) + len(split["test"])
    assert held_out <= 2 * (cfg.val_fraction + cfg.test_fraction) * DEMO_COUNT  # no lopsided warning


def test_one_cell_sessions_are_one_camera_re_mounted_and_several_cells_are_not(tmp_path):
    def session_depths(cells):
        plan, seeds = session_plan(4, 16, cells), capture_seeds(4, 16, cells)
        firsts = [key for (_, j), key in zip(plan, seeds, strict=True) if j == 0][:4]  # 4 sessions
        work = CELL_WORK_RANGE_MM if cells == 1 else CELLS_WORK_RANGE_MM
        return [np.nanmedian(render_capture(c, SIZE_HW, s, session_seed=r, work_range_mm=work)[1][..., 2])
                for c, s, r in firsts]

    one, many = session_depths(1), session_depths(16)
    assert max(one) / min(one) < 1.15, one  # the same mount give or take a few cm
    assert 1000 < np.median(one) < 2200, one  # about 1.5 m, as a Zivid 2+ over a table
    seeds = capture_seeds(4, 6, 1)
    assert len({s for _, s, _ in seeds}) == 1 and len({r for _, _, r in seeds}) == 2  # 1 cell, 2 sessions
    assert len({s for _, s, _ in capture_seeds(4, 12, 2)}) == 2
    assert max(many) / min(many) > max(one) / min(one), (many, one)


def test_generate_writes_zivid_named_pairs_in_capture_order(tmp_path):
    pairs = generate_demo_captures(tmp_path / "demo", 3, seed=5, size_hw=SIZE_HW, workers=1)
    assert len(pairs) == 3
    for i, (image, depth) in enumerate(pairs):
        stamp = capture_stamp(5, i)
        assert image == tmp_path / "demo" / "images" / f"{stamp}_Zivid_acquisition_color.png"
        assert depth == tmp_path / "demo" / "depth" / f"{stamp}_Zivid_acquisition_rawDepth.npy"
        with Image.open(image) as im:
            assert im.mode == "RGB" and im.size == (SIZE_HW[1], SIZE_HW[0])
        xyz = np.load(depth)
        assert xyz.shape == (*SIZE_HW, 3) and xyz.dtype == np.float32
    assert sorted(p.name for p, _ in pairs) == [p.name for p, _ in pairs]
    assert sorted((tmp_path / "demo" / "images").iterdir()) == [p for p, _ in pairs]
    depths = [np.load(d) for _, d in pairs]
    assert not np.array_equal(np.isnan(depths[0]), np.isnan(depths[1]))  # independent captures


def test_generate_is_reproducible_and_the_process_pool_matches_one_process(tmp_path):
    serial = generate_demo_captures(tmp_path / "a", 2, seed=9, size_hw=SIZE_HW, workers=1)
    pooled = generate_demo_captures(tmp_path / "b", 2, seed=9, size_hw=SIZE_HW, workers=2)
    other = generate_demo_captures(tmp_path / "c", 2, seed=10, size_hw=SIZE_HW, workers=1)
    for (img_a, dep_a), (img_b, dep_b) in zip(serial, pooled, strict=True):
        assert img_a.name == img_b.name
        np.testing.assert_array_equal(np.asarray(Image.open(img_a)), np.asarray(Image.open(img_b)))
        np.testing.assert_array_equal(np.load(dep_a), np.load(dep_b))
    assert not np.array_equal(np.load(serial[0][1]), np.load(other[0][1]), equal_nan=True)


def test_generate_refuses_a_folder_holding_captures(tmp_path):
    (tmp_path / "images").mkdir()
    old = tmp_path / "images" / "mine_Zivid_acquisition_color.png"
    old.write_bytes(b"not really a png")
    with pytest.raises(DataError, match=re.escape(str(tmp_path))) as err:
        generate_demo_captures(tmp_path, 1, size_hw=SIZE_HW, workers=1)
    assert "overwrite" in str(err.value)
    assert old.read_bytes() == b"not really a png"
    assert not (tmp_path / "depth").exists()


def test_overwrite_replaces_only_capture_files(tmp_path):
    generate_demo_captures(tmp_path, 2, seed=1, size_hw=SIZE_HW, workers=1)
    notes = tmp_path / "images" / "notes.txt"
    notes.write_text("keep me")
    (tmp_path / "split.json").write_text("{}")
    pairs = generate_demo_captures(tmp_path, 1, seed=2, size_hw=SIZE_HW, overwrite=True, workers=1)
    assert sorted((tmp_path / "images").glob("*.png")) == [pairs[0][0]]
    assert sorted((tmp_path / "depth").glob("*.npy")) == [pairs[0][1]]
    assert pairs[0][0].name.startswith(capture_stamp(2, 0))  # the new run, not the old one
    assert notes.read_text() == "keep me" and (tmp_path / "split.json").exists()


def test_overwrite_never_deletes_a_users_own_captures(tmp_path):
    generate_demo_captures(tmp_path, 1, seed=1, size_hw=SIZE_HW, workers=1)
    mine = tmp_path / "depth" / "2026-03-01_Zivid_acquisition_rawDepth.npy"
    np.save(mine, np.ones((4, 4), np.float32))
    with pytest.raises(DataError, match="not demo captures .*choose another folder"):
        generate_demo_captures(tmp_path, 1, seed=2, size_hw=SIZE_HW, overwrite=True, workers=1)
    assert mine.is_file() and len(list((tmp_path / "images").glob("demo-*.png"))) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 0}, "count"),
        ({"count": -3}, "count"),
        ({"count": 2.5}, "count"),
        ({"count": 1, "seed": -1}, "seed"),
        ({"count": 1, "size_hw": (63, 194)}, "64"),
        ({"count": 1, "size_hw": (120, 10)}, "64"),
        ({"count": 1, "size_hw": (120,)}, "size"),
        ({"count": 1, "workers": -2}, "workers"),
    ],
)
def test_bad_count_seed_size_or_workers_raise_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        generate_demo_captures(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_render_rejects_a_size_below_64_pixels():
    with pytest.raises(ConfigError, match="64"):
        render_capture(0, (32, 32))
