"""Reload a trained output folder and predict depth in mm at an image's own resolution."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_lora.dataset import LabelScheme, resize_rgb, rgb_to_pixel_values
from depth_lora.errors import ModelError

META_FILE = "depth_lora.json"


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


def read_meta(folder: str | Path) -> dict:
    """Read `depth_lora.json` of an output folder; ModelError naming the folder if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: adapter folder does not exist")
    path = folder / META_FILE
    if not path.is_file():
        raise ModelError(
            f"{folder}: no {META_FILE}, so not a depth-lora output folder (train one with `depth-lora train`)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None


def load_bundle(folder: str | Path, device: str | torch.device | None = None) -> ModelBundle:
    """Load a depth-lora output folder (adapter or merged model) for inference, in eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForDepthEstimation

    from depth_lora.model import build_model

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("merged"):
        model = AutoModelForDepthEstimation.from_pretrained(folder)
    else:
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(f"{folder}: no adapter_config.json (the training run did not finish?)")
        base_dir = meta.get("base_model_dir")
        base, _ = build_model(str(folder / base_dir) if base_dir else meta["base_model"])
        model = PeftModel.from_pretrained(base, folder)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    labels = LabelScheme(**meta["labels"])
    return ModelBundle(model, labels, tuple(meta["image_size_hw"]), meta, folder)


@torch.no_grad()
def predict_depth_mm(bundle: ModelBundle, rgb: np.ndarray) -> np.ndarray:
    """Depth in mm for one image, at the image's own resolution.

    rgb: (H, W, 3) uint8. Returns (H, W) float32 mm (bilinear upsampling of the model's output).
    """
    pixel_values = rgb_to_pixel_values(resize_rgb(rgb, bundle.image_size_hw))[None].to(bundle.device)
    pred = bundle.model(pixel_values=pixel_values).predicted_depth.float()  # (1, h, w) label units
    pred = F.interpolate(pred[:, None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    return bundle.labels.decode(pred).cpu().numpy().astype(np.float32)
