"""A finished run scored on its held-out captures, as `depth-lora evaluate` scores it: the
test and validation splits' rows (a monocular run) or their hidden holes (a completion run), and
the verdict both splits give together (metrics.json)."""

from __future__ import annotations

import json
from pathlib import Path

from depth_lora.evaluation.report import EvaluationReport, run_evaluation, write_report
from depth_lora.evaluation.verdict import completion_verdict, held_out_verdict
from depth_lora.inference.predict import load_bundle
from depth_lora.training.config import TrainConfig


def evaluate_held_out(cfg: TrainConfig, output: Path, device, precision: str, data,
                      plots_dir=None) -> dict[str, EvaluationReport]:
    """What `depth-lora evaluate` prints for the test and the validation split: every row, at full
    resolution, on the run's `device`. With `plots_dir`, the test split's figures, report.json and
    captures.csv there."""
    reports = {}
    splits = [split for split in ("test", "val") if data.prepared[split]]
    bundle = load_bundle(output, device, precision) if splits else None  # one load for both
    for split in splits:
        reports[split] = run_evaluation(cfg.data, output, split=split, progress=False, bundle=bundle,
                                        plots_dir=plots_dir if split == "test" else None)
    if plots_dir is not None and "test" in reports:
        write_report(reports["test"], Path(plots_dir) / "report.json", Path(plots_dir) / "captures.csv")
    return reports


def evaluate_holes_held_out(cfg: TrainConfig, output: Path, device, precision: str, data,
                            plots_dir=None) -> dict:
    """A completion run's held-out scores: `depth-lora evaluate --holes` on the test and the
    validation split (hidden pixels of held-out captures), on the run's `device`. With
    `plots_dir`, the test split's hole figures and holes.json there."""
    from depth_lora.evaluation.holes import run_hole_evaluation
    from depth_lora.inference.options import HOLE_SCORING_MAX_PIXELS

    splits = [split for split in ("test", "val") if data.prepared[split]]
    bundle = load_bundle(output, device, precision) if splits else None
    size = HOLE_SCORING_MAX_PIXELS if cfg.holes_max_pixels is None else cfg.holes_max_pixels
    reports = {split: run_hole_evaluation(cfg.data, output, split, progress=False, bundle=bundle,
                                          plots_dir=plots_dir if split == "test" else None,
                                          max_pixels=size or None)
               for split in splits}
    if plots_dir is not None and "test" in reports:
        (Path(plots_dir) / "holes.json").write_text(json.dumps(reports["test"].to_dict(), indent=2) + "\n")
    return reports


def hole_metrics(reports: dict) -> dict:
    """A completion run's metrics.json entries: each held-out split's hole rows (over all kinds, and
    `by_kind`) and the verdict both splits give together."""
    metrics = {name: {**reports[split].to_dict(),
                      "resolution": f"hidden pixels only, scored at {reports[split].scored_at}"}
               for split, name in (("test", "test"), ("val", "val_full")) if split in reports}
    verdict, text = completion_verdict(reports.get("test"), reports.get("val"))
    return {**metrics, "verdict": {"verdict": verdict, "text": text}}


def held_out_metrics(reports: dict[str, EvaluationReport]) -> dict:
    """metrics.json's "test" and "val_full" entries (a split's rows at full resolution) and the
    verdict both splits give together."""
    metrics = {name: split_metrics(reports[split]) for split, name in (("test", "test"), ("val", "val_full"))
               if split in reports}
    verdict, text = held_out_verdict(reports.get("test"), reports.get("val"))
    return {**metrics, "verdict": {"verdict": verdict, "text": text}}


def split_metrics(report: EvaluationReport) -> dict:
    """One split's rows, comparison and notes, as metrics.json keeps them."""
    return {**{m: report.mean[m] for m in report.methods}, "comparison": report.comparison,
            "resolution": "full resolution (each capture's own)", "precision": report.precision,
            "notes": report.notes()}
