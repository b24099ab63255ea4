"""Held-out evaluation in mm at full resolution: fine-tuned vs the baselines a user has (and the oracles)."""

from __future__ import annotations

import csv
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from depth_lora.data.captures import Capture, find_captures, load_capture
from depth_lora.data.dataset import METRIC_HEAD_UNIT_MM
from depth_lora.data.split import group_captures, load_split
from depth_lora.errors import DataError
from depth_lora.evaluation.calibration import Calibration
from depth_lora.inference.predict import ModelBundle, load_base_model, load_bundle, predict_raw
from depth_lora.model.heads import head_type
from depth_lora.numeric.align import align_disparity_to_depth_mm, align_in_label_space, align_to
from depth_lora.numeric.metrics import (
    PooledDepthMetrics,
    bootstrap_ci95,
    depth_metrics,
    mean_with_ci95,
)
from depth_lora.runs import folder as outputs
from depth_lora.runs.folder import read_split
from depth_lora.text import live_progress, plural

METHODS = ("fine_tuned", "fine_tuned_aligned", "zero_shot", "zero_shot_calibrated", "zero_shot_aligned",
           "constant")
HEADLINE = ("rmse_mm", "mae_mm", "abs_rel", "delta1")
# What each row is, in the words the printed table and report.json use.
DESCRIPTIONS = {
    "fine_tuned": "the fine-tuned model, output turned into mm with its stored constants; no "
                  "per-capture help",
    "fine_tuned_aligned": "the fine-tuned output given the oracle per-capture scale and shift (in its "
                          "label space: inverse depth for the recommended recipe) against the capture's "
                          "own ground truth: how good its shape is",
    "zero_shot": "the metric base model's own prediction in mm, nothing fitted: what the published "
                 "metric checkpoint gives out of the box",
    "zero_shot_calibrated": "the base model without fine-tuning, with ONE scale and shift fitted on the "
                            "training split and applied unchanged: what you can do without fine-tuning",
    "zero_shot_aligned": "the base model given the oracle per-capture scale and shift (MiDaS protocol): "
                         "a bound on its shape, not a baseline anyone can run",
    "constant": "the training split's mean depth everywhere",
}
RELATIVE_NOTE = (
    "This run was trained with a scale-and-shift-invariant loss (relative depth): fine_tuned also "
    "gets the oracle per-capture alignment, in label space."
)
ANECDOTE_CAPTURES = 10  # below this many evaluated captures the numbers are anecdotes


@dataclass
class EvaluationReport:
    """Per-method metrics averaged over captures with 95 % bootstrap intervals (`mean`), pooled
    over pixels (`pooled`), per capture (`captures`), and the paired fine-tuned vs calibrated
    zero-shot difference (`comparison`)."""

    split: str
    mean: dict[str, dict]
    pooled: dict[str, dict]
    captures: list[dict] = field(default_factory=list)  # one row per capture and method
    relative: bool = False  # the fine-tuned model is relative (ssi): its row is oracle-aligned too
    comparison: dict = field(default_factory=dict)
    leaky_split: bool = False  # the split could not keep sessions apart (too few of them)
    warning: str | None = None  # e.g. the run started from the offline demo model
    trained_on: int = 0  # evaluated captures that were in the training split (--split all)
    sessions: int = 0  # groups (sessions) the evaluated captures come from; 0: not known
    holes: dict | None = None  # `evaluate --holes`: hole_eval.HoleReport.to_dict()
    precision: str = "fp32"  # the forward's autocast (see predict.load_bundle); outputs are fp32

    @property
    def methods(self) -> list[str]:
        return [m for m in METHODS if m in self.mean]

    @property
    def count(self) -> int:
        return int(self.mean["fine_tuned"].get("captures", 0))

    def notes(self) -> list[str]:
        notes = [f"WARNING: {self.warning}."] if self.warning else []
        notes += [f"{m}: {DESCRIPTIONS[m]}." for m in self.methods]
        if self.relative:
            notes.append(RELATIVE_NOTE)
        if self.count < ANECDOTE_CAPTURES:
            notes.append(f"Only {plural(self.count, 'capture')}: these numbers are anecdotal; "
                         f"evaluate on {ANECDOTE_CAPTURES} or more held-out captures before "
                         "trusting them.")
        if 0 < self.sessions < self.count:
            notes.append(f"These {plural(self.count, 'capture')} come from "
                         f"{plural(self.sessions, 'session')}: captures of one session are alike, so "
                         "intervals over captures are too narrow.")
        if self.trained_on:
            notes.append(f"{plural(self.trained_on, 'evaluated capture')} of the training split (trained on, "
                         "and used to calibrate zero_shot_calibrated): not held out.")
        if self.leaky_split:
            notes.append("The split could not keep capture sessions apart (too few sessions): held-out "
                         "captures share sessions with training captures, so these numbers are optimistic.")
        return notes

    def to_json(self) -> dict:
        return {
            **{m: self.mean[m] for m in self.methods},
            "comparison": self.comparison,
            "pooled": self.pooled,
            "captures": self.captures,
            "split": self.split,
            "precision": self.precision,
            "averaging": "top-level metrics: mean over captures, with 95 % bootstrap intervals over "
                         "captures (<metric>_ci95); 'pooled': over all valid pixels",
            "methods": {m: DESCRIPTIONS[m] for m in self.methods},
            "note": " ".join(self.notes()),
            **({"holes": self.holes} if self.holes is not None else {}),
        }


