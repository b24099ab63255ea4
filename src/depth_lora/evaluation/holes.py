"""Score hole filling honestly: hide measured pixels of held-out captures, fill, score only those.

`depth-lora evaluate --holes`. For every capture and hole kind (`holes.HOLE_KINDS`) the hidden
pixels are removed from the camera's depth, each method fills the holes, and the fill is
compared with the camera's values on the hidden pixels only: visible pixels (returned unchanged
by every method) and the capture's own holes (no ground truth) are never scored.

Captures larger than HOLE_SCORING_MAX_PIXELS are scored at an integer fraction of their size (a
Zivid 2's 1200 x 1944 (H x W) at 600 x 972), resized as a model's input is (data.dataset.prepare_capture:
the depth averaged over the measured pixels under each pixel and kept where at least half were).
Every fill then costs a quarter (the classical fills at 1944 x 1200 with half the pixels missing
take seconds each, four kinds a capture); a fill's ranking is what is scored, and `complete` with
a model still fills at full resolution (`complete --classical` at most 0.6 Mpx, upsampled).
`max_pixels=None` scores each capture at its own size.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from depth_lora.data.captures import Capture, load_capture, load_depth_mm
from depth_lora.data.dataset import resize_depth
from depth_lora.errors import DataError
from depth_lora.evaluation.fill_error import (
    FILL_ERROR_FILE,
    at_most,
    calibrate_fill_error,
    calibration_subset,
    fill_coverage,
    fill_settings,
)
from depth_lora.evaluation.report import select_captures
from depth_lora.inference.complete import (
    complete_raw,
)
from depth_lora.inference.local_fit import local_fit_fill
from depth_lora.inference.options import HOLE_SCORING_MAX_PIXELS, check_max_pixels
from depth_lora.inference.predict import load_bundle
from depth_lora.numeric import fill as fill_solver
from depth_lora.numeric.fill import harmonic_fill, nearest_fill, telea_fill
from depth_lora.numeric.guided_fill import DEFAULT_FILL, GUIDED_FILLS
from depth_lora.numeric.hole_masks import HOLE_KINDS, hidden_masks
from depth_lora.numeric.metrics import depth_metrics, mean_with_ci95
from depth_lora.numeric.resize import fraction_size
from depth_lora.runs.task import task_of
from depth_lora.text import live_progress, plural

# Every row a hole table can have: a monocular run's (fine_tuned, fine_tuned_global) or a completion
# run's (completer, completer_unanchored, completer_start), then the rows both have.
FILL_METHODS = ("completer", "completer_unanchored", "completer_start", "fine_tuned", "fine_tuned_global",
                "zero_shot", "local_fit", "default", "colorization", "shadow_aware", "nearest", "harmonic",
                "telea")
FILL_DESCRIPTIONS = {
    "completer": "the learned completion model (it reads the measured depth), anchored to each hole's "
                 "border",
    "completer_unanchored": "the learned completion model's output as it is, measured pixels kept",
    "completer_start": "the completion model before fine-tuning (a model started from Depth Anything V2 "
                       "returns its harmonic prompt exactly), anchored the same way",
    "fine_tuned": "fine-tuned prediction, robust global fit then anchored to each hole's border "
                  "(gradient-domain fill of the residual)",
    "fine_tuned_global": "fine-tuned prediction with the robust global fit only (no local anchoring)",
    "zero_shot": "the base model's monocular prediction, fitted and anchored the same way",
    "local_fit": "the base model's monocular prediction with a local, distance-weighted scale and shift "
                 "(Prior Depth Anything's coarse alignment), no training",
    "default": f"what `complete --classical` runs, no model: {DEFAULT_FILL}",
    "colorization": "the measured depth diffused into each hole, each pair of neighbouring pixels "
                    "weighted by how alike they look in the image (Levin et al. 2004, the NYU Depth V2 "
                    "toolbox's fill)",
    "shadow_aware": "colorization, but a hole behind a depth edge reads only its far side (a projector's "
                    "shadow lies on the farther surface)",
    "nearest": "nearest measured pixel (scipy distance transform)",
    "harmonic": "Laplace (harmonic) interpolation of the measured depth",
    "telea": "OpenCV inpainting, Telea's fast-marching method (cv2.INPAINT_TELEA, radius 5)",
}
HOLE_TOLERANCES_MM = (1.0, 5.0, 10.0)
FILL_MEMO_BYTES = 256 * 2**20  # `remembered`'s memory: a test split scored at 150,000 pixels takes 115 MB
_FILL_MEMO: dict[bytes, dict[str, np.ndarray]] = {}  # insertion order: the oldest first
_FILL_MEMO_LOCK = threading.Lock()
HOLE_HEADLINE = ("rmse_mm", "mae_mm", "within_1mm", "within_5mm", "within_10mm", "coverage_90", "interval_mm")


@dataclass
class HoleReport:
    """Per kind and method: mean over captures with 95 % intervals; `captures`: per-capture rows."""

    by_kind: dict[str, dict[str, dict]]
    captures: list[dict] = field(default_factory=list)
    split: str = "test"
    training_kinds: list[str] | None = None  # a completion run's training hole kinds
    scored_hw: list[tuple[int, int]] = field(default_factory=list)  # the sizes the captures were scored at

    @property
    def scored_at(self) -> str:
        """The sizes the captures were scored at, as text ("600 x 972 (H x W)"); "" if none."""
        return f"{', '.join(f'{h} x {w}' for h, w in self.scored_hw)} (H x W)" if self.scored_hw else ""

    def to_dict(self) -> dict:
        """The `holes` object of the evaluation JSON: one object per method, its metrics over all
        kinds' (capture, kind) pairs, and `by_kind`; a completion run's adds `training_hole_kinds`."""
        out = {} if self.training_kinds is None else {"training_hole_kinds": list(self.training_kinds)}
        out["scored_at"] = [list(hw) for hw in self.scored_hw]
        for method in FILL_METHODS:
            rows = [r for r in self.captures if r["method"] == method]
            if not rows:
                continue
            out[method] = {**mean_with_ci95([r["metrics"] for r in rows], HOLE_HEADLINE),
                           "description": FILL_DESCRIPTIONS[method],
                           "by_kind": {k: v[method] for k, v in self.by_kind.items() if method in v}}
        return out


def fill_all_methods(depth_mm: np.ndarray, rgb: np.ndarray, raw_fine_tuned, raw_zero_shot, labels,
                     base_labels=None) -> dict[str, np.ndarray]:
    """A monocular run's fills (mm) for a depth map whose holes include the hidden pixels.
    labels: the fine-tuned model's; base_labels: the base model's (complete.base_labels)."""
    fine_tuned = complete_raw(raw_fine_tuned, depth_mm, labels)
    return {
        "fine_tuned": fine_tuned.depth_mm,
        "fine_tuned_global": np.where(np.isfinite(depth_mm), depth_mm, fine_tuned.prediction_mm),
        **base_model_fills(depth_mm, rgb, raw_zero_shot, base_labels),
    }


def base_model_fills(depth_mm: np.ndarray, rgb: np.ndarray, raw_zero_shot,
                     base_labels=None) -> dict[str, np.ndarray]:
    """The rows every run has: the base model's monocular fills (anchored, local fit) and the
    classical fills."""
    def monocular() -> dict[str, np.ndarray]:
        return {"zero_shot": complete_raw(raw_zero_shot, depth_mm, base_labels).depth_mm,
                "local_fit": local_fit_fill(raw_zero_shot, depth_mm, base_labels).depth_mm}

    return {**remembered(monocular, depth_mm, raw_zero_shot, note=f"base {base_labels!r}"),
            **classical_fills(depth_mm, rgb)}


def classical_fills(depth_mm: np.ndarray, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The fills without a model: the image-guided ones (`default` is one of them, computed once)
    and nearest, harmonic and Telea, which read the depth alone. They are computed in threads: the
    sparse solves and OpenCV let go of the GIL."""
    def compute() -> dict[str, np.ndarray]:
        jobs = {**{name: partial(fill, depth_mm, rgb) for name, fill in GUIDED_FILLS.items()},
                "nearest": partial(nearest_fill, depth_mm), "harmonic": partial(harmonic_fill, depth_mm),
                "telea": partial(telea_fill, depth_mm)}
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=min(len(jobs), cores)) as pool:  # the cores this process may use
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            fills = {name: future.result() for name, future in futures.items()}
        return {"default": fills[DEFAULT_FILL], **fills}

    settings = (fill_settings(), fill_solver.DIRECT_SOLVE_MAX_UNKNOWNS, fill_solver.REFINE_ITERATIONS)
    return remembered(compute, depth_mm, rgb, note=f"classical {settings!r}")


