"""Which classical fill should `complete` run? The image-guided fills against nearest, harmonic and
Telea, on the hidden pixels of generated captures, chosen on validation only (issue 33).

Data: the default demo data (one robot cell, 30 captures in 10 sessions of 3) for demo seeds 0-4,
five cells; each seed's split is quickstart's (TrainConfig's fractions and seed, sessions kept
apart), so validation and test are 6 captures from 2 sessions each, 30 per split over the seeds.
Each capture is scored as `evaluate --holes` scores it: at its scoring size (600 x 972), the four
hole kinds hidden (numeric.hole_masks), each fill scored on the hidden pixels only.

Usage: python experiments/guided_fill/run.py WORK [--test METHOD ...]
    WORK/data_s<seed>: the demo data (generated if missing, about 25 s a seed).
    Validation rows of every variant, then (with --test) the test rows of the methods named, once.
Writes experiments/guided_fill/results.json (per split, method and kind: mean RMSE in mm over
captures, and seconds per fill) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from depth_lora.data.captures import Capture, find_captures, load_capture
from depth_lora.data.dataset import prepare_capture
from depth_lora.data.split import group_captures, make_split
from depth_lora.evaluation.holes import scoring_size
from depth_lora.inference.options import HOLE_SCORING_MAX_PIXELS
from depth_lora.numeric import guided_fill as gf
from depth_lora.numeric.fill import harmonic_fill, nearest_fill, telea_fill
from depth_lora.numeric.hole_masks import HOLE_KINDS, hidden_masks
from depth_lora.numeric.metrics import depth_metrics
from depth_lora.numeric.resize import masked_area_resize
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training.config import DEMO_COUNT, TrainConfig

SEEDS = (0, 1, 2, 3, 4)
HERE = Path(__file__).parent


def colorization(depth, image, variance_factor=gf.VARIANCE_FACTOR, sigma=None):
    return harmonic_fill(depth, pair_weights=gf.image_pair_weights(image, variance_factor, sigma))


def far_side(depth, image, radius, guided=True, variance_factor=gf.VARIANCE_FACTOR, slope=None, thin=None):
    """Until 2026-12-07 23:10 near_side had no slope term: the rows named without "slope" ran so."""
    measured = np.isfinite(depth)
    weights = gf.image_pair_weights(image, variance_factor) if guided else None
    walls = gf.near_side(depth, radius, slope_share=slope if slope is not None else 0.0)
    if thin is not None:  # only beside holes no pixel of which lies farther than `thin` x the diagonal
        labels, count = ndimage.label(~measured)
        inside = ndimage.distance_transform_edt(~measured)
        widest = np.asarray(ndimage.maximum(inside, labels, np.arange(1, count + 1)) if count else [])
        thin_holes = np.concatenate([[False], widest <= thin * float(np.hypot(*depth.shape))])[labels]
        walls &= ndimage.binary_dilation(thin_holes)
    filled = harmonic_fill(depth, measured & ~walls, ~measured, weights)
    rest = ~measured & np.isnan(filled)
    if rest.any():
        filled = np.where(rest, harmonic_fill(depth, measured, rest, weights), filled)
    return filled


def at_half(depth, image, variance_factor, joint=True, full_cells=False):
    """The colorization fill at half the size, upsampled jointly (guided_fill.at_most_pixels) or
    bilinearly, a cell measured where half (or all, `full_cells`) of its pixels are."""
    h, w = depth.shape[0] // 2, depth.shape[1] // 2
    measured = np.isfinite(depth)
    small, cover = masked_area_resize(depth, measured, (h, w))
    small = np.where(cover >= (0.999 if full_cells else 0.5), small, np.nan)
    small_image = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    filled = colorization(small, small_image, variance_factor)
    if joint:
        up = gf.joint_upsample(filled, gf.gray_levels(small_image), gf.gray_levels(image))
    else:
        size = depth.shape[1], depth.shape[0]
        up = cv2.resize(np.nan_to_num(filled), size, interpolation=cv2.INTER_LINEAR)
        reach = cv2.resize(np.isfinite(filled).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        up = np.where(reach > 0.99, up, np.nan)
    return np.where(measured, depth, up)


VARIANTS = {
    "nearest": lambda d, i: nearest_fill(d),
    "harmonic": lambda d, i: harmonic_fill(d),
    "telea": lambda d, i: telea_fill(d),
    "colorization": lambda d, i: gf.colorization_fill(d, i),  # as shipped: vf 0.1
    "shadow_aware": lambda d, i: gf.shadow_aware_fill(d, i),  # as shipped: vf 0.1, r 0.012, slope 0.004
    "colorization vf 0.6": partial(colorization, variance_factor=0.6),
    "colorization vf 0.2": partial(colorization, variance_factor=0.2),
    "colorization vf 2": partial(colorization, variance_factor=2.0),
    "shadow_aware r 0.006": partial(far_side, radius=0.006, variance_factor=0.6),
    "shadow_aware r 0.012": partial(far_side, radius=0.012, variance_factor=0.6),
    "shadow_aware r 0.025": partial(far_side, radius=0.025, variance_factor=0.6),
    "far side, harmonic r 0.012": partial(far_side, radius=0.012, guided=False),
    "colorization vf 0.1": partial(colorization, variance_factor=0.1),
    "colorization vf 0.05": partial(colorization, variance_factor=0.05),
    "colorization sigma 0.02": partial(colorization, sigma=0.02),
    "colorization sigma 0.05": partial(colorization, sigma=0.05),
    "colorization sigma 0.1": partial(colorization, sigma=0.1),
    "shadow_aware vf 0.2 r 0.006": partial(far_side, radius=0.006, variance_factor=0.2),
    "shadow_aware vf 0.2 r 0.012": partial(far_side, radius=0.012, variance_factor=0.2),
    "shadow vf 0.1 r 0.012 slope 0.001": partial(far_side, radius=0.012, variance_factor=0.1, slope=0.001),
    "shadow vf 0.1 r 0.012 slope 0.002": partial(far_side, radius=0.012, variance_factor=0.1, slope=0.002),
    "shadow vf 0.1 r 0.012 slope 0.004": partial(far_side, radius=0.012, variance_factor=0.1, slope=0.004),
    "shadow vf 0.1 r 0.025 slope 0.002": partial(far_side, radius=0.025, variance_factor=0.1, slope=0.002),
    "shadow vf 0.1 slope 0.004 thin 0.004": partial(far_side, radius=0.012, variance_factor=0.1, slope=0.004,
                                                     thin=0.004),
    "shadow vf 0.1 slope 0.004 thin 0.008": partial(far_side, radius=0.012, variance_factor=0.1, slope=0.004,
                                                     thin=0.008),
    "shadow vf 0.1 slope 0.004 thin 0.016": partial(far_side, radius=0.012, variance_factor=0.1, slope=0.004,
                                                     thin=0.016),
    "vf 0.1 at 1/2 bilinear": partial(at_half, variance_factor=0.1, joint=False),
    "vf 0.1 at 1/2 joint": partial(at_half, variance_factor=0.1),
    "vf 0.1 at 1/2 joint, full cells": partial(at_half, variance_factor=0.1, full_cells=True),
    "colorization vf 0.6 at 1/2 bilinear": partial(at_half, variance_factor=0.6, joint=False),
}


def split_captures(data: Path, split: str) -> list:
    files = find_captures(data)
    keys = [f.key for f in files]
    cfg = TrainConfig()
    groups = group_captures(keys, cfg.group_by)
    chosen = make_split(keys, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
    return [f for f in files if f.key in set(chosen[split])]


def scored(files, i: int) -> tuple[Capture, np.ndarray]:
    """Capture i at its scoring size and the next capture's depth (its own mirrored if alone), as
    `evaluate --holes` reads them."""
    capture = load_capture(files[i])
    size = scoring_size(capture.size_hw, HOLE_SCORING_MAX_PIXELS)
    seen = prepare_capture(capture, size)
    if len(files) == 1:
        return Capture(capture.key, seen.rgb, seen.depth_mm), seen.depth_mm[:, ::-1]
    other = load_capture(files[(i + 1) % len(files)])
    return Capture(capture.key, seen.rgb, seen.depth_mm), prepare_capture(other, size).depth_mm


def score_files(files, seed: int, methods: list[str], label: str = "") -> list[dict]:
    rows = []
    for i in range(len(files)):
        capture, other_depth = scored(files, i)
        for kind, hidden in hidden_masks(capture.depth_mm, other_depth, seed=i).items():
            if not hidden.any():
                continue
            depth = np.where(hidden, np.nan, capture.depth_mm)
            for method in methods:
                start = time.perf_counter()
                filled = VARIANTS[method](depth, capture.rgb)
                seconds = time.perf_counter() - start
                metrics = depth_metrics(filled, capture.depth_mm, hidden, (1.0, 5.0, 10.0))
                rows.append({"seed": seed, "capture": capture.key, "kind": kind, "method": method,
                             "rmse_mm": metrics["rmse_mm"], "seconds": seconds,
                             "unfilled": int((hidden & ~np.isfinite(filled)).sum())})
        print(f"{label}capture {i + 1}/{len(files)}", flush=True)
    return rows


def run_split(work: Path, split: str, methods: list[str]) -> list[dict]:
    rows = []
    for seed in SEEDS:
        data = work / f"data_s{seed}"
        if not data.is_dir():
            generate_demo_captures(data, DEMO_COUNT, seed=seed)
        rows += score_files(split_captures(data, split), seed, methods, f"{split} seed {seed} ")
    return rows


def coverage_rows(work: Path, split: str, full_size: bool = False) -> dict:
    """The default fill's error bars, learned on each cell's training captures (as a run learns
    them), scored on the hidden pixels of its `split` captures: per kind, the share of hidden pixels
    inside +-1.645 sigma and the median interval width, over all pixels of the 5 cells. At the
    scoring size (600x972), or at the captures' own 1200x1944 (`full_size`: what `complete` fills,
    at half that size and upsampled)."""
    from depth_lora.evaluation.fill_error import calibrate_fill_error
    from depth_lora.numeric.fill_error import Z_90, fill_features

    errors, sigmas = {k: [] for k in HOLE_KINDS}, {k: [] for k in HOLE_KINDS}
    for seed in SEEDS:
        data = work / f"data_s{seed}"
        model = calibrate_fill_error([load_capture(f) for f in split_captures(data, "train")])
        files = split_captures(data, split)
        for i in range(len(files)):
            if full_size:
                capture = load_capture(files[i])
                other_depth = load_capture(files[(i + 1) % len(files)]).depth_mm
            else:
                capture, other_depth = scored(files, i)
            for kind, hidden in hidden_masks(capture.depth_mm, other_depth, seed=i).items():
                depth = np.where(hidden, np.nan, capture.depth_mm)
                filled = gf.default_fill(depth, capture.rgb)
                sigma = model.sigma(*fill_features(depth, filled))
                errors[kind].append(np.abs(filled - capture.depth_mm)[hidden])
                sigmas[kind].append(sigma[hidden])
        print(f"coverage {split} seed {seed}", flush=True)
    out = {}
    for kind in HOLE_KINDS:
        e, s = np.concatenate(errors[kind]), np.concatenate(sigmas[kind])
        ok = np.isfinite(e)
        out[kind] = {"coverage_90": float(np.mean(e[ok] <= Z_90 * s[ok])),
                     "interval_mm": float(np.median(2 * Z_90 * s[ok]))}
    return out


def summary(rows: list[dict]) -> dict:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {kind: float(np.mean([r["rmse_mm"] for r in mine if r["kind"] == kind]))
                       for kind in HOLE_KINDS if any(r["kind"] == kind for r in mine)}
        out[method]["captures"] = len({(r["seed"], r["capture"]) for r in mine})
        out[method]["seconds_per_fill"] = float(np.mean([r["seconds"] for r in mine]))
    return out


def table(results: dict) -> str:
    lines = [f"| method | {' | '.join(HOLE_KINDS)} | s per fill |",
             "| --- |" + " ---: |" * (len(HOLE_KINDS) + 1)]
    for method, row in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{row[k]:.1f}" for k in HOLE_KINDS)
                     + f" | {row['seconds_per_fill']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--test", nargs="+", default=[], choices=list(VARIANTS),
                        help="score these methods on the test split (once, after choosing)")
    parser.add_argument("--coverage", action="store_true",
                        help="the default fill's error bars: learned on training captures, scored on "
                        "validation")
    parser.add_argument("--full-size", action="store_true", help="with --coverage: at the captures' own size")
    parser.add_argument("--real", type=Path, help="also score the captures of this folder (an anecdote; "
                        "its numbers are printed, not written)")
    args = parser.parse_args()
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if args.coverage:
        name = "coverage_validation" + ("_full_size" if args.full_size else "")
        results[name] = coverage_rows(args.work, "val", args.full_size)
        print(json.dumps(results[name], indent=2))
        path.write_text(json.dumps(results, indent=2) + "\n")
        return
    if args.real:
        rows = score_files(find_captures(args.real), 0, args.methods)
        print(f"{args.real} (anecdote)\n" + table(summary(rows)))
        return
    validation = summary(run_split(args.work, "val", args.methods))
    results["validation"] = {**results.get("validation", {}), **validation}
    print("validation (30 captures, 5 cells; mean RMSE in mm on the hidden pixels)\n"
          + table(results["validation"]))
    if args.test:
        results["test"] = summary(run_split(args.work, "test", args.test))
        print("test\n" + table(results["test"]))
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