def is_relative(bundle: ModelBundle) -> bool:
    """True for a run trained with a scale-and-shift-invariant loss (`--loss ssi`)."""
    return bundle.record.scale_invariant


def predict_zero_shot_disparity(bundle: ModelBundle, rgb: np.ndarray, base=None) -> np.ndarray:
    """The base model's raw (relative, disparity-like) output at the image's resolution.

    With an adapter, PEFT's disable_adapter() gives the base model from the same weights; otherwise
    `base` (see `zero_shot_base`) is used.
    """
    with nullcontext() if base is not None else bundle.model.disable_adapter():
        return predict_raw(base or bundle.model, rgb, bundle.image_size_hw, bundle.precision).cpu().numpy()


def zero_shot_base(bundle: ModelBundle):
    """None for an adapter whose biases were not trained and whose head is the checkpoint's own
    (PEFT's disable_adapter() then gives the base model exactly); else the base model as published,
    loaded (disable_adapter() keeps trained biases and a converted or re-ranged metric head)."""
    untouched_base = bundle.record.lora_bias == "none" and bundle.record.head_type != "metric"
    if hasattr(bundle.model, "disable_adapter") and untouched_base:
        return None
    return load_base_model(bundle.folder, bundle.record, as_published=True).to(bundle.device).eval()


def predict_all_methods(bundle: ModelBundle, capture: Capture, base=None) -> dict[str, np.ndarray]:
    """Depth in mm at the capture's resolution from each method of METHODS (see DESCRIPTIONS);
    `zero_shot_calibrated` only when the output folder holds a calibration."""
    constant_mm = bundle.record.train_depth_mean_mm
    if constant_mm is None:
        raise DataError(outputs.record_path(bundle.folder), "has no train_depth_mean_mm")
    if base is None:
        base = zero_shot_base(bundle)
    labels = bundle.labels
    target, valid = capture.depth_mm, capture.valid_mask
    depth_range = {"min_depth_mm": labels.depth_min_mm / 2, "max_depth_mm": labels.depth_max_mm * 2}
    disparity = predict_zero_shot_disparity(bundle, capture.rgb, base)
    raw = predict_raw(bundle.model, capture.rgb, bundle.image_size_hw, bundle.precision).cpu().numpy()
    # The oracle fit is affine in the model's own output space (its labels), where a right shape with
    # a wrong scale and offset is exactly recoverable: min / z for inverse labels, z for min-max.
    aligned = align_in_label_space(raw, target, valid, labels).astype(np.float32)
    preds = {
        # A relative (ssi) model's scale is arbitrary: it is only ever scored aligned.
        "fine_tuned": aligned if is_relative(bundle) else labels.decode(raw).astype(np.float32),
        "fine_tuned_aligned": aligned,
    }
    calibration = bundle.record.zero_shot_calibration
    if calibration is not None:
        source = outputs.record_path(bundle.folder)
        preds["zero_shot_calibrated"] = Calibration.from_dict(calibration, source).apply(disparity)
    if base is not None and head_type(base) == "metric":  # metres: usable as is, aligned in depth
        preds["zero_shot"] = (disparity * METRIC_HEAD_UNIT_MM).astype(np.float32)
        preds["zero_shot_aligned"] = align_to(preds["zero_shot"], target, valid).astype(np.float32)
    else:
        preds["zero_shot_aligned"] = align_disparity_to_depth_mm(disparity, target, valid, **depth_range)
    preds["constant"] = np.full(target.shape, constant_mm, np.float32)
    return preds