def remembered(compute, *inputs: np.ndarray, note: str) -> dict[str, np.ndarray]:
    """`compute()` ({method: fill} of `inputs`), or its earlier result for the same inputs and `note`.

    A process that scores the same holes again (the notebook scores the test split for the monocular
    run, then for the completer, whose base model is the same) takes them from `_FILL_MEMO`, read-only:
    the most recent FILL_MEMO_BYTES of fills, keyed by a digest of the inputs' bytes.
    """
    digest = hashlib.blake2b(note.encode(), digest_size=16)
    for array in inputs:
        array = np.ascontiguousarray(array)
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    key = digest.digest()
    with _FILL_MEMO_LOCK:
        fills = _FILL_MEMO.pop(key, None)
    if fills is None:
        fills = compute()
        for filled in fills.values():
            filled.flags.writeable = False
    with _FILL_MEMO_LOCK:
        _FILL_MEMO[key] = fills  # the most recent last
        while _memo_bytes() > FILL_MEMO_BYTES and len(_FILL_MEMO) > 1:
            del _FILL_MEMO[next(iter(_FILL_MEMO))]
    return dict(fills)


def _memo_bytes() -> int:
    arrays = {id(a): a for fills in _FILL_MEMO.values() for a in fills.values()}  # `default` is shared
    return sum(a.nbytes for a in arrays.values())


