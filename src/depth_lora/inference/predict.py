"""Reload a trained output folder and predict depth in mm at an image's own resolution."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_lora.data.dataset import LabelScheme, resize_rgb, rgb_to_pixel_values
from depth_lora.errors import DataError, DepthLoraError, ModelError
from depth_lora.inference.options import check_batch_size, check_formats
from depth_lora.model.lora import to_channels_last
from depth_lora.model.precision import resolve_device, resolve_precision
from depth_lora.runs.folder import EXPORT_FORMAT_NAMES, RunRecord, read_record
from depth_lora.runs.task import require_task, task_of

IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.bmp")


@dataclass
class ModelBundle:
    """A model ready for inference and what turns its output into mm.

    model: the base model with the adapter (a PeftModel), or a merged standalone model.
    labels: how the output becomes mm (its task's `labels`); None for a completion model, whose
        output is depth in mm given the capture's measured depth (`predict_completion`).
    image_size_hw: the size images are resized to for the model.
    precision: "fp32", "bf16" or "fp16": the autocast of the forward (the head and the output stay
    fp32, see model.DepthHeadInFp32).
    """

    model: torch.nn.Module
    labels: LabelScheme | None
    image_size_hw: tuple[int, int]
    record: RunRecord
    folder: Path
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict_mm(self, rgbs: list[np.ndarray]) -> list[np.ndarray]:
        """Depth in mm for a batch of images (any sizes), each at its own resolution."""
        require_task(self.record, self.folder, "depth", "predict depth from an image alone")
        raw = predict_raw_batch(self.model, rgbs, self.image_size_hw, self.precision)
        return [self.labels.decode(r).cpu().numpy().astype(np.float32) for r in raw]

    def predict_raw(self, rgb: np.ndarray) -> np.ndarray:
        """The model's raw output for one (H, W, 3) uint8 image, upsampled to (H, W) float32 (what
        `complete` fits to the measured depth)."""
        return predict_raw(self.model, rgb, self.image_size_hw, self.precision).cpu().numpy()

    def predict_completion(self, rgb: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """A completion model's depth in mm for one capture, at the image's (H, W): `rgb` (H, W, 3)
        uint8 and `depth_mm` (H, W), NaN (or <= 0) where the camera measured nothing."""
        require_task(self.record, self.folder, "complete", "complete a capture from the measured depth")
        return predict_completion(self.model, rgb, depth_mm, self.image_size_hw, self.record.completion,
                                  self.precision)


def load_bundle(
    folder: str | Path, device: str | torch.device | None = None, precision: str = "auto"
) -> ModelBundle:
    """Load a depth-lora output folder (adapter or merged model) for inference, in eval mode.

    precision: "auto" (bf16 autocast on a CPU with native bf16 or a CUDA GPU with it, fp16 on
    older GPUs, else fp32), or "fp32", "bf16", "fp16" (CUDA only).
    """
    from peft import PeftModel
    from transformers import AutoModelForDepthEstimation

    from depth_lora.model.checkpoints import quiet_weights_io
    from depth_lora.model.heads import keep_head_in_fp32

    folder = Path(folder)
    record = read_record(folder)
    if record.is_export:
        raise ModelError(f"{folder}: an {EXPORT_FORMAT_NAMES[record.format]} export, which only `predict` "
                         f"and `complete` run; use the folder it was exported from ({record.exported_from}) "
                         "for this")
    if record.whole_model:  # a whole model, no adapter
        with quiet_weights_io():
            model = keep_head_in_fp32(AutoModelForDepthEstimation.from_pretrained(folder))
    else:
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(f"{folder}: no adapter_config.json (the training run did not finish?)")
        with quiet_weights_io():
            model = PeftModel.from_pretrained(load_base_model(folder, record), folder)
    device = resolve_device(device)
    precision = resolve_precision(precision, device.type)
    # channels-last: the DPT neck's and head's convolutions run faster on CPU (benchmarks/RESULTS.md).
    to_channels_last(model.to(device)).eval()
    return ModelBundle(model, task_of(record).labels(record), record.image_size_hw, record, folder, precision)


def load_base_model(folder: Path, record: RunRecord, as_published: bool = False) -> torch.nn.Module:
    """The model a run started from: its saved copy (random-init bases) or the hub id / folder, as
    its task builds it: with the run's metric head (--head metric, --max-depth), a completer's
    residual head, unless `as_published` (the zero-shot baseline: the checkpoint as a user would
    download it)."""
    return task_of(record).base_model(folder, record, as_published)


def autocast(device: torch.device, precision: str):
    """The forward's autocast for a resolved precision (nothing for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


@torch.no_grad()
def predict_raw_batch(
    model: torch.nn.Module, rgbs: list[np.ndarray], size_hw: tuple[int, int], precision: str = "fp32"
) -> list[torch.Tensor]:
    """The model's raw output for a batch of images, each upsampled (bilinear) to its resolution.

    rgbs: (H, W, 3) uint8 images of any sizes, each resized to `size_hw` and run as one batch.
    Returns (H, W) float32 tensors in the model's output units (labels for a fine-tuned model,
    disparity-like for a base model); the output is fp32 whatever the precision.
    """
    device = next(model.parameters()).device
    batch = np.stack([resize_rgb(rgb, size_hw) for rgb in rgbs])
    pixel_values = rgb_to_pixel_values(batch).to(device).contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        pred = model(pixel_values=pixel_values).predicted_depth.float()  # (B, h, w)
    return [upsample(p, rgb.shape[:2]) for p, rgb in zip(pred, rgbs, strict=True)]


