"""Complete a capture's depth: the model's prediction anchored to the camera's own measured pixels.

At inference a camera user has the RGB image *and* the measured depth around each hole. The
model's output is first mapped to mm by one robust affine fit on the measured pixels (in the
model's label space: inverse depth for a zero-shot base), then anchored locally: the residual
camera - prediction is interpolated into each hole harmonically (`anchor_prediction`, a
gradient-domain fill). Measured pixels are returned exactly as the camera gave them.

A completed depth never leaves the range the capture supports: where the fitted prediction or the
anchored result falls outside [min measured / DEPTH_BOUND_FACTOR, max measured x DEPTH_BOUND_FACTOR]
(an affine fit in inverse depth, extrapolated inside a large hole, can cross zero), the hole takes
the classical harmonic fill of the measured depth instead, which lies within the measured range by
construction (the maximum principle); those pixels are counted and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_lora.data.dataset import LabelScheme
from depth_lora.errors import DataError
from depth_lora.inference.predict import ModelBundle
from depth_lora.model.lora import to_channels_last
from depth_lora.numeric.fill import robust_fit_affine, smooth_fill
from depth_lora.runs.folder import RunRecord
from depth_lora.runs.task import task_of

MIN_MEASURED_PIXELS = 200  # fewer measured pixels than this: no fit can be trusted
MIN_MEASURED_FRACTION = 0.01
# The residual (camera - prediction) is smooth: solve its fill at ~this many pixels, upsample.
RESIDUAL_MAX_PIXELS = 250_000
# The global fit (2 unknowns) uses at most this many measured pixels, evenly strided.
FIT_MAX_SAMPLES = 200_000
# A filled pixel farther than this share of the image diagonal from any measured pixel is "far":
# its depth comes from the model's shape alone, counted and reported.
FAR_FRACTION_OF_DIAGONAL = 0.05
# A hole may hold a surface nearer or farther than any the camera measured (a part's top, the bin
# floor under a reflection), but not by more than this factor of the measured extremes: beyond it,
# nothing in the capture supports the model's value, and the harmonic fill is used there instead.
DEPTH_BOUND_FACTOR = 1.5
# The image is mirrored outward by this many pixels of the model's input before predicting (one
# Dinov2 patch), see border_safe_raw.
BORDER_PATCH_PX = 14
# A completion model's output is anchored to each hole's border like the monocular fill: a tiny
# completer's held-out hidden-pixel RMSE was 65.0 mm raw and 33.5 anchored (prompt alone 33.8),
# see benchmarks/RESULTS.md; evaluate --holes scores both.
ANCHOR_COMPLETER = True


@dataclass
class Completion:
    """One completed depth map and how it was made.

    depth_mm: (H, W) float32, the camera's value on measured pixels, the anchored prediction in
        the holes (NaN only where nothing can anchor it).
    filled: (H, W) bool, the holes that were filled.
    prediction_mm: (H, W) float32, the model's prediction after the global fit (before anchoring).
    inlier_fraction: share of measured pixels the robust global fit kept (None: a completion model,
        whose output needs no fit).
    fallback: (H, W) bool, the filled pixels where the model's value left `depth_bounds` and the
        harmonic fill of the measured depth was used instead.
    model: False for the classical fill (no model; prediction_mm is then the fill itself).
    """

    depth_mm: np.ndarray
    filled: np.ndarray
    prediction_mm: np.ndarray
    inlier_fraction: float | None
    fallback: np.ndarray
    model: bool = True


def check_measured(depth_mm: np.ndarray, name: str | Path = "depth") -> np.ndarray:
    """The measured mask of a depth map; DataError naming it if too little was measured to fit."""
    if depth_mm.ndim != 2:
        raise DataError(name, f"expected an (H, W) depth map, got shape {depth_mm.shape}")
    measured = np.isfinite(depth_mm) & (np.nan_to_num(depth_mm) > 0)
    needed = max(MIN_MEASURED_PIXELS, int(MIN_MEASURED_FRACTION * depth_mm.size))
    if measured.sum() < needed:
        raise DataError(
            name,
            f"only {int(measured.sum())} measured pixel(s) ({measured.mean():.1%}); completion needs "
            f"at least {needed} to fill from",
        )
    return measured


def capture_label_scheme(depth_mm: np.ndarray, measured: np.ndarray) -> LabelScheme:
    """Inverse-depth labels over the capture's own range: the space a relative (disparity-like)
    base model is affine in."""
    lo, hi = float(depth_mm[measured].min()), float(depth_mm[measured].max())
    return LabelScheme("inverse", lo, max(hi, lo * 1.01))


def fit_prediction_mm(raw: np.ndarray, depth_mm: np.ndarray, labels: LabelScheme | None, measured=None):
    """The model's output in mm after one robust affine fit on the measured pixels.

    The fit ``s * raw + t ≈ labels.encode(depth)`` is made in the model's label space (where a
    right shape with a wrong scale and offset is exactly recoverable); `labels` None means a
    relative base model (inverse depth over the capture's range). Returns (prediction in mm,
    inlier fraction).
    """
    measured = np.isfinite(depth_mm) if measured is None else measured
    labels = labels or capture_label_scheme(depth_mm, measured)
    stride = max(1, int(measured.sum()) // FIT_MAX_SAMPLES)
    target = labels.encode(depth_mm[measured][::stride].astype(np.float64))
    scale, shift, inliers = robust_fit_affine(raw[measured][::stride], target)
    pred = labels.decode(scale * raw.astype(np.float64) + shift)
    return pred.astype(np.float32), float(inliers.mean())


def anchor_prediction(prediction_mm: np.ndarray, depth_mm: np.ndarray, measured=None,
                      max_pixels: int | None = RESIDUAL_MAX_PIXELS) -> np.ndarray:
    """Fill the holes of `depth_mm` with `prediction_mm` plus the harmonic interpolation of the
    residual ``depth - prediction`` from the measured pixels (a gradient-domain fill)."""
    measured = np.isfinite(depth_mm) if measured is None else measured
    residual = np.where(measured, depth_mm - prediction_mm, np.nan)
    correction = smooth_fill(residual, measured, max_pixels)
    return np.where(measured, depth_mm, prediction_mm + correction).astype(np.float32)


def depth_bounds(depth_mm: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) depth in mm a completed pixel may take (see DEPTH_BOUND_FACTOR)."""
    values = depth_mm[measured]
    return float(values.min()) / DEPTH_BOUND_FACTOR, float(values.max()) * DEPTH_BOUND_FACTOR