def score_capture(capture: Capture, other_depth_mm: np.ndarray, fill, seed: int, fill_error=None):
    """Rows {capture, kind, method, metrics, hidden_pixels} for one capture, and the fills of its
    first kind (for a figure). other_depth_mm: the depth whose holes are borrowed; fill: depth with
    holes -> {method: filled depth} (its task's `hole_fillers`); fill_error: the
    default fill's FillErrorModel, whose 90 % interval is scored on the `default` row."""
    rows, first = [], None
    for kind, hidden in hidden_masks(capture.depth_mm, other_depth_mm, seed).items():
        if not hidden.any():
            continue
        depth = np.where(hidden, np.nan, capture.depth_mm)
        fills = fill(depth)
        for method, filled in fills.items():
            metrics = depth_metrics(filled, capture.depth_mm, hidden, HOLE_TOLERANCES_MM)
            if method == "default" and fill_error is not None and metrics is not None:
                covered, width = fill_coverage(fill_error, depth, filled, capture.depth_mm, hidden)
                if np.isfinite(covered):  # some hidden pixel has a sigma
                    metrics["coverage_90"], metrics["interval_mm"] = covered, width
            rows.append({"capture": capture.key, "kind": kind, "method": method, "metrics": metrics,
                         "hidden_pixels": int(hidden.sum())})
        if first is None:
            first = (kind, hidden, fills)
    return rows, first


