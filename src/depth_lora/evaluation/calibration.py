"""The zero-shot baseline a user can actually run: the base model plus ONE affine map to mm.

Depth Anything's relative head predicts disparity up to an unknown scale and shift. A user without
fine-tuning would fit that scale and shift once, on the captures they have (the training split),
and apply it unchanged to every new capture. That is `zero_shot_calibrated`, the row a fine-tuned
model must beat. (The per-capture fit against each capture's own ground truth,
`zero_shot_aligned`, is an oracle nobody has at inference time.)

The map is fitted in two spaces, by least squares over all valid pixels of the training split
(pooled: every pixel weighs the same; the closed form of `align.fit_affine`, as the per-capture
fit), and the space with the lower RMSE on the validation split is kept:

- ``inverse_depth``: ``1 / z = s * raw + t`` (the MiDaS protocol's space; the head's own);
- ``depth``: ``z = s * raw + t``.

Depth is clamped to [min / 2, 2 * max] of the training depths either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from depth_lora.data.dataset import PreparedCapture
from depth_lora.errors import ModelError
from depth_lora.inference.predict import predict_raw
from depth_lora.numeric.align import fit_affine
from depth_lora.numeric.metrics import depth_metrics, mean_over_captures

SPACES = ("inverse_depth", "depth")


@dataclass(frozen=True)
class Calibration:
    """One affine map from the base model's raw output to depth in mm (see the module doc)."""

    space: str  # "inverse_depth" or "depth"
    scale: float
    shift: float
    min_depth_mm: float
    max_depth_mm: float
    train_captures: int = 0
    train_pixels: int = 0
    val_rmse_mm: dict | None = None  # validation RMSE of each space, for the record

    def apply(self, raw) -> np.ndarray:
        """(H, W) raw model output -> (H, W) float64 depth in mm."""
        y = self.scale * np.asarray(raw, dtype=np.float64) + self.shift
        if self.space == "inverse_depth":
            y = 1.0 / np.clip(y, 1.0 / self.max_depth_mm, 1.0 / self.min_depth_mm)
        return np.clip(y, self.min_depth_mm, self.max_depth_mm)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the output folder") -> Calibration:
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError(f"{source}: bad zero_shot_calibration ({exc})") from None


@torch.no_grad()
def raw_outputs(
    model: torch.nn.Module, captures: list[PreparedCapture], precision: str = "fp32"
) -> list[np.ndarray]:
    """The model's raw output for each prepared capture, at the capture's (input) size (an fp32
    array; `precision`: the forward's autocast), run on the model's device.

    Under several processes (a torch.distributed process group, as torchrun's Trainer starts) each
    process runs its share of the captures (every world_size-th) and the shares are gathered, so
    every process gets every output and none waits on another's whole split."""
    rank, world = _process_share()
    was_training = model.training
    model.eval()
    mine = {i: predict_raw(model, captures[i].rgb, captures[i].rgb.shape[:2], precision).cpu().numpy()
            for i in range(rank, len(captures), world)}
    model.train(was_training)
    if world > 1:
        shares = [None] * world
        torch.distributed.all_gather_object(shares, mine)
        mine = {i: raw for share in shares for i, raw in share.items()}
    return [mine[i] for i in range(len(captures))]


def _process_share() -> tuple[int, int]:
    """(rank, world size) of this process's process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def fit_calibration(
    raw_train: list[np.ndarray],
    train: list[PreparedCapture],
    raw_val: list[np.ndarray],
    val: list[PreparedCapture],
) -> Calibration:
    """Fit the map in each space on the training captures, keep the one better on validation.

    raw_*: the base model's raw outputs, each the shape of its capture's depth_mm (mm, NaN holes).
    """
    valid_train = [np.isfinite(c.depth_mm) & np.isfinite(r) for r, c in zip(raw_train, train, strict=True)]
    depths = np.concatenate([c.depth_mm[v] for c, v in zip(train, valid_train, strict=True)])
    if depths.size < 2:
        raise ModelError("cannot calibrate the zero-shot model: no valid pixel in the training split")
    lo, hi = float(depths.min()) / 2, float(depths.max()) * 2
    raw = np.concatenate([r[v] for r, v in zip(raw_train, valid_train, strict=True)])
    candidates = []
    for space in SPACES:
        z = depths.astype(np.float64)
        scale, shift = fit_affine(raw, 1.0 / z if space == "inverse_depth" else z)
        calib = Calibration(space, scale, shift, lo, hi, len(train), int(raw.size))
        scores = [depth_metrics(calib.apply(r), c.depth_mm) for r, c in zip(raw_val, val, strict=True)]
        rmse = mean_over_captures(scores).get("rmse_mm", float("inf"))
        candidates.append((rmse, space, calib))
    best = min(candidates, key=lambda item: item[0])[2]
    record = {space: round(float(rmse), 3) for rmse, space, _ in candidates}
    return Calibration(**{**best.to_dict(), "val_rmse_mm": record})


def fit_zero_shot_calibration(
    model: torch.nn.Module, train: list[PreparedCapture], val: list[PreparedCapture], precision: str = "fp32"
) -> Calibration:
    """Run the base `model` on the training and validation captures and fit its calibration, in the
    precision `evaluate` will apply it in (the run's)."""
    raw_train, raw_val = raw_outputs(model, train, precision), raw_outputs(model, val, precision)
    return fit_calibration(raw_train, train, raw_val, val)