def training_keys(bundle: ModelBundle) -> list[str]:
    """The training split recorded with the output folder ([] if it has none)."""
    split = read_split(bundle.folder, bundle.record)
    return split["train"] if split else []


def select_captures(data_dir: str | Path, bundle: ModelBundle, split: str):
    """The captures to evaluate: a split recorded with the adapter, or all captures of a folder."""
    files = find_captures(data_dir)
    if split == "all":
        return files
    split_path = outputs.split_path(bundle.folder, bundle.record)
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
    precision: str = "auto",
    bundle: ModelBundle | None = None,
) -> EvaluationReport:
    """Evaluate an output folder on held-out captures against zero-shot and constant baselines.

    Predictions are compared with each capture's depth at its full resolution (predictions are
    upsampled bilinearly; the target is never shrunk). `tolerances_mm` sets the
    `within_<tol>mm` columns (share of valid pixels with |error| <= tol). `precision`: the
    forward's autocast (see `load_bundle`); predictions stay fp32. `bundle`: the run already loaded
    from `adapter_dir` (to score several splits with one load).
    """
    bundle = bundle or load_bundle(adapter_dir, device=device, precision=precision)
    files = select_captures(data_dir, bundle, split)
    base = zero_shot_base(bundle)
    per_method: dict[str, list] = {}
    pooled: dict[str, PooledDepthMetrics] = {}
    rows = []
    bar = tqdm(files, desc=f"evaluate {split}", unit="capture", disable=not (progress and live_progress()))
    for f in bar:
        capture = load_capture(f, bundle.record.depth_unit)
        target, valid = capture.depth_mm, capture.valid_mask
        preds = predict_all_methods(bundle, capture, base)
        for method, pred in preds.items():
            m = depth_metrics(pred, target, valid, tolerances_mm)
            per_method.setdefault(method, []).append(m)
            pooled.setdefault(method, PooledDepthMetrics(tolerances_mm)).update(pred, target, valid)
            rows.append({"capture": f.key, "method": method, **(m or {"valid_pixels": 0})})
        if plots_dir is not None:  # drawn now: full-resolution maps are not kept for all captures
            from depth_lora.viz import plot_evaluation_capture, save_figure

            figure = plot_evaluation_capture(capture, preds, warning=bundle.record.warning)
            save_figure(figure, Path(plots_dir) / f"{f.key}.png")
    report = EvaluationReport(
        split=split,
        mean={m: mean_with_ci95(v, HEADLINE) for m, v in per_method.items()},
        pooled={m: p.compute() for m, p in pooled.items()},
        captures=rows,
        relative=is_relative(bundle),
        comparison=paired_comparison(per_method),
        leaky_split=split != "all" and bundle.record.split_leaky,
        warning=bundle.record.warning,
        trained_on=len(set(f.key for f in files) & set(training_keys(bundle))) if split == "all" else 0,
        sessions=len(set(group_captures([f.key for f in files], bundle.record.group_by).values())),
        precision=bundle.precision,
    )
    if plots_dir is not None:
        from depth_lora.viz import plot_metric_bars, save_figure

        title = f"Error on the {split} split ({plural(len(files), 'capture')}, mean over captures)"
        figure = plot_metric_bars(report.mean, title=title, warning=report.warning)
        save_figure(figure, Path(plots_dir) / "metrics.png")
    return report


def paired_comparison(per_method: dict[str, list]) -> dict:
    """Fine-tuned minus calibrated zero-shot RMSE, capture by capture: mean and 95 % bootstrap
    interval (negative = fine-tuning helped). Empty without a calibrated zero-shot row."""
    if "zero_shot_calibrated" not in per_method:
        return {}
    pairs = [(a["rmse_mm"], b["rmse_mm"]) for a, b in zip(per_method["fine_tuned"],
                                                           per_method["zero_shot_calibrated"], strict=True)
             if a is not None and b is not None]
    diffs = [a - b for a, b in pairs]
    key = "fine_tuned_minus_zero_shot_calibrated_rmse_mm"
    return {key: float(np.mean(diffs)) if diffs else float("nan"), f"{key}_ci95": bootstrap_ci95(diffs),
            "captures": len(diffs)}


