"""The modules every export format writes: uint8 images at the model size in, the model's labels out;
for a completion run, uint8 images and the prompt depth in, depth in mm out."""

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


class ImageAndPromptToDepth(nn.Module):
    """A completion model's graph: uint8 (B, h, w, 3) images at the model size and the prompt
    (B, C, h', w') float32 (data.completion.build_prompt: mm, holes filled) -> depth in mm
    (B, h, w) float32, the run's output rule applied (model.prompt.completed_depth)."""

    def __init__(self, model: nn.Module, output: str):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, image: torch.Tensor, prompt_depth: torch.Tensor) -> torch.Tensor:
        from depth_lora.model.prompt import completed_depth

        pred = self.model(pixel_values=rgb_to_pixel_values(image), prompt_depth=prompt_depth).predicted_depth
        return completed_depth(pred.float(), prompt_depth, self.output)


def export_module(model: nn.Module, completion: dict | None) -> nn.Module:
    """What an export writes for a run: `ImageToLabels`, or `ImageAndPromptToDepth` for a completion
    run (`completion`: its record's completion settings)."""
    if completion:
        return ImageAndPromptToDepth(model, completion["output"]).eval()
    return ImageToLabels(model).eval()


def example_inputs(size_hw: tuple[int, int], completion: dict | None = None,
                   batch: int = 2) -> tuple[torch.Tensor, ...]:
    """The inputs to trace with: images, and for a completion run (`completion`: its settings) the
    prompt, a smooth ramp (a constant prompt would make the min/max normalisation divide by zero)."""
    from depth_lora.data.completion import prompt_shape

    images = example_images(size_hw, batch)
    if not completion:
        return (images,)
    c, h, w = prompt_shape(size_hw, completion)
    ramp = torch.linspace(500.0, 1500.0, h * w).view(1, 1, h, w).expand(batch, c, h, w).contiguous()
    return images, ramp


def plain_model(model: nn.Module) -> nn.Module:
    """A model ready to export: the adapter folded in (PEFT merge_and_unload, in place), fp32,
    contiguous memory, eval mode."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.float().to(memory_format=torch.contiguous_format).eval()


def example_images(size_hw: tuple[int, int], batch: int = 2) -> torch.Tensor:
    """A uint8 batch to trace with (batch 2 by default: torch.export fixes a size-1 dimension)."""
    return torch.zeros(batch, *size_hw, 3, dtype=torch.uint8)