def bound_completion(completed: np.ndarray, prediction_mm: np.ndarray, depth_mm: np.ndarray,
                     measured: np.ndarray, max_pixels: int | None = RESIDUAL_MAX_PIXELS):
    """`completed` with every hole pixel whose prediction or anchored value leaves `depth_bounds`
    (or is not finite) replaced by the harmonic fill of the measured depth; returns (completed,
    fallback mask). Measured pixels are untouched."""
    lo, hi = depth_bounds(depth_mm, measured)

    def outside(x):
        with np.errstate(invalid="ignore"):
            return ~np.isfinite(x) | (x < lo) | (x > hi)

    fallback = ~measured & (outside(completed) | outside(prediction_mm))
    if fallback.any():
        classical = smooth_fill(depth_mm, measured, max_pixels)
        fallback &= np.isfinite(classical)  # a hole no measured pixel reaches stays as the model left it
        completed = np.where(fallback, classical, completed).astype(np.float32)
    return completed, fallback


def far_from_measured(measured: np.ndarray) -> np.ndarray:
    """(H, W) bool: holes farther than FAR_FRACTION_OF_DIAGONAL of the diagonal from a measurement."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~measured)
    return distance > FAR_FRACTION_OF_DIAGONAL * float(np.hypot(*measured.shape))


def complete_raw(raw: np.ndarray, depth_mm: np.ndarray, labels: LabelScheme | None,
                 name: str | Path = "depth", measured: np.ndarray | None = None) -> Completion:
    """Completion from a model's raw output at the capture's resolution (see `complete_depth_mm`).
    `measured`: the mask `check_measured` already returned, if the caller checked."""
    measured = check_measured(depth_mm, name) if measured is None else measured
    if raw.shape != depth_mm.shape:
        raise DataError(name, f"prediction is {raw.shape} but the depth map is {depth_mm.shape}")
    prediction, inliers = fit_prediction_mm(raw, depth_mm, labels, measured)
    completed = anchor_prediction(prediction, depth_mm, measured)
    completed, fallback = bound_completion(completed, prediction, depth_mm, measured)
    return Completion(completed, ~measured & np.isfinite(completed), prediction, inliers, fallback)


def border_safe_raw(predict_raw, rgb: np.ndarray, image_size_hw: tuple[int, int],
                    *maps: np.ndarray) -> np.ndarray:
    """`predict_raw(rgb, *maps)` (the model's raw output at the image's (H, W)) with the image first
    mirrored outward by one patch of the model's input on every side, and the output cropped back.
    `maps`: (H, W) arrays the model reads too (a completion model's measured depth), mirrored alike.

    Why: a model's outermost output pixels come from convolutions padded with zeros, and a camera
    often measures nothing there (no demo capture has a measured pixel in its outer 46 columns,
    the reference Zivid capture none in its first 88), so fine-tuning never corrects them. A fine-
    tuned demo model's completion of an unmeasured border band swung by up to 1,300 mm over 20
    columns; mirrored, it is smooth, and hidden border strips are filled about as well as interior
    ones (benchmarks/RESULTS.md). The model's input size is unchanged (exported graphs take the same
    input), so the image content shrinks by about 2 patches in each direction; nothing is slower.
    """
    h, w = rgb.shape[:2]
    pad_y = math.ceil(BORDER_PATCH_PX * h / image_size_hw[0])
    pad_x = math.ceil(BORDER_PATCH_PX * w / image_size_hw[1])
    if pad_y >= h or pad_x >= w:  # an image smaller than a patch of the input: nothing to mirror
        return predict_raw(rgb, *maps)
    mirrored = np.pad(rgb, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="reflect")
    mirrored_maps = [np.pad(m, ((pad_y, pad_y), (pad_x, pad_x)), mode="reflect") for m in maps]
    return np.ascontiguousarray(predict_raw(mirrored, *mirrored_maps)[pad_y:pad_y + h, pad_x:pad_x + w])


def complete_capture(bundle: ModelBundle | None, rgb: np.ndarray, depth_mm: np.ndarray,
                     name: str | Path = "depth") -> Completion:
    """Predict depth for one capture and anchor it to the capture's measured pixels (a capture
    that cannot be completed is refused before the model runs); `bundle` None: no model, the
    classical fill (`classical_completion`)."""
    if rgb.shape[:2] != depth_mm.shape:
        raise DataError(name, f"depth is {depth_mm.shape} (HxW) but its image is {rgb.shape[:2]}")
    measured = check_measured(depth_mm, name)
    if bundle is None:
        return classical_completion(rgb, depth_mm, measured)
    return task_of(bundle.record).complete(bundle, rgb, depth_mm, name, measured)


def classical_completion(rgb: np.ndarray, depth_mm: np.ndarray, measured: np.ndarray) -> Completion:
    """Completion without a model: numeric.guided_fill.default_fill, the fill chosen on validation
    (it reads the image and the measured depth). Every filled value is a weighted mean of measured
    depths, so it stays within the capture's measured range and nothing falls back."""
    from depth_lora.numeric.guided_fill import default_fill

    filled = default_fill(np.where(measured, depth_mm, np.nan), rgb)
    completed = np.where(measured, depth_mm, filled).astype(np.float32)
    return Completion(completed, ~measured & np.isfinite(completed), filled, None, np.zeros_like(measured),
                      model=False)


