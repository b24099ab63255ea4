"""The on-disk cache of prepared captures: same arrays and batches as decoding, invalidated by a
changed source file, robust to damaged entries and to a folder it cannot write."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainingArguments

from depth_lora.data.cache import CACHE_ENV, ArrayCache, default_cache_dir
from depth_lora.data.captures import find_captures
from depth_lora.data.dataset import DepthDataset, LabelScheme, depth_range_mm, prepare_captures
from depth_lora.data.transforms import JITTER_STRENGTH, BatchTransform
from depth_lora.model.checkpoints import build_model
from depth_lora.training.losses import build_loss
from depth_lora.training.trainer import DepthTrainer

SIZE = (42, 70)


def entries(cache: ArrayCache) -> list:
    return sorted(cache.root.glob("*.safetensors"))


def test_cached_captures_equal_decoded_ones_and_are_read_back(mixed_dataset, tmp_path):
    files = find_captures(mixed_dataset)
    cache = ArrayCache(tmp_path / "cache")
    decoded = prepare_captures(files, SIZE, progress=False, cache=False)
    first = prepare_captures(files, SIZE, progress=False, cache=cache)
    assert len(entries(cache)) == len(files)
    stamps = [p.stat().st_mtime_ns for p in entries(cache)]
    second = prepare_captures(files, SIZE, progress=False, cache=cache)
    assert [p.stat().st_mtime_ns for p in entries(cache)] == stamps  # read, not rewritten
    for a, b, c in zip(decoded, first, second, strict=True):
        assert a.key == b.key == c.key and a.original_size_hw == b.original_size_hw == c.original_size_hw
        assert a.rgb.dtype == c.rgb.dtype == np.uint8 and np.array_equal(a.rgb, c.rgb)
        assert c.depth_mm.dtype == np.float32
        np.testing.assert_array_equal(a.depth_mm, c.depth_mm)  # NaN holes in the same places
    # another input size is another entry
    prepare_captures(files[:1], (28, 42), progress=False, cache=cache)
    assert len(entries(cache)) == len(files) + 1


def train_batches(prepared, seed: int, out) -> list[dict[str, torch.Tensor]]:
    """The training batches DepthTrainer feeds its model for one epoch, after the device transforms."""
    labels = LabelScheme("minmax", *depth_range_mm(prepared))
    args = TrainingArguments(output_dir=str(out), use_cpu=True, report_to=[], seed=seed,
                             remove_unused_columns=False, per_device_train_batch_size=2)
    dataset = DepthDataset(prepared, labels)
    trainer = DepthTrainer(model=build_model("tiny")[0], args=args, train_dataset=dataset,
                           loss_fn=build_loss("mse"), label_scheme=labels,
                           transform=BatchTransform(flip=True, jitter_strength=JITTER_STRENGTH))
    trainer.model.train()
    torch.manual_seed(seed)
    return [trainer._prepare_inputs(batch) for batch in trainer.get_train_dataloader()]


def test_cached_and_uncached_runs_see_identical_batches(mixed_dataset, tmp_path):
    files = find_captures(mixed_dataset)
    cache = ArrayCache(tmp_path / "cache")
    prepare_captures(files, SIZE, progress=False, cache=cache)  # fill the cache
    uncached = train_batches(prepare_captures(files, SIZE, progress=False, cache=False), 7, tmp_path / "a")
    cached = train_batches(prepare_captures(files, SIZE, progress=False, cache=cache), 7, tmp_path / "b")
    assert len(cached) == len(uncached) == 3
    for a, b in zip(uncached, cached, strict=True):
        assert set(a) == {"pixel_values", "labels", "valid_mask"}
        assert a["pixel_values"].dtype == torch.float32 and a["pixel_values"].shape[1:] == (3, *SIZE)
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_a_changed_source_file_misses_and_its_entry_is_rebuilt(mixed_dataset, tmp_path):
    files = find_captures(mixed_dataset)
    cache = ArrayCache(tmp_path / "cache")
    before = prepare_captures(files, SIZE, progress=False, cache=cache)
    # New content with a new mtime: the image turned white.
    image = files[0].image
    Image.fromarray(np.full((60, 97, 3), 255, dtype=np.uint8)).save(image)
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = prepare_captures(files, SIZE, progress=False, cache=cache)
    assert (after[0].rgb == 255).all() and not (before[0].rgb == 255).all()
    assert len(entries(cache)) == len(files) + 1  # a new entry for the new file
    # Same content, only touched: also a miss (no content hashing), the arrays are the same.
    depth = files[1].depth
    os.utime(depth, ns=(depth.stat().st_atime_ns, depth.stat().st_mtime_ns + 10**9))
    again = prepare_captures(files, SIZE, progress=False, cache=cache)
    assert len(entries(cache)) == len(files) + 2
    np.testing.assert_array_equal(again[1].depth_mm, after[1].depth_mm)


def test_a_damaged_entry_is_ignored_and_rebuilt(mixed_dataset, tmp_path):
    files = find_captures(mixed_dataset)[:2]
    cache = ArrayCache(tmp_path / "cache")
    good = prepare_captures(files, SIZE, progress=False, cache=cache)
    for path in entries(cache):  # a run killed mid-write cannot do this (atomic rename), a disk can
        path.write_bytes(path.read_bytes()[:100])
    rebuilt = prepare_captures(files, SIZE, progress=False, cache=cache)
    for a, b in zip(good, rebuilt, strict=True):
        assert np.array_equal(a.rgb, b.rgb)
    again = prepare_captures(files, SIZE, progress=False, cache=cache)  # the rebuilt entries are whole
    assert np.array_equal(again[1].rgb, good[1].rgb)
    assert not list(cache.root.glob("*.tmp"))


def test_an_unwritable_cache_folder_warns_once_and_the_run_goes_on(mixed_dataset, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cache = ArrayCache(blocker / "cache")  # cannot be created, whatever the user's rights
    prepared = prepare_captures(find_captures(mixed_dataset), SIZE, progress=False, cache=cache)
    assert len(prepared) == 5
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "cannot write the prepared-capture cache" in warnings[0]
    assert CACHE_ENV in warnings[0]


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path, prepared_cache_dir):
    assert default_cache_dir() == prepared_cache_dir  # tests never write ~/.cache
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "depth_lora" / "prepared"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "depth_lora" / "prepared"


@pytest.mark.parametrize("no_cache", [False, True])
def test_training_uses_the_cache_unless_told_not_to(mixed_dataset, tmp_path, monkeypatch, no_cache):
    from depth_lora.training.config import TrainConfig
    from depth_lora.training.run import run_training

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cfg = TrainConfig(data=str(mixed_dataset), output=str(tmp_path / "out"), model="tiny", max_steps=1,
                      batch_size=2, image_size=list(SIZE), precision="fp32", group_by="none",
                      val_fraction=0.2, test_fraction=0.2, no_cache=no_cache)
    run_training(cfg, progress=False)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == (0 if no_cache else 5)
