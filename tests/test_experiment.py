"""The domain-adaptation experiment's quick mode runs end to end (slow: a few minutes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoModelForDepthEstimation

from depth_lora.experiment import METHODS, run_experiment


@pytest.mark.slow
def test_quick_experiment_pretrains_adapts_evaluates_and_plots(tmp_path):
    results = run_experiment(tmp_path / "exp", quick=True)
    rows = results["rows"]
    assert sorted({r["method"] for r in rows}) == sorted(METHODS)
    for row in rows:
        assert np.isfinite(row["test"]["rmse_mm"]) and row["trainable_params"] > 0
        assert row["curve"], row["method"]  # validation RMSE logged during training
    by_method = {r["method"]: r["trainable_params"] for r in rows}
    assert by_method["lora_r4"] < by_method["lora_r8"] < by_method["lora_r16"] < by_method["lora_r16_head"]
    assert by_method["lora_r16_head"] < by_method["lora_r16_all_head"] < by_method["full_finetune"]
    assert by_method["full_finetune"] == by_method["scratch"]
    # Every method was trained and tested on the experiment's one target split.
    split = json.loads((tmp_path / "exp" / "target_split.json").read_text())
    for method in METHODS:
        run_split = json.loads((tmp_path / "exp" / "runs" / f"{method}_s0" / "split.json").read_text())
        assert run_split["test"] == split["test"] and run_split["train"] == split["train"], method
    # The pretrained model is a normal model folder.
    AutoModelForDepthEstimation.from_pretrained(tmp_path / "exp" / "pretrained")
    for name in ("results.json", "table.md", "learning_curves.png", "predictions.png"):
        assert (tmp_path / "exp" / name).is_file(), name
    assert len(json.loads((tmp_path / "exp" / "results.json").read_text())["rows"]) == len(rows)
