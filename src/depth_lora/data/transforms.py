"""Batch transforms on the training device: uint8 images -> normalised pixel values, flip, jitter.

The Dataset serves uint8 images and ready labels straight from memory (no float work per item, so
no worker process is needed to keep a GPU busy); these run once per batch wherever the batch is,
on the GPU in real training. Their randomness comes from torch's RNG on the batch's device, which
the Trainer seeds: a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# ImageNet statistics, as Depth Anything's image processor normalises.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER_STRENGTH = 0.1
# What a flip mirrors with the image: a depth batch's labels and mask, and a completion batch's
# (data.completion) hidden pixels, weights and prompt.
FLIPPED_WITH_IMAGE = ("labels", "valid_mask", "hidden_mask", "loss_weight", "prompt_depth")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) values in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 -> float32 in [0, 1]."""
    return images.float().div(255.0)


def color_jitter(x: torch.Tensor, strength: float = JITTER_STRENGTH) -> torch.Tensor:
    """Random brightness, contrast, saturation factors in [1 - s, 1 + s], drawn per image.

    x: (B, 3, H, W) or (3, H, W) values in [0, 1]. Written here because torchvision is not a
    dependency; mild on purpose: brightness carries distance under a projector's light falloff.
    """
    batch = x if x.dim() == 4 else x[None]
    factors = 1 + strength * (2 * torch.rand(batch.shape[0], 3, device=x.device) - 1)
    b, c, s = (factors[:, i].view(-1, 1, 1, 1).to(x.dtype) for i in range(3))
    batch = batch * b
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    batch = (batch - mean) * c + mean
    gray = (0.299 * batch[:, 0:1] + 0.587 * batch[:, 1:2] + 0.114 * batch[:, 2:3])
    batch = ((batch - gray) * s + gray).clamp(0, 1)
    return batch if x.dim() == 4 else batch[0]


def flip_together(flip: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Mirror left-right the images of a batch where `flip` (B,) bool is set, in every tensor alike
    (image (B, 3, H, W), labels and mask (B, H, W)): the last axis is always the width."""
    out = []
    for t in tensors:
        where = flip.view(-1, *([1] * (t.dim() - 1)))
        out.append(torch.where(where, t.flip(-1), t))
    return out


@dataclass(frozen=True)
class BatchTransform:
    """What a batch goes through on the device before the model: always uint8 -> normalised
    float32; in training only, a random horizontal flip (image, labels and mask together, each image
    with probability 1/2) and colour jitter of `jitter_strength` (0: none)."""

    flip: bool = False
    jitter_strength: float = 0.0

    def __call__(self, batch: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        images = batch["pixel_values"]
        if images.dtype != torch.uint8:  # already normalised (a caller's own float batch)
            return batch
        x = to_unit_range(images)  # (B, 3, H, W) in [0, 1]
        out = dict(batch)
        if training and self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            keys = [k for k in FLIPPED_WITH_IMAGE if k in batch]
            x, *flipped = flip_together(flip, x, *(batch[k] for k in keys))
            out.update(zip(keys, flipped, strict=True))
        if training and self.jitter_strength > 0:
            x = color_jitter(x, self.jitter_strength)
        out["pixel_values"] = normalize(x)
        return out