def complete_with_completer(predict_completion, rgb: np.ndarray, depth_mm: np.ndarray,
                            image_size_hw: tuple[int, int], measured: np.ndarray,
                            anchor: bool = ANCHOR_COMPLETER) -> Completion:
    """Completion by a completion model (`predict_completion(rgb, depth_mm)`: its depth in mm at the
    image's size, e.g. ModelBundle.predict_completion): its output in the holes, anchored to each
    hole's border like the monocular fill (`anchor`), bounded like it, the measured pixels exact."""
    prediction = border_safe_raw(predict_completion, rgb, image_size_hw, depth_mm)
    return completion_from_prediction(prediction, depth_mm, measured, anchor)


def completion_from_prediction(prediction_mm: np.ndarray, depth_mm: np.ndarray, measured: np.ndarray,
                               anchor: bool = ANCHOR_COMPLETER) -> Completion:
    """A completion model's depth (mm, the capture's size) as a Completion: anchored to each hole's
    border (`anchor`) or as it is, bounded (`bound_completion`), the measured pixels exact."""
    if anchor:
        completed = anchor_prediction(prediction_mm, depth_mm, measured)
    else:
        completed = np.where(measured, depth_mm, prediction_mm).astype(np.float32)
    completed, fallback = bound_completion(completed, prediction_mm, depth_mm, measured)
    return Completion(completed, ~measured & np.isfinite(completed), prediction_mm, None, fallback)


