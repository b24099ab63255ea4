"""Held-out evaluation in mm: fine-tuned vs zero-shot (aligned) vs constant, at full resolution."""

from __future__ import annotations

import csv
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from depth_lora.align import align_disparity_to_depth_mm, align_in_label_space
from depth_lora.data import Capture, find_captures, load_capture, load_split
from depth_lora.errors import DataError
from depth_lora.losses import RELATIVE_LOSSES
from depth_lora.metrics import PooledDepthMetrics, depth_metrics, mean_over_captures
from depth_lora.predict import ModelBundle, load_base_model, load_bundle, predict_depth_mm, predict_raw

METHODS = ("fine_tuned", "zero_shot_aligned", "constant")
HEADLINE = ("rmse_mm", "mae_mm", "abs_rel", "delta1")
NOTE = (
    "zero_shot_aligned gets an oracle per-capture least-squares scale and shift in inverse-depth "
    "space against the capture's own ground truth (MiDaS protocol); fine_tuned gets no alignment; "
    "constant predicts the training split's mean depth everywhere."
)
RELATIVE_NOTE = (
    "This run was trained with a scale-and-shift-invariant loss (relative depth): fine_tuned also "
    "gets the oracle per-capture alignment, in label space."
)


@dataclass
class EvaluationReport:
    """Per-method metrics averaged over captures (`mean`) and pooled over pixels (`pooled`)."""

    split: str
    mean: dict[str, dict]
    pooled: dict[str, dict]
    captures: list[dict] = field(default_factory=list)  # one row per capture and method
    relative: bool = False  # the fine-tuned model is relative (ssi): its row is oracle-aligned too

    def to_json(self) -> dict:
        return {
            **{m: self.mean[m] for m in METHODS},
            "pooled": self.pooled,
            "captures": self.captures,
            "split": self.split,
            "averaging": "top-level metrics: mean over captures; 'pooled': over all valid pixels",
            "note": NOTE + (f" {RELATIVE_NOTE}" if self.relative else ""),
        }


def is_relative(bundle: ModelBundle) -> bool:
    """True for a run trained with a scale-and-shift-invariant loss (`--loss ssi`)."""
    return bundle.meta.get("config", {}).get("loss") in RELATIVE_LOSSES


def predict_zero_shot_disparity(bundle: ModelBundle, rgb: np.ndarray, base=None) -> np.ndarray:
    """The base model's raw (relative, disparity-like) output at the image's resolution.

    With an adapter, PEFT's disable_adapter() gives the base model from the same weights; otherwise
    `base` (see `zero_shot_base`) is used.
    """
    with nullcontext() if base is not None else bundle.model.disable_adapter():
        return predict_raw(base or bundle.model, rgb, bundle.image_size_hw).cpu().numpy()


def zero_shot_base(bundle: ModelBundle):
    """None for an adapter whose biases were not trained (PEFT's disable_adapter() then gives the
    base model exactly); else the base model, loaded (disable_adapter() keeps trained biases)."""
    lora_bias = bundle.meta.get("config", {}).get("lora_bias", "none")
    if hasattr(bundle.model, "disable_adapter") and lora_bias == "none":
        return None
    return load_base_model(bundle.folder, bundle.meta).to(bundle.device).eval()


def predict_all_methods(bundle: ModelBundle, capture: Capture, base=None) -> dict[str, np.ndarray]:
    """Depth in mm at the capture's resolution from each method: fine-tuned, zero-shot with the
    oracle alignment to this capture's own depth, and the training split's mean depth."""
    constant_mm = bundle.meta.get("train_depth_mean_mm")
    if constant_mm is None:
        raise DataError(bundle.folder / "depth_lora.json", "has no train_depth_mean_mm")
    if base is None:
        base = zero_shot_base(bundle)
    labels = bundle.labels
    disparity = predict_zero_shot_disparity(bundle, capture.rgb, base)
    if is_relative(bundle):  # trained scale-and-shift invariant: its scale is arbitrary
        raw = predict_raw(bundle.model, capture.rgb, bundle.image_size_hw).cpu().numpy()
        fine_tuned = align_in_label_space(raw, capture.depth_mm, capture.valid_mask, labels)
    else:
        fine_tuned = predict_depth_mm(bundle, capture.rgb)
    return {
        "fine_tuned": fine_tuned,
        "zero_shot_aligned": align_disparity_to_depth_mm(
            disparity, capture.depth_mm, capture.valid_mask,
            min_depth_mm=labels.depth_min_mm / 2, max_depth_mm=labels.depth_max_mm * 2,
        ),
        "constant": np.full(capture.depth_mm.shape, constant_mm, np.float32),
    }