@torch.no_grad()
def predict_completion(model: torch.nn.Module, rgb: np.ndarray, depth_mm: np.ndarray,
                       size_hw: tuple[int, int], completion: dict, precision: str = "fp32") -> np.ndarray:
    """A completion model's depth in mm for one capture, upsampled (bilinear) to the image's (H, W).

    The prompt is the measured depth area-averaged to the run's prompt size with its holes filled
    harmonically, with the measured share as a second channel if the run has one
    (data.completion.build_prompt, as in training); `completion`: the run record's
    completion settings (its output rule and prompt scale). Raises DataError when nothing is measured.
    """
    from depth_lora.data.completion import capture_prompt
    from depth_lora.model.prompt import completed_depth

    prompt = capture_prompt(depth_mm, size_hw, completion)
    device = next(model.parameters()).device
    prompt_t = torch.from_numpy(prompt)[None].to(device)
    pixel_values = rgb_to_pixel_values(resize_rgb(rgb, size_hw)[None]).to(device)
    with autocast(device, precision):
        pred = model(pixel_values=pixel_values.contiguous(memory_format=torch.channels_last),
                     prompt_depth=prompt_t).predicted_depth.float()
    depth = completed_depth(pred, prompt_t, completion["output"])[0]
    return upsample(depth, rgb.shape[:2]).cpu().numpy()


def upsample(pred: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(h, w) model output -> (H, W), bilinear (half-pixel centres, as the processors do)."""
    return F.interpolate(pred[None, None], size=tuple(size_hw), mode="bilinear", align_corners=False)[0, 0]


def predict_raw(
    model: torch.nn.Module, rgb: np.ndarray, size_hw: tuple[int, int], precision: str = "fp32"
) -> torch.Tensor:
    """`predict_raw_batch` for one (H, W, 3) uint8 image: its (H, W) float32 raw output."""
    return predict_raw_batch(model, [rgb], size_hw, precision)[0]


def predict_depth_mm(bundle, rgb: np.ndarray) -> np.ndarray:
    """Depth in mm for one image, at the image's own resolution.

    bundle: a ModelBundle (PyTorch) or a deploy.exported.ExportedBundle (ONNX Runtime, OpenVINO).
    rgb: (H, W, 3) uint8.
    Returns (H, W) float32 mm (bilinear upsampling of the model's output).
    """
    return bundle.predict_mm([rgb])[0]


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
    batch_size: int = 1,
) -> tuple[list[Path], list[str]]:
    """Predict and write depth for each image; a bad image is reported and skipped.

    bundle: a ModelBundle or a deploy.exported.ExportedBundle. Images are run `batch_size` at a time
    (they may differ in size: each is resized to the model's input). Writes `<name>_depth_mm.npy`
    (float32 mm, the image's resolution), `<name>_depth.png` (colour map with a mm colour bar) and
    `<name>.ply` (coloured points in mm; needs intrinsics). Returns (written files, one-line problems).
    """
    from tqdm.auto import tqdm

    from depth_lora.data.captures import load_rgb
    from depth_lora.text import live_progress

    check_formats(formats, has_intrinsics=intrinsics is not None)
    check_batch_size(batch_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    bar = tqdm(total=len(images), desc="predict", unit="image", disable=not (progress and live_progress()))
    for start in range(0, len(images), batch_size):
        loaded = []
        for path in images[start:start + batch_size]:
            try:
                loaded.append((path, load_rgb(path)))
            except DepthLoraError as exc:
                problems.append(str(exc))
        depths = bundle.predict_mm([rgb for _, rgb in loaded]) if loaded else []
        for (path, rgb), depth in zip(loaded, depths, strict=True):
            written += _write_prediction(bundle, path, rgb, depth, out_dir, formats, intrinsics)
        bar.update(len(images[start:start + batch_size]))
    bar.close()
    return written, problems


def _write_prediction(bundle, path: Path, rgb, depth, out_dir: Path, formats, intrinsics) -> list[Path]:
    from depth_lora.numeric.geometry import depth_to_points, write_ply
    from depth_lora.viz import plot_depth_map, save_figure

    stem, written = out_dir / path.stem, []
    if "npy" in formats:
        np.save(f"{stem}_depth_mm.npy", depth)
        written.append(Path(f"{stem}_depth_mm.npy"))
    if "png" in formats:
        figure = plot_depth_map(rgb, depth, title=path.name, warning=bundle.record.warning)
        written.append(save_figure(figure, f"{stem}_depth.png"))
    if "ply" in formats:
        write_ply(f"{stem}.ply", depth_to_points(depth, intrinsics), rgb)
        written.append(Path(f"{stem}.ply"))
    return written