def run_fill_error(data_dir, bundle, progress: bool = True):
    """The default fill's FillErrorModel of a run: read from its folder (FILL_ERROR_FILE) if it was
    learned with the fill settings of this version, else learned on the run's training captures and
    written there (said); None (said) if it cannot be learned (no training split here, too few
    measured pixels)."""
    import json

    from depth_lora.numeric.fill_error import FillErrorModel

    path = Path(bundle.folder) / FILL_ERROR_FILE
    if path.is_file():
        try:
            model = FillErrorModel.from_dict(json.loads(path.read_text()))
            if model.settings == fill_settings():
                return model
        except (ValueError, json.JSONDecodeError):
            pass  # another version's: learned again below
    try:
        model = learned_fill_error(select_captures(data_dir, bundle, "train"), bundle.record.depth_unit)
    except (DataError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"No error bars for the {DEFAULT_FILL} fill: {exc}")
        return None
    try:
        path.write_text(json.dumps(model.to_dict(), indent=2) + "\n")
        where = f"saved to {path}"
    except OSError:
        where = "not saved (the folder is read-only)"
    if progress:
        print(f"The {DEFAULT_FILL} fill's error bars learned on {model.captures} training captures, {where}")
    return model


def learned_fill_error(files: list, unit: str = "mm"):
    """calibrate_fill_error on `calibration_subset(files)`, learned once per process for the same
    files, unchanged on disk, and the same settings (the notebook's completer reads the same
    training captures as its monocular run)."""
    chosen = tuple(calibration_subset(files))
    stamps = tuple((f.image.stat().st_mtime_ns, f.depth.stat().st_mtime_ns) for f in chosen)
    return _learned_fill_error(chosen, stamps, unit, repr(sorted(fill_settings().items())))


@lru_cache(maxsize=4)
def _learned_fill_error(files: tuple, stamps: tuple, unit: str, settings: str):
    """`stamps` and `settings` are only the cache's key: a file changed on disk, or another setting,
    is learned again."""
    return calibrate_fill_error([load_capture(f, unit) for f in files])


