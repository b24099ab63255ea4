"""The domain-adaptation experiment: its protocol (selection on validation, one test scoring, a
learning curve) runs end to end in quick mode (slow: about 2 minutes), and its helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForDepthEstimation

# Research code lives outside the package (experiments/), run from a source checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "domain_adaptation"))

from experiment import (
    CURVE_METHODS,
    METHODS,
    QUICK,
    VARIANT_METHOD,
    VARIANTS,
    nested_subsets,
    run_experiment,
    structure_scores,
    t_interval,
)
from heads import run_head_comparison

FIVE_ROWS = {"fine_tuned", "fine_tuned_aligned", "zero_shot_calibrated", "zero_shot_aligned", "constant"}


def test_structure_score_ignores_scale_and_offset_and_is_zero_for_a_constant_map():
    rng = np.random.default_rng(0)
    target = 1000 + 200 * rng.random((60, 80))
    target[5:9, 10:30] = np.nan
    assert structure_scores(0.5 * target + 300, target)["corr"] == pytest.approx(1.0)
    assert structure_scores(0.5 * target + 300, target)["detail_corr"] == pytest.approx(1.0)
    assert structure_scores(np.full_like(target, 900.0), target) == {"corr": 0.0, "detail_corr": 0.0}
    # A smooth ramp follows a ramp-plus-texture target overall but none of its detail.
    ramp = np.tile(np.linspace(800, 1200, 80), (60, 1))
    scores = structure_scores(ramp, ramp + 30 * rng.standard_normal(ramp.shape))
    assert scores["corr"] > 0.9 and abs(scores["detail_corr"]) < 0.1


def test_seed_interval_uses_students_t_at_every_sample_size():
    # 2.201 is t(0.975) with 11 degrees of freedom; a normal 1.96 would be too narrow.
    values = np.arange(12.0)
    half = (t_interval(values)[1] - t_interval(values)[0]) / 2
    assert half == pytest.approx(2.201 * values.std(ddof=1) / np.sqrt(12), rel=1e-3)
    assert t_interval([4.0]) == [4.0, 4.0]


def test_learning_curve_subsets_are_nested_whole_sessions_of_the_training_split():
    keys = [f"c{i:02d}" for i in range(20)]
    groups = {k: f"s{i // 4}" for i, k in enumerate(keys)}  # 5 sessions of 4
    subsets = nested_subsets(keys, groups, (4, 10, 20, 30), seed=0)
    assert sorted(subsets) == [4, 10]  # sizes >= the whole split are the whole split's run
    assert len(subsets[4]) == 4 and len({groups[k] for k in subsets[4]}) == 1  # one whole session
    assert set(subsets[4]) < set(subsets[10]) and len(subsets[10]) == 10
    assert len({groups[k] for k in subsets[10]}) == 3  # two whole sessions, then part of a third


@pytest.mark.slow
def test_quick_experiment_selects_on_validation_scores_test_once_and_plots(tmp_path):
    out = tmp_path / "exp"
    run_experiment(out, quick=True)
    results = json.loads((out / "results.json").read_text())
    split = json.loads((out / "target_split.json").read_text())
    assert len(split["test"]) >= 3 and split["val"] and split["train"]
    rows = results["rows"]
    selection = [r for r in rows if r["stage"] == "selection"]
    final = [r for r in rows if r["stage"] == "final"]
    curve = [r for r in rows if r["stage"] == "curve"]
    assert len(selection) + len(final) + len(curve) == len(rows)

    # Selection: validation numbers only, every method over the same rate grid and steps; labels
    # and loss compared for the recommended placement; no training run ever saw a test capture.
    variant = results["variant"]
    assert variant in VARIANTS
    assert {r["variant"] for r in selection if r["method"] == VARIANT_METHOD} == set(VARIANTS)
    for method in METHODS:
        grid = [r for r in selection if r["method"] == method and r["variant"] == variant]
        assert sorted(r["learning_rate"] for r in grid) == sorted(QUICK.learning_rates), method
        chosen = results["chosen"][method]
        assert chosen["val_rmse_mm"] == min(r["val"]["rmse_mm"] for r in grid), method
    for row in selection:
        assert "test" not in row and "test_per_capture" not in row
        assert np.isfinite(row["val"]["rmse_mm"]) and 0 < row["val"]["step"] <= QUICK.adapt_steps
        run_split = json.loads((out / row["run"] / "split.json").read_text())
        assert run_split["test"] == [], row["run"]
        assert run_split["train"] == split["train"] and run_split["val"] == split["val"], row["run"]
        assert "test" not in json.loads((out / row["run"] / "metrics.json").read_text())

    # Final: every method x seed at its chosen rate, seed 0 is the selection run, five rows with
    # bootstrap intervals on every test capture; the summary's intervals hold the mean.
    assert sorted((r["method"], r["seed"]) for r in final) == sorted(
        (m, s) for m in METHODS for s in QUICK.seeds)
    for row in final:
        assert set(row["test"]) == FIVE_ROWS
        assert row["learning_rate"] == results["chosen"][row["method"]]["learning_rate"]
        for metrics in row["test"].values():
            lo, hi = metrics["rmse_mm_ci95"]
            assert metrics["captures"] == len(split["test"]) and lo <= metrics["rmse_mm"] <= hi
    assert {r["run"] for r in final if r["seed"] == 0} == {c["run"] for c in results["chosen"].values()}
    assert all(r["reused_selection_run"] == (r["seed"] == 0) for r in final)
    for name in [*METHODS, *(f"{m} (aligned)" for m in METHODS), "zero_shot_calibrated", "constant"]:
        s = results["summary"][name]
        for interval in ("rmse_mm_ci95_captures", "rmse_mm_ci95_seeds"):
            assert s[interval][0] - 1e-6 <= s["rmse_mm"] <= s[interval][1] + 1e-6, (name, interval)
    params = {r["method"]: r["trainable_params"] for r in final}
    assert params["lora_qkv"] < params["lora_qkv_head"] < params["recommended"] < params["full_finetune"]
    assert params["full_finetune"] == params["scratch"]

    # Learning curve: the curve methods at each size, on nested training subsets; the whole
    # training split is the final seed-0 run; test numbers for each.
    sizes = [*QUICK.curve_captures, len(split["train"])]
    assert sorted((r["method"], r["train_captures"]) for r in curve) == sorted(
        (m, n) for m in CURVE_METHODS for n in sizes)
    for row in curve:
        assert set(row["test"]) == FIVE_ROWS and row["seed"] == 0
        run_split = json.loads((out / row["run"] / "split.json").read_text())
        assert len(run_split["train"]) == row["train_captures"]
        assert set(run_split["train"]) <= set(split["train"])
        assert run_split["test"] == []
    for name in (*CURVE_METHODS, "zero_shot_calibrated"):
        assert [p[0] for p in results["curve"][name]] == sizes, name

    structure = results["structure"]
    assert set(structure["methods_seed0"]) == set(METHODS)
    assert all(-1 <= s["corr"] <= 1 for s in structure["zero_shot_aligned_by_input"].values())
    AutoModelForDepthEstimation.from_pretrained(out / "pretrained")  # a normal model folder
    table = (out / "table.md").read_text()
    for heading in ("## Selection", "## Test split", "## Learning curve", "## Structure"):
        assert heading in table
    for name in ("learning_curves.png", "learning_curve_captures.png", "predictions.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert sorted(p.name for p in (out / "target_test" / "images").iterdir()) == sorted(
        f"{k}_color.png" for k in split["test"])

    # The head comparison reuses this folder: metric heads at two ranges, chosen on validation.
    heads = run_head_comparison(out)
    assert set(heads["summary"]) == {"relative (recommended)", "metric_3m", "metric_20m"}
    for row in heads["rows"]:
        meta = json.loads((out / row["run"] / "depth_lora.json").read_text())
        assert meta["head"]["type"] == "metric" and meta["head"]["converted"]
        assert meta["labels"]["kind"] == "metric"
        assert json.loads((out / row["run"] / "split.json").read_text())["test"] == []
    assert (out / "heads.json").is_file()
