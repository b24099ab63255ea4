"""The module every export format writes: uint8 images at the model size in, the model's labels out."""

from __future__ import annotations

import torch
from torch import nn

from depth_lora.data.dataset import rgb_to_pixel_values


class ImageToLabels(nn.Module):
    """uint8 (B, h, w, 3) images at the model size -> the model's labels (B, h, w) float32, with
    the very normalisation the PyTorch path uses (dataset.rgb_to_pixel_values)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=rgb_to_pixel_values(image)).predicted_depth.float()


def plain_model(model: nn.Module) -> nn.Module:
    """A model ready to export: the adapter folded in (PEFT merge_and_unload, in place), fp32,
    contiguous memory, eval mode."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.float().to(memory_format=torch.contiguous_format).eval()


def example_images(size_hw: tuple[int, int], batch: int = 2) -> torch.Tensor:
    """A uint8 batch to trace with (batch 2 by default: torch.export fixes a size-1 dimension)."""
    return torch.zeros(batch, *size_hw, 3, dtype=torch.uint8)