def complete_depth_mm(bundle: ModelBundle, rgb: np.ndarray, depth_mm: np.ndarray):
    """Fill the holes (NaN) of one capture's depth from its RGB image and its measured pixels.

    Args:
        bundle: a fine-tuned output folder (`predict.load_bundle`) or a base model
            (`zero_shot_bundle`); None: no model, the image-guided classical fill
            (`complete --classical`).
        rgb: (H, W, 3) uint8. depth_mm: (H, W) float Z in mm, NaN where the camera measured nothing.

    Returns:
        (completed, filled_mask): (H, W) float32 mm, every measured pixel unchanged; (H, W) bool,
        True on the pixels that were holes and got a value.
    """
    completion = complete_capture(bundle, rgb, depth_mm)
    return completion.depth_mm, completion.filled


def base_labels(model) -> LabelScheme | None:
    """How a base model's raw output is fitted to a capture: None (inverse depth over the capture's
    range) for a relative head; metres for a metric head."""
    from depth_lora.model.heads import head_type

    return LabelScheme("metric", 1.0, 2.0) if head_type(model) == "metric" else None


def zero_shot_bundle(
    model_name: str, image_size_hw: tuple[int, int], device=None, precision: str = "auto"
) -> ModelBundle:
    """A base model (hub id, folder, `demo-pretrained`, ...) for completion without an adapter:
    its output is fitted to each capture (see `base_labels`). A Prompt Depth Anything checkpoint
    (`prompt-small`, or a folder holding one) completes as published: its output, given the
    capture's measured depth as the prompt, is depth in mm."""

    from depth_lora.data.completion import PROMPT_SCALE
    from depth_lora.model.checkpoints import build_model
    from depth_lora.model.precision import resolve_device, resolve_precision
    from depth_lora.model.prompt import PROMPT_MODEL_ALIASES, is_prompt_model

    model, info = build_model(PROMPT_MODEL_ALIASES.get(model_name, model_name), allow_prompt=True)
    device = resolve_device(device)
    to_channels_last(model.to(device)).eval()
    record = RunRecord(model_name, image_size_hw=image_size_hw, zero_shot=True,
                       model_info={"source": info.get("source")})
    if is_prompt_model(model):
        completion = {"output": "direct", "prompt_scale": PROMPT_SCALE}
        record = record.derived(task="complete", completion=completion)
        return ModelBundle(model, None, tuple(image_size_hw), record, Path(model_name),
                           resolve_precision(precision, device.type))
    return ModelBundle(model, base_labels(model), tuple(image_size_hw), record, Path(model_name),
                       resolve_precision(precision, device.type))


