"""Masked training losses: MSE, L1, scale-invariant log (SiLog) and the affine-invariant loss of
relative-depth pretraining (SSI), NaN-safe and in fp32.

Every loss takes ``pred``, ``target`` (B, H, W) and ``valid_mask`` (B, H, W) bool and averages
over the valid pixels of the whole batch (pooled, not a mean of per-image means; SSI, which
normalises each image, averages per image). A pixel counts
only where the mask is True and the target is finite (SiLog: and both values are positive), so a
NaN or inf label never reaches the arithmetic: invalid entries are replaced with ``torch.where``
*before* any operation, which keeps both the loss and its gradient finite. A batch without a valid
pixel gives a loss of exactly 0 that is still connected to ``pred`` (backward works, gradients 0).
"""

from __future__ import annotations

import torch
from torch import nn

from depth_lora.errors import ConfigError


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return fp32 ``pred`` and ``target`` with invalid entries set to 0, and the valid mask."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if valid_mask is None:
        valid_mask = torch.ones_like(target, dtype=torch.bool)
    elif valid_mask.shape != target.shape:
        raise ValueError(f"valid_mask {tuple(valid_mask.shape)} and target differ in shape")
    # fp32 even under autocast: squared mm-scale errors and logs lose too much in fp16/bf16.
    pred = pred.float()
    target = target.detach().float()
    valid = valid_mask.detach().bool() & torch.isfinite(target)
    zeros = torch.zeros_like(target)
    # pred too: a NaN prediction on an ignored pixel must not turn its zero gradient into NaN.
    return torch.where(valid, pred, zeros), torch.where(valid, target, zeros), valid


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``valid``; exactly 0 (still a function of values) when none is."""
    values = torch.where(valid, values, torch.zeros_like(values))
    return values.sum() / valid.sum().clamp(min=1)


class MaskedMSELoss(nn.Module):
    """Mean squared error over valid pixels, in the units of the labels."""

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: pred, target (B, H, W); valid_mask (B, H, W) bool. Returns a scalar tensor."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target, valid = _prepare(pred, target, valid_mask)
            return _masked_mean((pred - target) ** 2, valid)


class MaskedL1Loss(nn.Module):
    """Mean absolute error over valid pixels, in the units of the labels."""

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: pred, target (B, H, W); valid_mask (B, H, W) bool. Returns a scalar tensor."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target, valid = _prepare(pred, target, valid_mask)
            return _masked_mean((pred - target).abs(), valid)


class SiLogLoss(nn.Module):
    """Scale-invariant log loss, as Depth Anything V2's ``metric_depth`` trains with.

    ``loss = sqrt(mean(d^2) - lambd * mean(d)^2)`` with ``d = log(target) - log(pred)`` over valid
    pixels whose target is positive. ``pred`` is clamped to ``eps`` before the log (a ReLU head
    can output 0); where it is clamped it gets no gradient. The root's argument is clamped to
    ``eps`` too, so a perfect prediction gives ~1e-6 instead of an infinite gradient.

    Args:
        lambd: weight of the squared mean (0: plain log RMSE, 1: fully scale invariant).
        eps: floor for ``pred`` and for the root's argument.
    """

    def __init__(self, lambd: float = 0.5, eps: float = 1e-6):
        super().__init__()
        self.lambd = lambd
        self.eps = eps

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: pred, target (B, H, W) positive; valid_mask (B, H, W) bool. Returns a scalar."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target, valid = _prepare(pred, target, valid_mask)
            valid = valid & (target > 0)
            ones = torch.ones_like(target)
            # log(1) = 0 on invalid pixels: no log(0) or log(NaN) is ever evaluated there.
            log_target = torch.log(torch.where(valid, target, ones))
            log_pred = torch.log(torch.where(valid, pred, ones).clamp(min=self.eps))
            d = torch.where(valid, log_target - log_pred, torch.zeros_like(log_pred))
            count = valid.sum().clamp(min=1)
            mean_d = d.sum() / count
            mean_d2 = (d**2).sum() / count
            variance = mean_d2 - self.lambd * mean_d**2
            # With no valid pixel d is all 0: return that 0 (sqrt would give sqrt(eps)).
            return torch.where(
                valid.any(), torch.sqrt(variance.clamp(min=self.eps**2)), variance * 0
            )


class ScaleShiftInvariantLoss(nn.Module):
    """Affine-invariant loss of MiDaS and Depth Anything's relative pretraining.

    Per image, prediction and target are each shifted by their median and divided by their mean
    absolute deviation from it over the valid pixels; the loss is the mean absolute difference of
    the two, averaged over the images with at least 2 valid pixels. Any prediction s * target + t
    (s > 0) scores 0: it teaches relative depth (on inverse-depth labels, relative disparity),
    not millimetres. Images without 2 valid pixels add nothing.

    Args:
        eps: floor of the deviation (a flat image would divide by zero).
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: pred, target (B, H, W); valid_mask (B, H, W) bool. Returns a scalar tensor."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target, valid = _prepare(pred, target, valid_mask)
            pred, target, valid = pred.flatten(1), target.flatten(1), valid.flatten(1)
            usable = valid.sum(1) >= 2  # (B,)
            # An unusable image becomes a zero image with every pixel "valid": all finite, loss 0.
            valid = valid | ~usable[:, None]
            keep = usable[:, None]
            pred = torch.where(keep, pred, torch.zeros_like(pred))
            target = torch.where(keep, target, torch.zeros_like(target))
            count = valid.sum(1, keepdim=True)

            def normalise(x: torch.Tensor) -> torch.Tensor:
                median = torch.where(valid, x, torch.nan).nanmedian(dim=1, keepdim=True).values
                deviation = torch.where(valid, (x - median).abs(), torch.zeros_like(x)).sum(1, keepdim=True)
                return (x - median) / (deviation / count).clamp(min=self.eps)

            error = torch.where(valid, (normalise(pred) - normalise(target)).abs(), torch.zeros_like(pred))
            per_image = error.sum(1) / count[:, 0]
            return (per_image * usable).sum() / usable.sum().clamp(min=1)


