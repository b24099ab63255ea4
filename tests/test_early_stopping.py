"""A run stops when its validation stops improving, keeps its best checkpoint, and says so."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from depth_lora.evaluation.verdict import kept_checkpoint_line as kept_line
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training import trainer as trainer_module
from depth_lora.training.config import EARLY_STOPPING, TrainConfig
from depth_lora.training.run import run_training

# The validation RMSE each evaluation reports (evaluations every 2 steps): best at the 2nd (step 4),
# then three in a row without a better one. The metrics are the run's input here, scripted so that
# where the run must stop does not depend on how a tiny model happens to learn on this CPU.
SCRIPTED_RMSE = [300.0, 250.0, 260.0, 255.0, 251.0, 100.0, 90.0, 80.0, 70.0, 60.0]


def scripted_metrics(*args, **kwargs):
    calls = iter(SCRIPTED_RMSE)

    def compute_metrics(eval_pred):
        return {"rmse_mm": next(calls), "mae_mm": 1.0, "abs_rel": 0.1, "delta1": 0.5}

    return compute_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    generate_demo_captures(folder, 10, seed=21, size_hw=(120, 194), workers=1)
    return folder


def test_a_run_stops_after_patience_evaluations_without_a_better_one_and_keeps_the_best(
        data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "make_compute_metrics", scripted_metrics)
    cfg = TrainConfig(data=str(data), output=str(tmp_path / "out"), model="demo-pretrained", max_steps=20,
                      eval_steps=2, batch_size=2, image_size=[70, 112], precision="fp32", early_stopping=3)
    result = run_training(cfg, progress=False)
    val = result.metrics["val"]
    assert val["global_step"] == 10 and val["max_steps"] == 20  # evaluations at 2, 4 (best), 6, 8, 10
    assert val["step"] == 4 and val["rmse_mm"] == 250.0 and val["stopped_early"] == 3
    record = json.loads((tmp_path / "out" / "depth_lora.json").read_text())
    assert record["best_checkpoint"].endswith("checkpoint-4") and record["global_step"] == 10
    assert record["config"]["early_stopping"] == 3
    kept = load_file(tmp_path / "out" / "checkpoint-4" / "adapter_model.safetensors")
    final = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert kept.keys() == final.keys() and all(torch.equal(kept[k], final[k]) for k in kept)
    assert "Training stopped at step 10 of 20: no better validation in 3 evaluations" in kept_line(val)


def test_early_stopping_off_runs_every_step_and_the_recipes_say_which(data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "make_compute_metrics", scripted_metrics)
    cfg = TrainConfig(data=str(data), output=str(tmp_path / "out"), model="demo-pretrained", max_steps=12,
                      eval_steps=2, batch_size=2, image_size=[70, 112], precision="fp32", early_stopping=0)
    val = run_training(cfg, progress=False).metrics["val"]
    assert val["global_step"] == 12 and "stopped_early" not in val
    assert "stopped" not in kept_line(val)
    assert TrainConfig(recipe="recommended").early_stopping == EARLY_STOPPING > 0
    assert TrainConfig(recipe="original").early_stopping == 0  # the seed project ran every step
    with pytest.raises(Exception, match="--early-stopping must be >= 0"):
        TrainConfig(early_stopping=-1)
