"""Reload a trained output folder and predict depth in mm at an image's own resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_lora.dataset import LabelScheme, resize_rgb, rgb_to_pixel_values
from depth_lora.errors import ConfigError, DataError, DepthLoraError, ModelError
from depth_lora.outputs import read_meta

IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.bmp")
FORMATS = ("npy", "png", "ply")


@dataclass
class ModelBundle:
    """A model ready for inference and what turns its output into mm.

    model: the base model with the adapter (a PeftModel), or a merged standalone model.
    image_size_hw: the size images are resized to for the model.
    """

    model: torch.nn.Module
    labels: LabelScheme
    image_size_hw: tuple[int, int]
    meta: dict
    folder: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_bundle(folder: str | Path, device: str | torch.device | None = None) -> ModelBundle:
    """Load a depth-lora output folder (adapter or merged model) for inference, in eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForDepthEstimation

    from depth_lora.model import keep_head_in_fp32, quiet_weights_io

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("merged") or meta.get("finetune") == "full":  # a whole model, no adapter
        with quiet_weights_io():
            model = keep_head_in_fp32(AutoModelForDepthEstimation.from_pretrained(folder))
    else:
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(f"{folder}: no adapter_config.json (the training run did not finish?)")
        with quiet_weights_io():
            model = PeftModel.from_pretrained(load_base_model(folder, meta), folder)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    labels = LabelScheme(**meta["labels"])
    return ModelBundle(model, labels, tuple(meta["image_size_hw"]), meta, folder)


def load_base_model(folder: Path, meta: dict, as_published: bool = False) -> torch.nn.Module:
    """The model a run started from: its saved copy (random-init bases) or the hub id / folder,
    with the run's metric head (--head metric, --max-depth) unless `as_published` (the zero-shot
    baseline: the checkpoint as a user would download it)."""
    from depth_lora.model import build_model, make_metric_head

    base_dir = meta.get("base_model_dir")
    model = build_model(str(folder / base_dir) if base_dir else meta["base_model"])[0]
    head = meta.get("head") or {}
    if head.get("type") == "metric" and not as_published:
        make_metric_head(model, head.get("max_depth"))
    return model


@torch.no_grad()
def predict_raw(model: torch.nn.Module, rgb: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    """The model's raw output for one image, upsampled (bilinear) to the image's resolution.

    rgb: (H, W, 3) uint8, resized to `size_hw` for the model. Returns (H, W) float32 tensor in
    the model's output units (labels for a fine-tuned model, disparity-like for a base model).
    """
    device = next(model.parameters()).device
    pixel_values = rgb_to_pixel_values(resize_rgb(rgb, size_hw))[None].to(device)
    pred = model(pixel_values=pixel_values).predicted_depth.float()  # (1, h, w)
    return F.interpolate(pred[:, None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]


def predict_depth_mm(bundle: ModelBundle, rgb: np.ndarray) -> np.ndarray:
    """Depth in mm for one image, at the image's own resolution.

    rgb: (H, W, 3) uint8. Returns (H, W) float32 mm (bilinear upsampling of the model's output).
    """
    pred = predict_raw(bundle.model, rgb, bundle.image_size_hw)
    return bundle.labels.decode(pred).cpu().numpy().astype(np.float32)


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Image files from files and folders (a folder's images/ subfolder if it has one)."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            folder = item / "images" if (item / "images").is_dir() else item
            found += sorted(p for pattern in IMAGE_PATTERNS for p in folder.glob(pattern))
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(item, "no such image file or folder")
    if not found:
        raise DataError(", ".join(map(str, inputs)), "no image found (png, jpg, tif, bmp)")
    return found


def predict_files(
    bundle: ModelBundle,
    images: list[Path],
    out_dir: str | Path,
    formats=("npy", "png"),
    intrinsics: tuple[float, float, float, float] | None = None,
    progress: bool = True,
) -> tuple[list[Path], list[str]]:
    """Predict and write depth for each image; a bad image is reported and skipped.

    Writes `<name>_depth_mm.npy` (float32 mm, the image's resolution), `<name>_depth.png` (colour
    map with a mm colour bar) and `<name>.ply` (coloured points in mm; needs intrinsics).
    Returns (written files, one-line problems).
    """
    from tqdm.auto import tqdm

    from depth_lora.data import load_rgb
    from depth_lora.geometry import depth_to_points, write_ply
    from depth_lora.text import live_progress
    from depth_lora.viz import plot_depth_map, save_figure

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        choices = ", ".join(FORMATS)
        raise ConfigError(f"--format: unknown format(s) {', '.join(unknown)}; choose from {choices}")
    if "ply" in formats and intrinsics is None:
        raise ConfigError(
            "--format ply: a point cloud needs --intrinsics FX FY CX CY or --intrinsics-from FILE.npy"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    for path in tqdm(images, desc="predict", unit="image", disable=not (progress and live_progress())):
        try:
            rgb = load_rgb(path)
        except DepthLoraError as exc:
            problems.append(str(exc))
            continue
        depth = predict_depth_mm(bundle, rgb)
        stem = out_dir / path.stem
        if "npy" in formats:
            np.save(f"{stem}_depth_mm.npy", depth)
            written.append(Path(f"{stem}_depth_mm.npy"))
        if "png" in formats:
            title = path.name + (" (fine-tuned from the offline DEMO model: not Depth Anything)"
                                 if bundle.meta.get("warning") else "")
            written.append(save_figure(plot_depth_map(rgb, depth, title=title), f"{stem}_depth.png"))
        if "ply" in formats:
            write_ply(f"{stem}.ply", depth_to_points(depth, intrinsics), rgb)
            written.append(Path(f"{stem}.ply"))
    return written, problems