class CompletionLoss(nn.Module):
    """A completion model's loss: weighted squared error in units of each image's prompt range.

    A Prompt Depth Anything model outputs depth in the prompt's unit (mm here), its head's 0..1
    scaled by the prompt's min and max per image; dividing the error by that range makes every
    image count alike, whether its depths span 100 mm or 10 m. `loss_weight` (B, H, W) weighs the
    pixels (data.completion: hidden pixels up); the mean is over the weight of valid pixels.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor,
                loss_weight: torch.Tensor, prompt_depth: torch.Tensor) -> torch.Tensor:
        """Args: pred, target (B, H, W) mm; valid_mask (B, H, W) bool; loss_weight (B, H, W);
        prompt_depth (B, 1, h, w) mm. Returns a scalar tensor."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target, valid = _prepare(pred, target, valid_mask)
            flat = prompt_depth[:, :1].detach().float().flatten(1)  # the depth channel
            scale = (flat.amax(dim=1) - flat.amin(dim=1)).clamp(min=1e-3).view(-1, 1, 1)
            weight = torch.where(valid, loss_weight.detach().float(), torch.zeros_like(pred))
            return (weight * ((pred - target) / scale) ** 2).sum() / weight.sum().clamp(min=1e-6)


# ssi is blind to the output's scale and shift: its runs are scored aligned (the run record says so,
# runs.folder.SCALE_INVARIANT_LOSSES).
LOSSES = {"mse": MaskedMSELoss, "l1": MaskedL1Loss, "silog": SiLogLoss, "ssi": ScaleShiftInvariantLoss}


def build_loss(name: str) -> nn.Module:
    """The loss module for ``name``: "mse", "l1", "silog" or "ssi" (case-insensitive).

    Raises:
        ConfigError: an unknown name.
    """
    key = str(name).strip().lower()
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[key]()