def format_report_table(report: EvaluationReport) -> str:
    """The printed table: one row per method, RMSE with its 95 % interval, MAE, AbsRel, the share
    of pixels within 25 % of the truth and within each mm tolerance; then what each row is."""
    first = report.mean["fine_tuned"]
    tolerances = [k for k in first if k.startswith("within_") and not k.endswith("_ci95")]
    header = (f"{'method':<22}{'RMSE mm [95% CI]':>26}{'MAE mm':>9}{'AbsRel':>8}{'d<1.25':>8}"
              + "".join(f"{'<=' + k[len('within_'):].replace('mm', ' mm'):>9}" for k in tolerances))
    lines = [header, "-" * len(header)]
    for method in report.methods:
        m = report.mean[method]
        lo, hi = m.get("rmse_mm_ci95", (float("nan"),) * 2)
        rmse = f"{m.get('rmse_mm', float('nan')):.1f} [{lo:.1f}, {hi:.1f}]"
        lines.append(f"{method:<22}{rmse:>26}{m.get('mae_mm', float('nan')):>9.1f}"
                     f"{m.get('abs_rel', float('nan')):>8.3f}{100 * m.get('delta1', float('nan')):>7.1f}%"
                     + "".join(f"{100 * m.get(k, float('nan')):>8.1f}%" for k in tolerances))
    which = "all captures of the folder" if report.split == "all" else f"the {report.split} split"
    lines.append(f"{plural(report.count, 'capture')} of {which}, compared at full resolution "
                 f"({report.precision} forward); mean over captures, 95 % bootstrap intervals over captures.")
    lines += [f"  {note}" for note in report.notes()]
    return "\n".join(lines)


def interpret_report(report: EvaluationReport, compare: bool = True) -> str:
    """A plain-language reading of one split's report: how fine_tuned compares with what you could
    do without it, what the oracle rows say, and how much the captures can carry. One split gives
    no verdict (evaluation.verdict reads validation and test together); `compare=False` leaves out
    the comparison line, for a caller that shows the verdict's instead."""
    rmse = {m: report.mean[m].get("rmse_mm", float("nan")) for m in report.methods}
    n = plural(report.count, "capture")
    lines = []
    key = "fine_tuned_minus_zero_shot_calibrated_rmse_mm"
    if report.relative:
        lines.append("This run was trained scale-and-shift invariant, so its fine_tuned row is "
                     f"oracle-aligned ({rmse['fine_tuned']:.1f} mm): compare it with zero_shot_aligned "
                     f"({rmse['zero_shot_aligned']:.1f} mm), not with the rows a user can run.")
    elif key in report.comparison and compare:
        diff, (lo, hi) = report.comparison[key], report.comparison[f"{key}_ci95"]
        verdict = ("fine_tuned is better here" if hi < 0 else "fine_tuned is worse here"
                   if lo > 0 else "the difference is within the noise of these captures")
        if report.count < ANECDOTE_CAPTURES:
            verdict = f"on these few captures only, {verdict} (anecdotal)"
        lines.append(
            f"Compare fine_tuned ({rmse['fine_tuned']:.1f} mm RMSE) with zero_shot_calibrated "
            f"({rmse['zero_shot_calibrated']:.1f} mm), what you could do without fine-tuning: {verdict} "
            f"(difference {diff:+.1f} mm, 95 % interval [{lo:+.1f}, {hi:+.1f}] over {n})."
        )
    elif key not in report.comparison:
        lines.append("This output folder has no zero-shot calibration (trained by an older depth-lora): "
                     "retrain to get the zero_shot_calibrated row fine-tuning must beat.")
    lines.append(
        f"fine_tuned_aligned ({rmse['fine_tuned_aligned']:.1f} mm) is the fine-tuned shape after an oracle "
        f"scale and shift: the gap to fine_tuned is error in scale and offset, the rest is shape. "
        f"zero_shot_aligned ({rmse['zero_shot_aligned']:.1f} mm) is the same oracle on the base model, "
        "a bound no one can reach without ground truth."
    )
    if rmse["fine_tuned"] >= rmse["constant"] and not report.relative:
        lines.append(f"The fine-tuned model does not beat predicting the mean depth "
                     f"({rmse['constant']:.1f} mm): it has not learned this camera's depth.")
    if report.count < ANECDOTE_CAPTURES:
        lines.append(f"These rest on {n} only: anecdotal.")
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
