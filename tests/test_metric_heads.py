"""Metric heads and every model size: tiny-metric end to end, --head metric, --max-depth, Base/Large."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_capture
from depth_lora.errors import ConfigError
from depth_lora.evaluation.report import run_evaluation
from depth_lora.inference.predict import load_bundle, predict_depth_mm, predict_raw
from depth_lora.model.checkpoints import build_model
from depth_lora.model.choices import MODEL_ALIASES
from depth_lora.model.heads import head_type
from depth_lora.model.lora import apply_lora, trainable_parameters_line
from depth_lora.runs.folder import read_record
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training.config import TrainConfig
from depth_lora.training.run import run_training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric")
    generate_demo_captures(root / "data", 10, seed=9, size_hw=(120, 194), workers=1)
    return root / "data"


def config(data, out, **overrides) -> TrainConfig:
    values = dict(data=str(data), output=str(out), model="tiny-metric", max_steps=3, batch_size=2,
                  image_size=[42, 70], precision="fp32")
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def metric_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("metric_run") / "out"
    run_training(config(data, out), progress=False)
    return out


def test_short_names_map_to_the_published_checkpoints():
    assert TrainConfig(model="small").model == "depth-anything/Depth-Anything-V2-Small-hf"
    indoor_base = "depth-anything/Depth-Anything-V2-Metric-Indoor-Base-hf"
    assert TrainConfig(model="metric-indoor-base").model == indoor_base
    assert len(MODEL_ALIASES) == 9


def test_a_metric_head_learns_metric_labels_and_evaluate_adds_the_unaligned_zero_shot_row(data, metric_run):
    record = read_record(metric_run)
    assert record.labels["kind"] == "metric" and record.head == {"type": "metric", "max_depth": 20,
                                                                 "converted": False}
    report = run_evaluation(data, metric_run, split="all", progress=False, precision="fp32")
    assert report.methods[:3] == ["fine_tuned", "fine_tuned_aligned", "zero_shot"]
    # zero_shot is the base model's metres x 1000, nothing fitted: recompute it independently
    capture = load_capture(find_captures(data)[0])
    base, _ = build_model(str(metric_run / "base_model"))
    expected = predict_raw(base, capture.rgb, record.image_size_hw).numpy() * 1000.0
    row = next(r for r in report.captures if r["method"] == "zero_shot" and r["capture"] == capture.key)
    error = (expected - capture.depth_mm)[capture.valid_mask]
    assert row["rmse_mm"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-4)


def test_a_metric_run_predicts_merges_and_completes(data, metric_run, tmp_path):
    capture = load_capture(find_captures(data)[0])
    depth = predict_depth_mm(load_bundle(metric_run, device="cpu", precision="fp32"), capture.rgb)
    assert depth.shape == capture.size_hw and np.isfinite(depth).all() and (depth > 0).all()
    assert main(["merge", "--adapter", str(metric_run), "--output", str(tmp_path / "merged")]) == 0
    merged = predict_depth_mm(load_bundle(tmp_path / "merged", device="cpu", precision="fp32"), capture.rgb)
    np.testing.assert_allclose(merged, depth, rtol=1e-4, atol=0.05)
    assert main(["complete", str(data), "--adapter", str(metric_run), "--out", str(tmp_path / "c")]) == 0


def test_head_metric_turns_a_relative_checkpoint_into_a_metric_head_with_its_range(data, tmp_path):
    out = tmp_path / "out"
    cfg = config(data, out, model="demo-pretrained", head="metric", max_depth=4)
    result = run_training(cfg, progress=False)
    record = read_record(out)
    assert record.head == {"type": "metric", "max_depth": 4, "converted": True}
    assert json.loads((out / "train_config.json").read_text())["labels"] == "metric"
    bundle = load_bundle(out, device="cpu", precision="fp32")
    assert head_type(bundle.model) == "metric"
    capture = load_capture(find_captures(data)[0])
    depth = predict_depth_mm(bundle, capture.rgb)
    assert depth.max() <= 4000.0 + 1e-3  # sigmoid x 4 m can never say more than 4 m
    with torch.no_grad():  # the reloaded folder predicts what the trained model predicted
        trained = predict_raw(result.model, capture.rgb, record.image_size_hw).numpy() * 1000
    np.testing.assert_allclose(depth, trained, rtol=1e-4, atol=0.05)
    report = run_evaluation(data, out, split="all", progress=False)
    assert "zero_shot" not in report.methods  # the published checkpoint is relative: no metres to show
    assert "zero_shot_calibrated" in report.methods


@pytest.mark.parametrize("overrides, message", [
    ({"model": "tiny", "max_depth": 2}, "add --head metric"),
    ({"labels": "minmax"}, "its labels are metric"),
    ({"model": "tiny", "labels": "metric"}, "needs a metric head"),
])
def test_head_and_label_mismatches_are_one_line_errors(data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_training(config(data, tmp_path / "out", **overrides), progress=False)


# Large (335 M parameters) only under `slow`: the same code path as Base, 4x the memory and time.
@pytest.mark.parametrize("name, hidden", [("base-random", 768),
                                          pytest.param("large-random", 1024, marks=pytest.mark.slow)])
def test_base_and_large_architectures_get_lora_and_take_a_training_step(name, hidden):
    model, info = build_model(name)
    assert model.config.backbone_config.hidden_size == hidden
    model = apply_lora(model, rank=4, alpha=8, dropout=0.0, targets=("qkv", "out", "mlp", "neck"),
                       train_head=True)
    assert "trainable params" in trainable_parameters_line(model)
    pixels = torch.randn(1, 3, 28, 42)
    depth = model(pixel_values=pixels).predicted_depth
    assert depth.shape == (1, 28, 42)
    depth.mean().backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)
