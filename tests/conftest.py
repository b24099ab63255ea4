"""Shared fixtures: small hand-made captures written in the Zivid layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never reach the Hugging Face hub: fail fast instead of retrying for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def write_capture(
    data_dir: Path,
    key: str,
    rgb: np.ndarray,
    depth: np.ndarray,
    image_name: str | None = None,
    depth_name: str | None = None,
) -> tuple[Path, Path]:
    """Write one capture: images/<key>_color.png and depth/<key>_rawDepth.npy (or given names)."""
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    (data_dir / "depth").mkdir(parents=True, exist_ok=True)
    image_path = data_dir / "images" / (image_name or f"{key}_color.png")
    depth_path = data_dir / "depth" / (depth_name or f"{key}_rawDepth.npy")
    Image.fromarray(rgb).save(image_path)
    np.save(depth_path, depth)
    return image_path, depth_path


def random_capture(rng: np.random.Generator, h: int, w: int, hole_fraction: float = 0.3):
    """(rgb uint8 (h, w, 3), xyz float32 (h, w, 3) in mm with NaN holes)."""
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    z = rng.uniform(300.0, 2500.0, size=(h, w)).astype(np.float32)
    z[rng.random((h, w)) < hole_fraction] = np.nan
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    xyz = np.stack([(u - w / 2) * z / 500.0, (v - h / 2) * z / 500.0, z], axis=-1)
    return rgb, xyz.astype(np.float32)


@pytest.fixture(scope="session", autouse=True)
def prepared_cache_dir(tmp_path_factory) -> Path:
    """The prepared-capture cache of every test (and of the processes they start) lives in this
    session's temporary folder, never in the user's ~/.cache."""
    path = tmp_path_factory.mktemp("prepared_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEPTH_LORA_CACHE", str(path))
        yield path


@pytest.fixture
def mixed_dataset(tmp_path: Path) -> Path:
    """Five captures of two resolutions, Zivid export names, ~30 % holes."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 97), (48, 64), (60, 97), (48, 64), (60, 97)]):
        rgb, xyz = random_capture(rng, h, w)
        key = f"2026-01-0{i + 1}_10-00-00_Zivid_acquisition"
        write_capture(tmp_path, key, rgb, xyz)
    return tmp_path


def demo_run(root: Path, captures_seed: int, **overrides) -> tuple[Path, Path]:
    """10 generated captures (120x194) in root/data and a short run trained on them in root/out:
    demo-pretrained (a base whose output follows the scene, so zero-shot rows are not degenerate),
    4 steps at 70x112, fp32. Returns (data, output folder)."""
    from depth_lora.synthetic.demo import generate_demo_captures
    from depth_lora.training.config import TrainConfig
    from depth_lora.training.run import run_training

    data = root / "data"
    generate_demo_captures(data, 10, seed=captures_seed, size_hw=(120, 194), workers=1)
    values = dict(data=str(data), output=str(root / "out"), model="demo-pretrained", max_steps=4,
                  batch_size=2, image_size=[70, 112], learning_rate=1e-3, precision="fp32")
    run_training(TrainConfig(**{**values, **overrides}), progress=False)
    return data, root / "out"


@pytest.fixture(scope="session")
def shared_demo_run(tmp_path_factory) -> tuple[Path, Path]:
    """One trained demo run (see demo_run) for every test that only reads a finished run: evaluate,
    predict, complete, merge, export. Tests write their outputs elsewhere, never into it."""
    return demo_run(tmp_path_factory.mktemp("shared_run"), captures_seed=5)

