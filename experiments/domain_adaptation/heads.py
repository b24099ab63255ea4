"""Metric or relative head? A follow-up to the domain-adaptation experiment (experiment.py), on the
same models and split.

`python experiments/domain_adaptation/run.py --out DIR --heads`, after the main experiment filled DIR.
The relative recipe's numbers come from the main experiment (`recommended`, its chosen learning rate and
labels/loss variant); this adds the experiment's pretrained model with its head turned metric
(`--head metric`: same weights, sigmoid x max_depth, labels in metres), at two ranges: 3 m (just
above the captures' farthest depth, 2.6 m) and 20 m (the indoor checkpoints' range). Each range
gets the same learning-rate grid, chosen on validation with seed 0, then every seed is scored once
on the test captures, like the main experiment's methods.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiment import HEADLINE, METHODS, VARIANTS, finished_results, say, score_on_test, train_run

from depth_lora.errors import DataError

HEAD_RANGES_M = (3, 20)


def run_head_comparison(out_dir: str | Path) -> dict:
    """Train and score the metric-head variants in an experiment folder; writes heads.json."""
    out_dir = Path(out_dir)
    results, budget = finished_results(out_dir)
    if "recommended" not in results["chosen"]:
        raise DataError(out_dir / "results.json", "has no 'recommended' method to compare with")
    loss = VARIANTS[results["variant"]]["loss"]
    run_args = dict(target_dir=out_dir / "target", pretrained=out_dir / "pretrained", budget=budget,
                    split_file=out_dir / "trainval_split.json", method="recommended")
    rows, chosen = [], {}
    for max_depth in HEAD_RANGES_M:
        settings = {"head": "metric", "max_depth": max_depth, "labels": "metric", "loss": loss}
        grid = []
        for lr in budget.learning_rates:
            name = f"metric{max_depth}m_lr{lr:g}_s0"
            row = train_run(out_dir / "runs" / name, learning_rate=lr, settings=settings, seed=0, **run_args)
            grid.append(row)
            say(f"heads {name}: validation RMSE {row['val']['rmse_mm']:.1f} mm")
        best = min(grid, key=lambda r: r["val"]["rmse_mm"])
        chosen[f"metric_{max_depth}m"] = {"learning_rate": best["learning_rate"],
                                          "val_rmse_mm": best["val"]["rmse_mm"]}
        rows += [{"stage": "selection", **r} for r in grid]
        for seed in budget.seeds:
            row = best if seed == 0 else train_run(
                out_dir / "runs" / f"metric{max_depth}m_lr{best['learning_rate']:g}_s{seed}",
                learning_rate=best["learning_rate"], settings=settings, seed=seed, **run_args)
            final = score_on_test(row, out_dir, "final", head=f"metric_{max_depth}m")
            rows.append(final)
            say(f"heads metric {max_depth} m seed {seed}: test RMSE "
                 f"{final['test']['fine_tuned']['rmse_mm']:.1f} mm")
    relative = [r for r in results["rows"] if r["stage"] == "final" and r["method"] == "recommended"]
    heads = {"chosen": chosen, "relative_chosen": results["chosen"]["recommended"],
             "summary": summarize_heads(rows, relative), "rows": rows, "methods": METHODS["recommended"],
             "headline": HEADLINE}
    (out_dir / "heads.json").write_text(json.dumps(heads, indent=2) + "\n")
    return heads


def summarize_heads(rows: list[dict], relative: list[dict]) -> dict:
    """Per head: test RMSE of each seed, its mean, and the zero-shot baselines of the same runs."""
    import numpy as np

    summary = {}
    finals = {"relative (recommended)": relative}
    for row in rows:
        if row["stage"] == "final":
            finals.setdefault(row["head"], []).append(row)
    for head, runs in finals.items():
        rmse = [r["test"]["fine_tuned"]["rmse_mm"] for r in runs]
        summary[head] = {"test_rmse_mm": rmse, "mean": float(np.mean(rmse)),
                         "learning_rate": runs[0]["learning_rate"],
                         "zero_shot_calibrated_rmse_mm": runs[0]["test"]["zero_shot_calibrated"]["rmse_mm"],
                         "constant_rmse_mm": runs[0]["test"]["constant"]["rmse_mm"]}
    return summary