def select_captures(data_dir: str | Path, bundle: ModelBundle, split: str):
    """The captures to evaluate: a split recorded with the adapter, or all captures of a folder."""
    files = find_captures(data_dir)
    if split == "all":
        return files
    split_path = bundle.folder / bundle.meta.get("split_file", "split.json")
    keys = load_split(split_path)[split]
    by_key = {f.key: f for f in files}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise DataError(
            data_dir,
            f"{len(missing)} capture(s) of the recorded {split} split are missing here "
            f"(e.g. {missing[0]}): is this the training folder? Use --split all for another folder",
        )
    if not keys:
        raise DataError(split_path, f"the {split} split is empty")
    return [by_key[k] for k in keys]


def run_evaluation(
    data_dir: str | Path,
    adapter_dir: str | Path,
    split: str = "test",
    plots_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    tolerances_mm: tuple[float, ...] = (5.0, 10.0),
) -> EvaluationReport:
    """Evaluate an output folder on held-out captures against zero-shot and constant baselines.

    Predictions are compared with each capture's depth at its full resolution (predictions are
    upsampled bilinearly; the target is never shrunk). `tolerances_mm` sets the
    `within_<tol>mm` columns (share of valid pixels with |error| <= tol).
    """
    bundle = load_bundle(adapter_dir, device=device)
    files = select_captures(data_dir, bundle, split)
    base = zero_shot_base(bundle)
    per_method: dict[str, list] = {m: [] for m in METHODS}
    pooled = {m: PooledDepthMetrics(tolerances_mm) for m in METHODS}
    rows = []
    for f in tqdm(files, desc=f"evaluate {split}", unit="capture", disable=not progress):
        capture = load_capture(f, bundle.meta.get("depth_unit", "mm"))
        target, valid = capture.depth_mm, capture.valid_mask
        preds = predict_all_methods(bundle, capture, base)
        for method, pred in preds.items():
            m = depth_metrics(pred, target, valid, tolerances_mm)
            per_method[method].append(m)
            pooled[method].update(pred, target, valid)
            rows.append({"capture": f.key, "method": method, **(m or {"valid_pixels": 0})})
        if plots_dir is not None:  # drawn now: full-resolution maps are not kept for all captures
            from depth_lora.viz import plot_evaluation_capture, save_figure

            save_figure(plot_evaluation_capture(capture, preds), Path(plots_dir) / f"{f.key}.png")
    report = EvaluationReport(
        split=split,
        mean={m: mean_over_captures(per_method[m]) for m in METHODS},
        pooled={m: pooled[m].compute() for m in METHODS},
        captures=rows,
        relative=is_relative(bundle),
    )
    if plots_dir is not None:
        from depth_lora.viz import plot_metric_bars, save_figure

        title = f"Error on {split} captures ({len(files)}, mean over captures)"
        save_figure(plot_metric_bars(report.mean, title=title), Path(plots_dir) / "metrics.png")
    return report


def format_report_table(report: EvaluationReport, keys=None) -> str:
    """Rows = methods, columns = headline metrics and the within-tolerance shares (mean over captures)."""
    if keys is None:
        keys = HEADLINE + tuple(k for k in report.mean["fine_tuned"] if k.startswith("within_"))
    header = f"{'method':<20}" + "".join(f"{k:>13}" for k in keys)
    lines = [header, "-" * len(header)]
    for method in METHODS:
        m = report.mean[method]
        lines.append(f"{method:<20}" + "".join(f"{m.get(k, float('nan')):>13.4g}" for k in keys))
    n = report.mean["fine_tuned"].get("captures", 0)
    which = "all captures" if report.split == "all" else f"the {report.split} split"
    note = NOTE + (f" {RELATIVE_NOTE}" if report.relative else "")
    lines.append(f"({n} captures: {which}; mean over captures, at full resolution. {note})")
    return "\n".join(lines)


def write_report(report: EvaluationReport, json_path=None, csv_path=None) -> list[Path]:
    """Write the JSON report and/or the per-capture CSV; returns the written paths."""
    written = []
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        written.append(path)
    if csv_path:
        path = Path(csv_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(k for row in report.captures for k in row))
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(report.captures)
        written.append(path)
    return written
