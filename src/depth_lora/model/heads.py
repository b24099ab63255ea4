"""Depth Anything's depth head: kept in fp32 under autocast, and made metric (sigmoid x max_depth)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.depth_anything.modeling_depth_anything import DepthAnythingDepthEstimationHead
from transformers.models.prompt_depth_anything.modeling_prompt_depth_anything import (
    PromptDepthAnythingDepthEstimationHead,
)

from depth_lora.errors import ConfigError


class _HeadInFp32:
    """A DPT depth head computed in fp32 even under autocast (mixed into each head class below).

    Under bf16 autocast the head's last convolution would write the depth map in bf16: 8 bits of
    mantissa, so min-max labels over a 250-3900 mm range move in steps of ~14 mm and small
    gradients round away. The head is a few convolutions; fp32 there costs little. Same weights
    and parameter names as the original head (save_pretrained / from_pretrained are unchanged).
    """

    def forward(self, hidden_states: list[torch.Tensor], patch_height, patch_width) -> torch.Tensor:
        device_type = hidden_states[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return super().forward([h.float() for h in hidden_states], patch_height, patch_width)


class DepthHeadInFp32(_HeadInFp32, DepthAnythingDepthEstimationHead):
    """Depth Anything's head in fp32 (see _HeadInFp32)."""


class PromptHeadInFp32(_HeadInFp32, PromptDepthAnythingDepthEstimationHead):
    """Prompt Depth Anything's head in fp32 (see _HeadInFp32)."""


_FP32_HEADS = {DepthAnythingDepthEstimationHead: DepthHeadInFp32,
               PromptDepthAnythingDepthEstimationHead: PromptHeadInFp32}


def keep_head_in_fp32(model: nn.Module) -> nn.Module:
    """Make the model's depth head (Depth Anything or Prompt Depth Anything) run in fp32 under
    autocast (see _HeadInFp32); in place."""
    fp32_head = _FP32_HEADS.get(type(model.head))
    if fp32_head is not None:
        model.head.__class__ = fp32_head
    return model


def head_type(model: nn.Module) -> str:
    """'relative' or 'metric': the depth head of a model (or of the model inside a PeftModel)."""
    return getattr(model.config, "depth_estimation_type", "relative")


def make_metric_head(model: nn.Module, max_depth: float | None = None) -> nn.Module:
    """Give the model a metric head (sigmoid x max_depth, in metres), in place.

    A relative checkpoint keeps its weights (backbone, neck, head convolutions): only the head's
    last activation changes from ReLU to a sigmoid scaled by `max_depth`, which is how Depth
    Anything V2's metric models were started from the relative ones before metric fine-tuning. On a
    metric checkpoint `max_depth` only changes the range. Every copy of the head is changed (PEFT
    keeps a trainable copy when the head is trained).
    """
    if max_depth is not None and (max_depth < 1 or max_depth != int(max_depth)):
        raise ConfigError(f"--max-depth must be a whole number of metres >= 1, got {max_depth}")
    max_depth = int(max_depth or (model.config.max_depth if head_type(model) == "metric" else 20))
    model.config.depth_estimation_type = "metric"
    model.config.max_depth = max_depth
    for module in model.modules():
        if isinstance(module, DepthAnythingDepthEstimationHead):
            module.activation2 = nn.Sigmoid()
            module.max_depth = max_depth
    return model