def scoring_size(size_hw: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    """The size a capture of `size_hw` is scored at: divided by the smallest integer that brings it
    within `max_pixels` (None or 0: its own size). ConfigError for a negative `max_pixels`."""
    check_max_pixels(max_pixels)
    return fraction_size(size_hw, max_pixels)


def run_hole_evaluation(data_dir, adapter_dir, split: str = "test", plots_dir=None, device=None,
                        progress: bool = True, precision: str = "auto", bundle=None,
                        max_pixels: int | None = HOLE_SCORING_MAX_PIXELS) -> HoleReport:
    """Hide, fill and score the held-out captures of an output folder (see the module docstring).

    A monocular run (--task depth) is scored with its fine-tuned prediction anchored to the
    measured pixels; a completion run (--task complete) with its completer, before and after
    fine-tuning. Both get the base model's monocular fills and the classical ones. Each capture
    borrows the holes of the next capture of the split (its own, mirrored, if the split has one
    capture); blobs are seeded by the capture's position, so a re-run scores the same pixels.
    `bundle`: the folder already loaded (predict.load_bundle). `max_pixels`: captures larger than
    this are scored at an integer fraction of their size (the module docstring); None: full size.
    """
    check_max_pixels(max_pixels)
    bundle = bundle or load_bundle(adapter_dir, device=device, precision=precision)
    files = select_captures(data_dir, bundle, split)
    fill_error = run_fill_error(data_dir, bundle, progress)
    task = task_of(bundle.record)
    fillers = task.hole_fillers(bundle)
    unit = bundle.record.depth_unit
    rows, scored_hw = [], []
    bar = tqdm(files, desc=f"holes {split}", unit="capture", disable=not (progress and live_progress()))
    for i, f in enumerate(bar):
        capture = at_most(load_capture(f, unit), max_pixels)  # resized as a model's input is
        scored_hw.append(capture.size_hw)
        if len(files) > 1:  # only the next capture's holes are needed: its depth, not its image
            other_depth = load_depth_mm(files[(i + 1) % len(files)].depth, unit)
            other_depth = resize_depth(other_depth, scoring_size(other_depth.shape, max_pixels))[0]
        else:
            other_depth = capture.depth_mm[:, ::-1]
        capture_rows, first = score_capture(capture, other_depth, fillers(capture), seed=i,
                                            fill_error=fill_error)
        rows += capture_rows
        if plots_dir is not None and first is not None:
            from depth_lora.viz import plot_hole_filling, save_figure

            kind, hidden, fills = first
            shown = (task.hole_row, "default", "harmonic")
            figure = plot_hole_filling(capture, hidden, {m: fills[m] for m in shown},
                                       title=f"{capture.key}\n{kind} holes", warning=bundle.record.warning)
            save_figure(figure, Path(plots_dir) / f"holes_{f.key}.png")
    methods = [m for m in FILL_METHODS if any(r["method"] == m for r in rows)]
    by_kind = {
        kind: {m: mean_with_ci95([r["metrics"] for r in rows if r["kind"] == kind and r["method"] == m],
                                 HOLE_HEADLINE)
               for m in methods}
        for kind in HOLE_KINDS if any(r["kind"] == kind for r in rows)
    }
    kinds = task.training_hole_kinds(bundle.record)
    return HoleReport(by_kind, rows, split, kinds, sorted(set(scored_hw)))


def format_hole_table(report: HoleReport) -> str:
    """One block per hole kind: a row per method, RMSE with its interval, MAE, within 1/5/10 mm."""
    lines = []
    for kind, methods in report.by_kind.items():
        n = next(iter(methods.values())).get("captures", 0)
        lines.append(f"{kind} ({plural(n, 'capture')}{', anecdotal' if n < 10 else ''})")
        lines.append(f"  {'method':<20} {'RMSE mm':>8} {'95% interval':>17} {'MAE mm':>7} "
                     f"{'<=1mm':>6} {'<=5mm':>6} {'<=10mm':>6}")
        for method, m in methods.items():
            if "rmse_mm" not in m:
                continue
            interval = "[{:.1f}, {:.1f}]".format(*m["rmse_mm_ci95"])
            lines.append(f"  {method:<20} {m['rmse_mm']:8.1f} {interval:>17} {m['mae_mm']:7.1f} "
                         f"{m['within_1mm']:6.0%} {m['within_5mm']:6.0%} {m['within_10mm']:6.0%}")
    covered = [(kind, methods["default"]) for kind, methods in report.by_kind.items()
               if "coverage_90" in methods.get("default", {})]
    if covered:
        each = "; ".join(f"{m['coverage_90']:.0%} of the hidden pixels of {kind} (median width "
                         f"{m['interval_mm']:.0f} mm)" for kind, m in covered)
        lines.append("The default fill's 90 % interval (+-1.645 sigma, learned on the training captures) "
                     f"covered {each} (a calibrated interval: 85-95 %).")
    shown = {m for methods in report.by_kind.values() for m in methods}
    at = f", at {report.scored_at}" if report.scored_at else ""
    lines.append(f"Scored on the hidden pixels only{at}. " + "; ".join(
        f"{m}: {d}" for m, d in FILL_DESCRIPTIONS.items() if m in shown) + ".")
    if report.training_kinds is not None:
        never = [k for k in report.by_kind if k not in report.training_kinds]
        lines.append(f"The completer trained on holes of kinds {', '.join(report.training_kinds)} (drawn on "
                     f"its training captures); {', '.join(never) or 'no kind scored here'} "
                     f"{'is' if len(never) == 1 else 'are'} never drawn in training.")
    return "\n".join(lines)


def write_hole_report(report: HoleReport, json_path=None, csv_path=None,
                      verdict: str | None = None) -> list[Path]:
    """A completion run's evaluation: the JSON ({"split", "holes", "verdict"}) and/or one CSV row per
    (capture, hole kind, method); returns the written paths."""
    import csv
    import json

    written = []
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"split": report.split, "holes": report.to_dict(), "verdict": verdict}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        written.append(path)
    if csv_path:
        path = Path(csv_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"capture": r["capture"], "kind": r["kind"], "method": r["method"],
                 "hidden_pixels": r["hidden_pixels"], **r["metrics"]} for r in report.captures]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    return written
