"""Loading Zivid captures: discovery, formats, checks, split."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import random_capture, write_capture
from PIL import Image

from depth_lora.data.captures import find_captures, load_capture, load_depth_mm, load_rgb
from depth_lora.data.split import (
    capture_time,
    group_captures,
    load_split,
    make_split,
    save_split,
    straddling_groups,
)
from depth_lora.errors import ConfigError, DataError


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_pairs_are_matched_by_shared_stem_for_all_naming_schemes(tmp_path):
    rng = np.random.default_rng(1)
    rgb, xyz = random_capture(rng, 20, 30)
    write_capture(tmp_path, "a", rgb, xyz, "2026_Zivid_acquisition_color.png",
                  "2026_Zivid_acquisition_rawDepth.npy")
    write_capture(tmp_path, "b", rgb, xyz, "plain.png", "plain.npy")
    write_capture(tmp_path, "c", rgb, xyz, "scene_color.png", "scene_rawDepth.npy")
    found = find_captures(tmp_path)
    assert [c.key for c in found] == ["2026_Zivid_acquisition", "plain", "scene"]
    assert found[0].image.name == "2026_Zivid_acquisition_color.png"
    assert found[0].depth.name == "2026_Zivid_acquisition_rawDepth.npy"


def test_xyz_and_z_only_depth_in_any_float_dtype_give_z_in_mm_with_nan_holes(tmp_path):
    z = np.array([[500.0, np.nan, np.inf], [-3.0, 0.0, 1200.5]])
    xyz = np.stack([np.ones_like(z), 2 * np.ones_like(z), z], axis=-1)
    for i, (array, dtype) in enumerate([(xyz, np.float32), (z, np.float64), (xyz, np.float16)]):
        path = tmp_path / f"d{i}.npy"
        np.save(path, array.astype(dtype))
        depth = load_depth_mm(path)
        assert depth.dtype == np.float32 and depth.shape == (2, 3)
        expected_valid = np.array([[True, False, False], [False, False, True]])
        np.testing.assert_array_equal(np.isfinite(depth), expected_valid)
        np.testing.assert_allclose(depth[expected_valid], [500.0, 1200.5], rtol=1e-3)


def test_metres_are_refused_with_a_hint_and_converted_with_depth_unit_m(tmp_path):
    path = tmp_path / "metres.npy"
    np.save(path, np.full((4, 5), 1.25, dtype=np.float32))
    with pytest.raises(DataError, match=r"metres.npy: depth looks like metres .*--depth-unit m"):
        load_depth_mm(path)
    np.testing.assert_allclose(load_depth_mm(path, depth_unit="m"), 1250.0)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_png_modes_load_as_rgb_uint8(tmp_path, mode):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    if mode == "I;16":
        gray16 = rng.integers(0, 65536, size=(10, 12), dtype=np.uint16)
        Image.fromarray(gray16).save(tmp_path / "x.png")
        expected = np.repeat(np.round(gray16 / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    else:
        Image.fromarray(rgb).convert(mode).save(tmp_path / "x.png")
        expected = np.asarray(Image.fromarray(rgb).convert(mode).convert("RGB"))
    out = load_rgb(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, expected)


def test_mixed_resolutions_load_at_their_own_size(mixed_dataset):
    sizes = [load_capture(f).size_hw for f in find_captures(mixed_dataset)]
    assert sorted(set(sizes)) == [(48, 64), (60, 97)]


# ---- bad input: one clear error naming the file, nothing written ---------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"nope: data folder does not exist"):
        find_captures(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"no captures found .*demo-data"):
        find_captures(tmp_path)


def test_unpaired_files_are_all_listed_in_one_message(mixed_dataset):
    (mixed_dataset / "images" / "lonely_color.png").write_bytes(b"")
    (mixed_dataset / "depth" / "orphan_rawDepth.npy").write_bytes(b"")
    (mixed_dataset / "depth" / "orphan2.npy").write_bytes(b"")
    with pytest.raises(DataError) as err:
        find_captures(mixed_dataset)
    msg = str(err.value)
    assert "3 unpaired file(s)" in msg and "\n" not in msg
    assert "lonely_color.png has no depth file" in msg
    assert "orphan_rawDepth.npy has no image" in msg and "orphan2.npy has no image" in msg


def test_corrupt_png(mixed_dataset):
    files = find_captures(mixed_dataset)
    files[0].image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=rf"{files[0].image.name}: cannot read image"):
        load_capture(files[0])


def test_truncated_png(mixed_dataset):
    files = find_captures(mixed_dataset)
    data = files[1].image.read_bytes()
    files[1].image.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{files[1].image.name}: cannot read image"):
        load_capture(files[1])


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"garbage, not numpy", "not a readable .npy array"),
        (np.array([{"a": 1}], dtype=object), "not a readable .npy array"),
        (np.zeros((4, 5, 2), np.float32), r"expected shape \(H, W, 3\) XYZ or \(H, W\) Z, got \(4, 5, 2\)"),
        (np.zeros((7,), np.float32), r"expected shape .* got \(7,\)"),
        (np.array([["a", "b"]]), "expected a numeric array"),
    ],
)
def test_bad_depth_files(tmp_path, content, problem):
    path = tmp_path / "bad.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content, allow_pickle=True)
    with pytest.raises(DataError, match=rf"bad.npy: {problem}"):
        load_depth_mm(path)


def test_depth_without_valid_pixel(tmp_path):
    path = tmp_path / "holes.npy"
    np.save(path, np.full((3, 3, 3), np.nan, np.float32))
    with pytest.raises(DataError, match=r"holes.npy: depth has no valid pixel"):
        load_depth_mm(path)


def test_image_and_depth_of_different_size(tmp_path):
    rng = np.random.default_rng(3)
    rgb, _ = random_capture(rng, 20, 30)
    _, xyz = random_capture(rng, 21, 30)
    write_capture(tmp_path, "cap", rgb, xyz)
    with pytest.raises(DataError, match=r"cap_rawDepth.npy: depth is 21x30 \(HxW\) but its image "
                                        r"cap_color.png is 20x30"):
        load_capture(find_captures(tmp_path)[0])


# ---- split ---------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_complete():
    keys = [f"k{i:02d}" for i in range(58)]
    split = make_split(keys, seed=0)
    assert split == make_split(list(reversed(keys)), seed=0)
    assert split != make_split(keys, seed=1)
    assert [len(split[s]) for s in ("train", "val", "test")] == [46, 6, 6]
    assert sorted(split["train"] + split["val"] + split["test"]) == keys


@pytest.mark.parametrize("n, sizes", [(1, [1, 0, 0]), (2, [2, 0, 0]), (3, [1, 1, 1]), (5, [3, 1, 1]),
                                      (6, [2, 2, 2]), (12, [8, 2, 2])])
def test_small_datasets_hold_out_one_group_from_three_and_two_from_six(n, sizes):
    split = make_split([str(i) for i in range(n)])
    assert [len(split[s]) for s in ("train", "val", "test")] == sizes


@pytest.mark.parametrize("seed", range(5))
def test_demo_sessions_give_each_held_out_split_two_sessions(seed):
    # 24 demo captures come in about 8 sessions: neither held-out split may be a single session,
    # which could not carry a verdict (one scene, alike captures).
    from depth_lora.synthetic.demo import capture_stamps

    keys = [f"{stamp}_Zivid_acquisition" for stamp in capture_stamps(seed, 24)]
    groups = group_captures(keys, "session")
    split = make_split(keys, seed=seed, groups=groups)
    for name in ("val", "test"):
        assert len({groups[k] for k in split[name]}) >= 2, name
    assert len({groups[k] for k in split["train"]}) >= 2


def test_split_round_trips_through_json(tmp_path):
    split = make_split([f"k{i}" for i in range(10)], seed=3)
    path = save_split(split, tmp_path / "split.json", seed=3)
    assert json.loads(path.read_text())["seed"] == 3
    assert load_split(path) == split


def zivid_sessions(sessions: int, per_session: int, minutes_apart: int = 45) -> list[str]:
    """Zivid export names (YY-MM-DD-HH-MM-SS): `sessions` sessions of `per_session` captures 30 s
    apart, sessions `minutes_apart` minutes apart."""
    start = dt.datetime(2021, 3, 15, 8, 0, 0)
    return [
        (start + dt.timedelta(minutes=minutes_apart * s, seconds=30 * j)).strftime("%y-%m-%d-%H-%M-%S")
        + "_Zivid_acquisition"
        for s in range(sessions) for j in range(per_session)
    ]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("sessions, per_session", [(12, 3), (5, 4), (20, 1), (3, 6)])
def test_a_session_never_lands_in_two_splits(seed, sessions, per_session):
    keys = zivid_sessions(sessions, per_session)
    groups = group_captures(keys, "session")
    assert len(set(groups.values())) == sessions
    split = make_split(keys, 0.15, 0.2, seed, groups)
    assert sorted(sum(split.values(), [])) == sorted(keys)
    assert straddling_groups(split, groups) == []
    assert all(split[name] for name in ("train", "val", "test"))  # 3 or more sessions: all three


def test_sessions_are_consecutive_stamps_less_than_ten_minutes_apart_in_both_stamp_styles():
    keys = ["21-03-15-10-00-00_Zivid_acquisition", "21-03-15-10-09-59_Zivid_acquisition",
            "21-03-15-10-19-59_Zivid_acquisition",  # exactly 10 min after the previous one: new session
            "2021-03-15_10-25-00_color", "capture_without_stamp", "21-13-45-99-00-00_not_a_date"]
    groups = group_captures(keys)
    assert groups[keys[0]] == groups[keys[1]] != groups[keys[2]]
    assert groups[keys[3]] == groups[keys[2]]  # 5 min 1 s after it, the other stamp style
    assert groups["capture_without_stamp"] == "capture_without_stamp"
    assert groups[keys[5]] == keys[5]  # month 13: not a stamp, its own group
    assert capture_time("21-03-15-10-00-00_x") == dt.datetime(2021, 3, 15, 10, 0, 0)


def test_group_by_none_and_regex():
    keys = ["binA_001", "binA_002", "binB_001", "loose"]
    assert group_captures(keys, "none") == {k: k for k in keys}
    groups = group_captures(keys, r"regex:^(bin\w)_")
    assert groups == {"binA_001": "binA", "binA_002": "binA", "binB_001": "binB", "loose": "loose"}
    for bad, message in [("regex:(", "bad regular expression"), ("regex:bin", "capture group"),
                         ("sessions", "--group-by takes")]:
        with pytest.raises(ConfigError, match=message):
            group_captures(keys, bad)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("sizes", [(40, 30, 5), (1, 1, 1, 30), (20, 1, 1), (6, 2, 3, 2, 9, 1, 4)])
def test_sessions_of_unequal_size_still_give_every_split_a_session(seed, sizes):
    keys, groups = [], {}
    for s, size in enumerate(sizes):
        for j in range(size):
            keys.append(f"s{s}_{j}")
            groups[keys[-1]] = f"s{s}"
    split = make_split(keys, 0.1, 0.1, seed, groups)
    assert all(split[name] for name in ("train", "val", "test")), split
    assert straddling_groups(split, groups) == []
    # The smallest groups are held out when none fits a split's share: training keeps the big one.
    largest = f"s{sizes.index(max(sizes))}"
    assert sum(groups[k] == largest for k in split["train"]) == max(sizes)


def test_too_few_sessions_leave_nothing_to_hold_out():
    keys = zivid_sessions(2, 5)
    split = make_split(keys, 0.1, 0.1, 0, group_captures(keys))
    assert split["val"] == split["test"] == [] and len(split["train"]) == 10


def test_bad_split_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text('{"train": []}')
    with pytest.raises(DataError, match="split.json: split file must hold lists"):
        load_split(path)
