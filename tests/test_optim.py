"""Separate rates for the adapters and the head, built the Trainer's way; a blow-up is reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from depth_lora.data.dataset import DepthDataset, LabelScheme, PreparedCapture
from depth_lora.errors import ConfigError
from depth_lora.model.checkpoints import build_model
from depth_lora.model.lora import apply_lora
from depth_lora.training.config import TrainConfig
from depth_lora.training.losses import build_loss
from depth_lora.training.optim import part_of
from depth_lora.training.run import run_training
from depth_lora.training.trainer import DIVERGED_RATIO, DepthTrainer, make_compute_metrics, use_log_lines

LABELS = LabelScheme("minmax", 500.0, 1500.0)
RATES = {"body": (1e-3, 0.01), "head": (1e-4, 0.0)}


def captures(n: int, seed: int = 0) -> list[PreparedCapture]:
    """Smooth random scenes at 28 x 42: depth rising left to right, brighter where nearer."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        depth = np.tile(np.linspace(600, 1400, 42, dtype=np.float32), (28, 1)) + rng.normal(0, 20, (28, 42))
        rgb = np.repeat((255 * (1500 - depth) / 1000).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
        out.append(PreparedCapture(f"c{i}", rgb, depth.astype(np.float32), (28, 42)))
    return out


def trainer_for(model, tmp_path, **kwargs) -> DepthTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                             remove_unused_columns=False, label_names=["labels", "valid_mask"],
                             per_device_train_batch_size=2,
                             learning_rate=RATES["body"][0], weight_decay=RATES["body"][1], **kwargs)
    return DepthTrainer(model=model, args=args, loss_fn=build_loss("mse"), label_scheme=LABELS,
                        part_rates=RATES, train_dataset=DepthDataset(captures(4), LABELS),
                        eval_dataset=DepthDataset(captures(2, seed=1), LABELS),
                        compute_metrics=make_compute_metrics(LABELS))


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_the_optimiser_gives_the_body_and_the_head_their_own_rate_and_decay(tmp_path, finetune):
    model = build_model("tiny")[0]
    if finetune == "lora":
        model = apply_lora(model, rank=4, targets=("qkv", "neck"), train_head=True)
    optimizer = trainer_for(model, tmp_path).create_optimizer()
    groups = {g["name"]: g for g in optimizer.param_groups}
    # LoRA matrices are all weights (decayed); a full fine-tune also has the body's biases and norms
    no_decay = {"head_no_decay"} | ({"body_no_decay"} if finetune == "full" else set())
    assert set(groups) == {"body", "head"} | no_decay
    assert groups["body"]["lr"] == 1e-3 and groups["body"]["weight_decay"] == 0.01
    assert groups["head"]["lr"] == 1e-4 and groups["head"]["weight_decay"] == 0.0
    assert all(groups[name]["weight_decay"] == 0.0 for name in no_decay)
    # every trainable parameter in exactly one group, in the right part
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    grouped = [(g["name"].split("_")[0], id(p)) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(i for _, i in grouped) == sorted(names)
    assert all(part_of(names[i]) == part for part, i in grouped)
    body = [names[i] for part, i in grouped if part == "body"]
    if finetune == "lora":
        assert body and all(".lora_" in n for n in body)  # the adapters, nothing else of the backbone
    else:
        assert any(n.startswith("backbone.") for n in body) and any(n.startswith("neck.") for n in body)


def test_loraplus_puts_the_b_matrices_in_their_own_group_at_a_multiple_of_the_rate(tmp_path):
    model = apply_lora(build_model("tiny")[0], rank=4, targets=("qkv", "neck"), train_head=True)
    trainer = trainer_for(model, tmp_path)
    trainer.part_rates = TrainConfig(model="tiny", learning_rate=1e-3, loraplus_ratio=16).part_rates()
    groups = {g["name"]: g for g in trainer.create_optimizer().param_groups}
    assert groups["lora_B"]["lr"] == pytest.approx(16e-3) and groups["body"]["lr"] == 1e-3
    names = {id(p): n for n, p in model.named_parameters()}
    assert {".lora_B." in names[id(p)] for p in groups["lora_B"]["params"]} == {True}
    assert {".lora_A." in names[id(p)] for p in groups["body"]["params"]} == {True}
    assert all("head" in names[id(p)].split(".") for p in groups["head"]["params"])
    with pytest.raises(ConfigError, match="--loraplus-ratio .* needs --finetune lora"):
        TrainConfig(model="tiny", finetune="full", loraplus_ratio=16)
    with pytest.raises(ConfigError, match="--loraplus-ratio must be > 0"):
        TrainConfig(model="tiny", loraplus_ratio=0)


class BlowUpAt(TrainerCallback):
    """Adds a large constant to the head's last convolution at one step: the depth then leaves
    the labels' range by orders of magnitude, whatever the seed or the precision."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.head.conv3.bias += 1000.0


def test_a_validation_rmse_above_twice_the_best_is_reported_and_the_best_checkpoint_kept(tmp_path, capsys):
    trainer = trainer_for(build_model("tiny", seed=0)[0], tmp_path, max_steps=5, eval_strategy="steps",
                          eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
                          metric_for_best_model="rmse_mm", greater_is_better=False, logging_steps=1)
    trainer.add_callback(BlowUpAt(3))
    use_log_lines(trainer, progress=True)
    trainer.train()
    lines = [line for line in capsys.readouterr().out.splitlines() if "val RMSE" in line]
    assert len(lines) == 5
    assert not any("DIVERGED" in line for line in lines[:2])
    assert all("DIVERGED" in line and "the kept checkpoint stays the best one" in line for line in lines[2:])
    ratios = [e["eval_rmse_over_best"] for e in trainer.state.log_history if "eval_rmse_over_best" in e]
    assert ratios[0] == 1.0 and all(r > DIVERGED_RATIO for r in ratios[2:])  # logged for TensorBoard too
    assert int(trainer.state.best_model_checkpoint.rsplit("-", 1)[1]) <= 2


def test_head_rates_are_training_options_recorded_with_the_run(tmp_path):
    from depth_lora.synthetic.demo import generate_demo_captures

    generate_demo_captures(tmp_path / "data", 6, seed=1, size_hw=(96, 128), workers=1)
    cfg = TrainConfig(data=str(tmp_path / "data"), output=str(tmp_path / "out"), model="tiny", max_steps=2,
                      batch_size=2, image_size=[56, 84], learning_rate=1e-3, head_learning_rate=1e-4,
                      head_weight_decay=0.05, precision="fp32")
    run_training(cfg, progress=False)
    record = json.loads((tmp_path / "out" / "depth_lora.json").read_text())
    groups = {g["name"]: g for g in record["optimizer_groups"]}
    assert groups["head"]["learning_rate"] == 1e-4 and groups["head"]["weight_decay"] == 0.05
    assert groups["body"]["learning_rate"] == 1e-3 and groups["body"]["parameters"] > 0
    assert record["config"]["head_learning_rate"] == 1e-4
    with pytest.raises(ConfigError, match="--head-learning-rate needs a trained head"):
        TrainConfig(recipe="original", head_learning_rate=1e-4)
    with pytest.raises(ConfigError, match="--head-learning-rate must be > 0"):
        TrainConfig(head_learning_rate=0.0)


@pytest.mark.parametrize("variant", ["use_rslora", "use_dora"])
def test_rslora_and_dora_train_save_and_reload_every_adapter_weight(tmp_path, variant):
    from depth_lora.inference.predict import load_bundle
    from depth_lora.synthetic.demo import generate_demo_captures

    generate_demo_captures(tmp_path / "data", 6, seed=2, size_hw=(96, 128), workers=1)
    out = tmp_path / "out"
    cfg = TrainConfig(data=str(tmp_path / "data"), output=str(out), model="tiny", max_steps=2, batch_size=2,
                      image_size=[56, 84], precision="fp32", **{variant: True})
    result = run_training(cfg, progress=False)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["use_rslora"] is (variant == "use_rslora")
    assert adapter["use_dora"] is (variant == "use_dora")
    trained = {k: v for k, v in result.model.state_dict().items() if "lora_" in k}
    if variant == "use_dora":  # DoRA's learned magnitudes train beside the low-rank matrices
        assert any("lora_magnitude_vector" in k for k in trained)
    reloaded = {k: v for k, v in load_bundle(out, "cpu", precision="fp32").model.state_dict().items()
                if "lora_" in k}
    assert trained.keys() == reloaded.keys()
    assert all(torch.equal(trained[k], reloaded[k]) for k in trained)
    assert ("rsLoRA" if variant == "use_rslora" else "DoRA") in json.loads(
        (out / "depth_lora.json").read_text())["recipe_line"]
