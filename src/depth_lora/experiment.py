"""Offline proof that LoRA adapts a pretrained depth model: pretrain on one synthetic domain, adapt.

1. Source domain (rooms and tabletops, wide FOV, 0.5-10 m, clean depth): a small Depth Anything
   (the `tiny` architecture) is pretrained from scratch with the scale-and-shift-invariant loss
   on inverse depth, as Depth Anything itself is, and saved as a normal model folder.
2. Target domain: Zivid-like bin-picking captures (the demo generator), split as the tool does.
3. On the target's test split, in mm, with the tool's own evaluate: zero-shot (aligned), constant,
   LoRA q/k/v at several ranks, LoRA + head, full fine-tuning, and the architecture trained from
   scratch on the target alone, over several seeds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_lora.config import TrainConfig
from depth_lora.errors import DataError


@dataclass(frozen=True)
class Budget:
    """Sizes and steps of one experiment run (full: ~45 min on 2 cores; quick: a few minutes)."""

    source_count: int
    target_count: int
    pretrain_steps: int
    adapt_steps: int
    seeds: tuple[int, ...]


FULL = Budget(source_count=400, target_count=100, pretrain_steps=2500, adapt_steps=400, seeds=(0, 1, 2))
QUICK = Budget(source_count=40, target_count=16, pretrain_steps=60, adapt_steps=20, seeds=(0,))
SOURCE_SIZE_HW, TARGET_SIZE_HW = (240, 320), (240, 388)
PRETRAIN_INPUT, TARGET_INPUT = [168, 224], [126, 196]
# One target split for every method and seed (the seed varies initialisation and data order), so
# methods are compared on the same held-out captures: 70 / 10 / 20 of the full run's 100.
TARGET_VAL_FRACTION, TARGET_TEST_FRACTION, SPLIT_SEED = 0.1, 0.2, 0

# method -> TrainConfig overrides (model filled in: the pretrained folder, or "tiny" from scratch)
METHODS = {
    "lora_r4": {"lora_rank": 4, "lora_alpha": 8},
    "lora_r8": {"lora_rank": 8, "lora_alpha": 16},
    "lora_r16": {"lora_rank": 16, "lora_alpha": 32},
    "lora_r16_head": {"lora_rank": 16, "lora_alpha": 32, "train_head": True, "learning_rate": 2e-3},
    # LoRA on every backbone Linear (attention q/k/v and output, MLP) plus the head.
    "lora_r16_all_head": {"lora_rank": 16, "lora_alpha": 32, "lora_targets": ["qkv", "out", "mlp"],
                          "train_head": True, "learning_rate": 2e-3},
    # ... and on the DPT neck's convolutions (half of this small model's weights): the demo recipe.
    "lora_r16_all_neck_head": {"lora_rank": 16, "lora_alpha": 32, "train_head": True, "learning_rate": 2e-3,
                               "lora_targets": ["qkv", "out", "mlp", "neck"]},
    "full_finetune": {"finetune": "full", "learning_rate": 1e-3},
    "scratch": {"finetune": "full", "learning_rate": 1e-3},
}
LORA_LEARNING_RATE = 5e-3
# The best recipe: the offline demo's (quickstart, notebook); predictions.png shows the test capture
# of its median error.
DEMO_METHOD = "lora_r16_all_neck_head"
# What every adaptation run shares; inverse-depth labels keep the pretrained head's direction.
ADAPT_SETTINGS = {"labels": "inverse", "image_size": TARGET_INPUT}


def pretrain(source_dir: Path, out_dir: Path, budget: Budget) -> Path:
    """Pretrain `tiny` from scratch on the source scenes (SSI loss on inverse depth); returns the
    model folder, loadable by AutoModelForDepthEstimation.from_pretrained and `--model FOLDER`."""
    from depth_lora.train import run_training

    cfg = TrainConfig(
        data=str(source_dir), output=str(out_dir), model="tiny", finetune="full", labels="inverse",
        loss="ssi", max_steps=budget.pretrain_steps, batch_size=8, learning_rate=1e-3,
        image_size=PRETRAIN_INPUT, color_jitter=False, logging_steps=50, save_total_limit=1,
    )
    run_training(cfg, progress=False)
    return out_dir


def adapt(
    method: str, pretrained: Path, target_dir: Path, out_dir: Path, seed: int, budget: Budget, split: Path
) -> dict:
    """Train one method on the target and evaluate it on the test split; returns a result row."""
    from depth_lora.evaluate import run_evaluation
    from depth_lora.train import run_training

    overrides = dict(METHODS[method])
    values = dict(
        data=str(target_dir), output=str(out_dir), seed=seed, split=str(split), max_steps=budget.adapt_steps,
        batch_size=4, color_jitter=False, logging_steps=10, learning_rate=LORA_LEARNING_RATE,
        save_total_limit=1, model="tiny" if method == "scratch" else str(pretrained.resolve()),
        **ADAPT_SETTINGS,
    )
    values.update(overrides)
    start = time.perf_counter()
    result = run_training(TrainConfig(**values), progress=False)
    seconds = time.perf_counter() - start
    report = run_evaluation(target_dir, out_dir, split="test", progress=False)
    curve = validation_curve(result.log_history)
    trainable = int(result.trainable_line.split("trainable params: ")[1].split(" ||")[0].replace(",", ""))
    return {
        "method": method, "seed": seed, "train_seconds": seconds, "trainable_params": trainable,
        "test": report.mean["fine_tuned"], "zero_shot_aligned": report.mean["zero_shot_aligned"],
        "constant": report.mean["constant"], "curve": curve,
    }


def validation_curve(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, validation RMSE mm) at each evaluation of a training loop."""
    return [(e["step"], e["eval_rmse_mm"]) for e in log_history if "eval_rmse_mm" in e]


