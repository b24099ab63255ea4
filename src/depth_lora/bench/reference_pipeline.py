"""A faithful re-implementation of the original student pipeline, for `depth-lora bench` only.

What it did, per FACTS.md: a Dataset that decodes the 1200x1944 PNG and the 28 MB XYZ .npy and runs
the checkpoint's image processor on every access; labels at full resolution, min-max normalised
with the dataset's range, NaN -> 0 with a mask; `compute_loss` interpolates labels and mask to the
prediction's size on every step; masked MSE; the HF Trainer; fp32 on CPU, fp16 on CUDA.
Same model code and batch size as ours: only the pipeline differs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import DPTImageProcessor, Trainer
from transformers.image_utils import PILImageResampling


def checkpoint_processor(size: int = 518) -> DPTImageProcessor:
    """The preprocessing of Depth-Anything-V2-Small-hf's preprocessor_config.json."""
    return DPTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_pad=False,
    )


class ReferenceZividDataset(torch.utils.data.Dataset):
    """Decodes everything on every access, like the original."""

    def __init__(self, pairs, depth_min_mm: float, depth_max_mm: float, processor=None):
        self.pairs = pairs  # [(png path, npy path)]
        self.depth_min, self.depth_max = depth_min_mm, depth_max_mm
        self.processor = processor or checkpoint_processor()

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image_path, depth_path = self.pairs[i]
        image = Image.open(image_path).convert("RGB")
        depth = np.load(depth_path)[:, :, 2]
        mask = ~np.isnan(depth)
        depth = np.nan_to_num(depth, nan=0.0)
        labels = (depth - self.depth_min) / (self.depth_max - self.depth_min)
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {
            "pixel_values": pixel_values,
            "labels": torch.tensor(labels, dtype=torch.float32),
            "mask": torch.tensor(mask),
        }


class ReferenceTrainer(Trainer):
    """The original's compute_loss: labels interpolated to the prediction's size at every step."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        mask = inputs.pop("mask")
        outputs = model(**inputs)
        pred = outputs.predicted_depth
        labels = F.interpolate(labels.unsqueeze(1), size=pred.shape[-2:], mode="bilinear").squeeze(1)
        mask = F.interpolate(mask.unsqueeze(1).float(), size=pred.shape[-2:], mode="nearest").squeeze(1) > 0.5
        loss = F.mse_loss(pred[mask], labels[mask])
        return (loss, outputs) if return_outputs else loss