def complete_files(
    bundle: ModelBundle | None,
    captures: list,
    out_dir: str | Path,
    formats=("npy", "png"),
    intrinsics: tuple[float, float, float, float] | None = None,
    depth_unit: str = "mm",
    say=print,
    fill_error=None,
) -> tuple[list[Path], list[str]]:
    """Complete each capture (data.CaptureFiles) and write its files; a bad capture is reported
    and skipped. Returns (written files, one-line problems). `bundle` None: the classical fill.

    npy: `<key>_completed_mm.npy` (Z, float32 mm), `<key>_filled_mask.png` (255 = filled) and,
    with intrinsics (from the capture's XYZ map, else `intrinsics`), `<key>_completed_xyz.npy`
    ((H, W, 3) X, Y, Z in mm: the camera's own points where it measured); png: the figure
    `<key>_completion.png`; ply: `<key>_completed.ply` with a `filled` vertex property.
    `fill_error` (numeric.fill_error.FillErrorModel): also `<key>_completed_sigma_mm.npy`, each filled
    pixel's expected error (NaN on measured pixels), and a sigma panel in the figure.
    """
    from PIL import Image

    from depth_lora.data.captures import load_capture, load_xyz_mm
    from depth_lora.numeric.geometry import depth_to_points, intrinsics_from_xyz, write_ply
    from depth_lora.viz import plot_completion, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    for files in captures:
        try:
            capture = load_capture(files, depth_unit)
            result = complete_capture(bundle, capture.rgb, capture.depth_mm, files.depth)
        except DataError as exc:
            problems.append(str(exc))
            continue
        stem, filled = out_dir / files.key, result.filled
        sigma = None
        if fill_error is not None:
            holes = np.where(capture.valid_mask, capture.depth_mm, np.nan)
            sigma = fill_error.sigma_map(holes, result.depth_mm)
        xyz, own = load_xyz_mm(files.depth, depth_unit), intrinsics
        if xyz is not None:
            own = intrinsics_from_xyz(xyz, files.depth)
        points = None
        if own is not None:
            points = depth_to_points(result.depth_mm, own)
            if xyz is not None:  # the camera's own X, Y, Z wherever it measured
                points = np.where(capture.valid_mask[..., None], xyz, points).astype(np.float32)
        if "npy" in formats:
            written += [_save(f"{stem}_completed_mm.npy", result.depth_mm)]
            if sigma is not None:
                written += [_save(f"{stem}_completed_sigma_mm.npy", sigma)]
            Image.fromarray(filled.astype(np.uint8) * 255).save(f"{stem}_filled_mask.png")
            written.append(Path(f"{stem}_filled_mask.png"))
            if points is not None:
                written += [_save(f"{stem}_completed_xyz.npy", points)]
        if "png" in formats:
            figure = plot_completion(capture.rgb, capture.depth_mm, result.depth_mm, filled, files.key,
                                     warning=bundle.record.warning if bundle else None, sigma_mm=sigma)
            written.append(save_figure(figure, f"{stem}_completion.png"))
        if "ply" in formats and points is not None:
            write_ply(f"{stem}_completed.ply", points, capture.rgb, flags={"filled": filled},
                      comment="depth-lora completion, units mm; filled = 1 where the camera had a hole")
            written.append(Path(f"{stem}_completed.ply"))
        if points is None and ("ply" in formats or "npy" in formats):
            problems.append(f"{files.depth}: Z only and no --intrinsics: no completed_xyz.npy or .ply")
        say(describe_completion(files.key, capture.valid_mask, result))
    return written, problems


def describe_completion(key: str, measured: np.ndarray, result: Completion) -> str:
    """One line: how much was missing, filled, how the fit went, how much was far from a measurement."""
    holes = int((~measured).sum())
    line = f"{key}: {holes / measured.size:.1%} holes, {int(result.filled.sum()):,} of {holes:,} filled"
    if result.inlier_fraction is not None:
        line += f"; global fit kept {result.inlier_fraction:.0%} of the measured pixels"
    far = int((far_from_measured(measured) & result.filled).sum()) if result.filled.any() else 0
    fallback = int(result.fallback.sum())
    if fallback:
        line += (f"; {fallback:,} filled pixels ({fallback / max(holes, 1):.1%} of the holes) took the "
                 "harmonic fill: the model's depth there left the range the capture supports")
    if far:
        line += (f"; {far:,} filled pixels lie more than {FAR_FRACTION_OF_DIAGONAL:.0%} of the diagonal "
                 "from any measurement" + (" (model shape only)" if result.model else ""))
    return line


def _save(path: str, array: np.ndarray) -> Path:
    np.save(path, array)
    return Path(path)