def run_experiment(out_dir: str | Path, quick: bool = False) -> dict:
    """The whole experiment into `out_dir` (data, models, results.json, table.md, figures)."""
    from depth_lora.data import find_captures, make_split, save_split
    from depth_lora.synthetic import generate_demo_captures
    from depth_lora.synthetic_source import generate_source_scenes

    budget = QUICK if quick else FULL
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists():
        raise DataError(out_dir, "already holds an experiment (results.json); choose another folder")
    source, target = out_dir / "source", out_dir / "target"
    generate_source_scenes(source, budget.source_count, seed=100, size_hw=SOURCE_SIZE_HW)
    generate_demo_captures(target, budget.target_count, seed=200, size_hw=TARGET_SIZE_HW)
    keys = [f.key for f in find_captures(target)]
    split = make_split(keys, TARGET_VAL_FRACTION, TARGET_TEST_FRACTION, SPLIT_SEED)
    split = save_split(split, out_dir / "target_split.json", seed=SPLIT_SEED, data=str(target))
    start = time.perf_counter()
    pretrained = pretrain(source, out_dir / "pretrained", budget)
    rows = []
    for seed in budget.seeds:
        for method in METHODS:
            print(f"experiment: {method}, seed {seed}", flush=True)
            run_dir = out_dir / "runs" / f"{method}_s{seed}"
            rows.append(adapt(method, pretrained, target, run_dir, seed, budget, split))
    results = {"budget": budget.__dict__, "rows": rows, "seconds": time.perf_counter() - start}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "table.md").write_text(format_table(rows) + "\n")
    write_figures(out_dir, target, rows)
    return results


def write_figures(out_dir: Path, target_dir: Path, rows: list[dict]) -> None:
    """learning_curves.png (first seed, with the baselines) and predictions.png (every method on
    the test capture where the LoRA recipe's error is the median, so the figure is typical)."""
    from depth_lora.data import find_captures, load_capture, load_split
    from depth_lora.evaluate import predict_all_methods
    from depth_lora.metrics import depth_metrics
    from depth_lora.predict import load_bundle, predict_depth_mm
    from depth_lora.viz import plot_depth_grid, plot_learning_curves, save_figure

    seed = rows[0]["seed"]
    curves = {r["method"]: r["curve"] for r in rows if r["seed"] == seed}
    first = rows[0]  # the baselines are the same for every run: one target split
    references = {"constant": first["constant"]["rmse_mm"],
                  "zero-shot (aligned, oracle)": first["zero_shot_aligned"]["rmse_mm"]}
    save_figure(plot_learning_curves(curves, f"target validation RMSE, seed {seed}", references),
                out_dir / "learning_curves.png")
    bundles = {m: load_bundle(out_dir / "runs" / f"{m}_s{seed}", "cpu") for m in METHODS}
    by_key = {f.key: f for f in find_captures(target_dir)}
    captures = [load_capture(by_key[k]) for k in load_split(out_dir / "target_split.json")["test"]]
    errors = [depth_metrics(predict_depth_mm(bundles[DEMO_METHOD], c.rgb), c.depth_mm, c.valid_mask)
              for c in captures]
    order = np.argsort([e["rmse_mm"] if e else np.inf for e in errors])
    capture = captures[order[len(order) // 2]]
    baselines = predict_all_methods(bundles["lora_r16"], capture)
    preds = {"zero-shot (aligned)": baselines["zero_shot_aligned"], "constant": baselines["constant"]}
    preds.update({m: predict_depth_mm(bundle, capture.rgb) for m, bundle in bundles.items()})
    save_figure(plot_depth_grid(capture, preds), out_dir / "predictions.png")


def format_table(rows: list[dict]) -> str:
    """Markdown table: mean ± std over seeds of the test metrics, per method and baseline."""

    def stat(values, digits=1):
        values = np.asarray(values, dtype=float)
        mean = f"{values.mean():.{digits}f}"
        return f"{mean} ± {values.std():.{digits}f}" if values.size > 1 else mean

    def cells(metrics: list[dict]) -> str:
        return (f"{stat([m['rmse_mm'] for m in metrics])} | {stat([m['mae_mm'] for m in metrics])} | "
                f"{stat([m['abs_rel'] for m in metrics], 3)} | {stat([m['delta1'] for m in metrics], 3)}")

    lines = ["| method | trainable params | train s | RMSE mm | MAE mm | AbsRel | delta<1.25 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, key in (("zero-shot (aligned, oracle)", "zero_shot_aligned"), ("constant", "constant")):
        # The same for every run (one target split, one pretrained model): no spread to show.
        lines.append(f"| {name} | 0 | 0 | {cells([rows[0][key]])} |")
    for method in METHODS:
        runs = [r for r in rows if r["method"] == method]
        seconds = stat([r["train_seconds"] for r in runs], 0)
        params = f"{runs[0]['trainable_params']:,}"
        lines.append(f"| {method} | {params} | {seconds} | {cells([r['test'] for r in runs])} |")
    return "\n".join(lines)
