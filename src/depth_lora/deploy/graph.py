"""The modules every export format writes: uint8 images at the model size in, the model's labels out;
for a completion run, uint8 images and the prompt depth in, depth in mm out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from depth_lora.data.dataset import rgb_to_pixel_values
from depth_lora.deploy.exported import DEPTH_NAME, INPUT_NAME, OUTPUT_NAME, PROMPT_NAME


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


@dataclass
class ExportGraph:
    """What an export format writes for a run: the module, its inputs' and output's names, and
    `example(batch)`, the inputs to trace it with (batch 2 by default: torch.export fixes a size-1
    dimension). Its task makes it (Task.export_graph)."""

    module: nn.Module
    input_names: list[str]
    output_name: str
    example: Callable[[int], tuple[torch.Tensor, ...]]


def image_graph(model: nn.Module, size_hw: tuple[int, int]) -> ExportGraph:
    """A monocular run's graph: `ImageToLabels`, uint8 images in, the model's labels out."""
    return ExportGraph(ImageToLabels(model).eval(), [INPUT_NAME], OUTPUT_NAME,
                       lambda batch=2: (example_images(size_hw, batch),))


def prompt_graph(model: nn.Module, size_hw: tuple[int, int], completion: dict) -> ExportGraph:
    """A completion run's graph (`completion`: its record's settings): `ImageAndPromptToDepth`, uint8
    images and the prompt in, depth in mm out. The prompt it is traced with is a smooth ramp (a
    constant one would make the min/max normalisation divide by zero)."""
    from depth_lora.data.completion import prompt_shape

    def example(batch: int = 2) -> tuple[torch.Tensor, ...]:
        c, h, w = prompt_shape(size_hw, completion)
        ramp = torch.linspace(500.0, 1500.0, h * w).view(1, 1, h, w).expand(batch, c, h, w).contiguous()
        return example_images(size_hw, batch), ramp

    return ExportGraph(ImageAndPromptToDepth(model, completion["output"]).eval(), [INPUT_NAME, PROMPT_NAME],
                       DEPTH_NAME, example)


def plain_model(model: nn.Module) -> nn.Module:
    """A model ready to export: the adapter folded in (PEFT merge_and_unload, in place), fp32,
    contiguous memory, eval mode."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.float().to(memory_format=torch.contiguous_format).eval()


def example_images(size_hw: tuple[int, int], batch: int = 2) -> torch.Tensor:
    """A uint8 batch to trace with (batch 2 by default: torch.export fixes a size-1 dimension)."""
    return torch.zeros(batch, *size_hw, 3, dtype=torch.uint8)
