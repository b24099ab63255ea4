"""The domain-adaptation experiment: its protocol (selection on validation, one test scoring, a
learning curve, the completion arm) runs end to end in quick mode (slow: 11.5 minutes alone on 2
AVX2 cores, fp32), and its helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForDepthEstimation

# Research code lives outside the package (experiments/), run from a source checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "domain_adaptation"))

from completion import SETTINGS as COMPLETION_SETTINGS
from completion import run_completion_arm
from completion import targets as completion_targets
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
from selection import choose_rate, diverged, ladder_step

from depth_lora.errors import DataError

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


def test_a_run_diverged_when_validation_rises_above_twice_its_best_so_far():
    assert diverged([(10, 500.0), (20, 300.0), (30, 610.0)])
    assert not diverged([(10, 500.0), (20, 300.0), (30, 590.0)])
    assert not diverged([(10, 3000.0), (20, 400.0), (30, 350.0)])  # a high start is learning, not a blow-up


def test_learning_rate_ladder_steps_one_notch_of_1_2_5():
    assert [ladder_step(r, up=True) for r in (5e-4, 1e-3, 2e-3, 5e-3)] == [1e-3, 2e-3, 5e-3, 1e-2]
    assert [ladder_step(r, up=False) for r in (5e-4, 1e-3, 2e-3, 1e-2)] == [2e-4, 5e-4, 1e-3, 5e-3]


def _fake_runs(rmse_by_rate_seed: dict, blow_ups=()):
    """train(rate, seed) for choose_rate, from a table; records every call."""
    calls = []

    def train(rate, seed):
        calls.append((rate, seed))
        return {"seed": seed, "val": {"rmse_mm": rmse_by_rate_seed[(rate, seed)]},
                "diverged": (rate, seed) in blow_ups}

    return train, calls


def test_selection_ranks_on_the_mean_over_seeds_and_counts_diverged_runs():
    # 2e-3: mean 350 (a seed that blew up early); seed 0 alone would have picked it.
    table = {(1e-3, 0): 300, (1e-3, 1): 300, (2e-3, 0): 200, (2e-3, 1): 500,
             (5e-4, 0): 310, (5e-4, 1): 320, (5e-3, 0): 400, (5e-3, 1): 420}
    train, _ = _fake_runs(table, blow_ups={(2e-3, 1)})
    choice = choose_rate(train, [5e-4, 1e-3, 2e-3, 5e-3], seeds=(0, 1))
    assert choice["learning_rate"] == 1e-3 and not choice["at_edge"] and choice["extended"] == []
    assert choice["tried"][2e-3]["diverged"] == 1 and choice["tried"][2e-3]["val_rmse_mm"] == 350
    assert choice["tried"][1e-3] == {"val_rmse_mm": 300, "val_rmse_mm_per_seed": [300, 300], "seeds": [0, 1],
                                     "diverged": 0}


def test_selection_at_the_edge_extends_the_grid_one_step_before_accepting():
    table = {(rate, seed): rmse for rate, rmse in ((1e-3, 400), (2e-3, 300), (5e-3, 250)) for seed in (0, 1)}
    train, calls = _fake_runs(table)
    choice = choose_rate(train, [1e-3, 2e-3], seeds=(0, 1))  # best at the top: 5e-3 is tried, and wins
    assert choice["extended"] == [5e-3] and choice["learning_rate"] == 5e-3 and choice["at_edge"]
    assert (5e-3, 0) in calls and (5e-3, 1) in calls and (1e-2, 0) not in calls  # one step per side
    table[(5e-3, 0)] = table[(5e-3, 1)] = 350  # the extension loses: the edge choice stands, inside the grid
    choice = choose_rate(_fake_runs(table)[0], [1e-3, 2e-3], seeds=(0, 1))
    assert choice["learning_rate"] == 2e-3 and not choice["at_edge"]


def test_experiment_refuses_a_used_folder_and_resumes_only_an_unfinished_one(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty.*--resume"):
        run_experiment(tmp_path / "old", quick=True)
    with pytest.raises(DataError, match="no results.json to resume"):
        run_experiment(tmp_path / "old", quick=True, resume=True)
    assert (tmp_path / "old" / "notes.txt").read_text() == "mine"


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

    # Selection: validation numbers only, every method over the same rate grid (extended one step
    # where the choice sat at its edge) on every selection seed, chosen on the mean over seeds with
    # diverged runs counted; labels and loss compared for the recommended placement; no training
    # run ever saw a test capture.
    seeds = sorted(QUICK.selection_seeds)
    variant = results["variant"]
    assert variant in VARIANTS
    assert {r["variant"] for r in selection if r["method"] == VARIANT_METHOD} == set(VARIANTS)
    for method in METHODS:
        grid = [r for r in selection if r["method"] == method and r["variant"] == variant]
        rates = sorted({r["learning_rate"] for r in grid})
        chosen = results["chosen"][method]
        assert set(QUICK.learning_rates) <= set(rates) and len(rates) <= len(QUICK.learning_rates) + 2
        assert sorted(set(rates) - set(QUICK.learning_rates)) == sorted(chosen["extended"]), method
        assert QUICK.learning_rates[-1] in rates and len(chosen["extended"]) >= 1  # a 2-rate grid: an edge
        per_rate = {rate: [r for r in grid if r["learning_rate"] == rate] for rate in rates}
        assert all(sorted(r["seed"] for r in runs) == seeds for runs in per_rate.values()), method
        mean = {rate: np.mean([r["val"]["rmse_mm"] for r in runs]) for rate, runs in per_rate.items()}
        assert chosen["learning_rate"] == min(rates, key=mean.get), method
        assert chosen["val_rmse_mm"] == pytest.approx(mean[chosen["learning_rate"]]), method
        assert chosen["diverged"] == sum(r["diverged"] for r in per_rate[chosen["learning_rate"]])
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
    assert all(r["reused_selection_run"] == (r["seed"] in seeds) for r in final)
    assert set(results["targets"]["worst_seed_over_median"]) == set(METHODS)
    assert results["targets"]["recommended_over_full_finetune"] > 0
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
    for heading in ("## Selection", "## Test split", "## Steadiness", "## Learning curve", "## Structure"):
        assert heading in table
    for name in ("learning_curves.png", "learning_curve_captures.png", "predictions.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert sorted(p.name for p in (out / "target_test" / "images").iterdir()) == sorted(
        f"{k}_color.png" for k in split["test"])

    # Resumed after its final stage, the experiment reuses every run: the same rows, nothing retrained.
    results["finished_stages"] = ["data", "pretrain", "selection", "final"]
    (out / "results.json").write_text(json.dumps(results))
    again = run_experiment(out, quick=True, resume=True)
    assert again["resumed"] == 1 and again["finished_stages"][-1] == "structure"
    assert json.loads(json.dumps(again["rows"])) == rows and again["chosen"] == results["chosen"]
    with pytest.raises(DataError, match="finished experiment"):
        run_experiment(out, quick=True, resume=True)

    # The head comparison reuses this folder: metric heads at two ranges, chosen on validation.
    heads = run_head_comparison(out)
    assert set(heads["summary"]) == {"relative (recommended)", "metric_3m", "metric_20m"}
    for row in heads["rows"]:
        meta = json.loads((out / row["run"] / "depth_lora.json").read_text())
        assert meta["head"]["type"] == "metric" and meta["head"]["converted"]
        assert meta["labels"]["kind"] == "metric"
        assert json.loads((out / row["run"] / "split.json").read_text())["test"] == []
    assert (out / "heads.json").is_file()

    # The completion arm reuses it too: completers chosen on validation, scored on the test captures.
    arm = run_completion_arm(out)
    assert arm["chosen"] in COMPLETION_SETTINGS
    finals = [r for r in arm["rows"] if r.get("stage") == "final"]
    assert sorted(r["seed"] for r in finals) == sorted(QUICK.seeds)
    for row in arm["rows"]:
        assert json.loads((out / row["run"] / "split.json").read_text())["test"] == []
    for row in finals:
        assert {"completer", "completer_start", "harmonic", "local_fit"} <= set(row["test"])
        assert "border" in row["test"]["completer"]  # a kind training never draws is scored
    assert set(arm["targets"]) == {"blobs", "edge_bands", "other_capture"}
    assert [r["train_captures"] for r in arm["curve"]] == sizes
    assert (out / "completion_curve.png").stat().st_size > 10_000


def test_completion_targets_compare_with_the_best_classical_fill():
    summary = {m: {k: {"mean": v} for k, v in zip(("blobs", "edge_bands", "other_capture"), values,
                                                  strict=True)}
               for m, values in {"completer": (20.0, 40.0, 30.0), "harmonic": (30.0, 60.0, 29.0),
                                 "nearest": (50.0, 70.0, 31.0), "telea": (45.0, 79.0, 35.0)}.items()}
    out = completion_targets(summary)
    assert out["blobs"]["ratio"] == pytest.approx(20 / 30) and not out["blobs"]["met"]
    assert out["other_capture"]["best_classical_mm"] == 29.0 and not out["other_capture"]["met"]
    summary["completer"]["edge_bands"]["mean"] = 29.0
    assert completion_targets(summary)["edge_bands"]["met"]


def test_the_follow_ups_refuse_a_folder_without_the_main_experiment(tmp_path):
    for follow_up in (run_head_comparison, run_completion_arm):
        with pytest.raises(DataError, match="no results.json"):
            follow_up(tmp_path)
