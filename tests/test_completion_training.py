"""Learning to complete from a user's own captures: self-supervised examples (data.completion), the
completion loss, and a tiny completer trained with the project's Trainer, saved and reloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import TrainingArguments

from depth_lora.data.completion import (
    HIDDEN_WEIGHT,
    MIN_VISIBLE_SHARE,
    TRAINING_HOLE_KINDS,
    CompletionDataset,
    hide_for_training,
    prompt_depth_mm,
)
from depth_lora.data.dataset import PreparedCapture, prepare_captures
from depth_lora.data.transforms import BatchTransform
from depth_lora.errors import ConfigError, DataError
from depth_lora.model.lora import apply_lora
from depth_lora.model.prompt import build_completer, completed_depth, start_residual_head
from depth_lora.training.losses import CompletionLoss
from depth_lora.training.trainer import DepthTrainer, make_completion_metrics

SIZE_HW = (126, 196)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> list[PreparedCapture]:
    """16 generated Zivid-like captures (sessions of a bin cell) at the tiny model's input size."""
    from depth_lora.data.captures import find_captures
    from depth_lora.synthetic.demo import generate_demo_captures

    folder = tmp_path_factory.mktemp("completion_captures")
    generate_demo_captures(folder, 16, seed=11, size_hw=(240, 388))
    return prepare_captures(find_captures(folder), SIZE_HW, progress=False, cache=False)


@pytest.mark.parametrize("kind", TRAINING_HOLE_KINDS)
def test_training_holes_hide_only_measured_pixels_and_keep_enough_visible(prepared, kind):
    for i, capture in enumerate(prepared[:6]):
        depth = capture.depth_mm
        measured = np.isfinite(depth)
        hidden = hide_for_training(depth, kind, np.random.default_rng(i), ~np.isfinite(prepared[-1].depth_mm))
        assert not (hidden & ~measured).any()
        assert (measured & ~hidden).sum() >= MIN_VISIBLE_SHARE * measured.sum() - 1
    assert any(hide_for_training(c.depth_mm, kind, np.random.default_rng(0)).any() for c in prepared[:6])


def test_the_prompt_never_sees_a_hidden_pixel_and_has_no_hole(prepared):
    depth = prepared[0].depth_mm
    measured = np.isfinite(depth)
    hidden = hide_for_training(depth, "blobs", np.random.default_rng(3))
    visible = measured & ~hidden
    prompt = prompt_depth_mm(depth, visible, (63, 98))
    changed = np.where(hidden, depth + 500.0, depth)  # what the camera measured under the hole
    assert np.isfinite(prompt).all() and prompt.shape == (63, 98)
    np.testing.assert_array_equal(prompt_depth_mm(changed, visible, (63, 98)), prompt)
    lo, hi = depth[visible].min(), depth[visible].max()
    assert lo - 1e-3 <= prompt.min() and prompt.max() <= hi + 1e-3  # harmonic: within what it saw


def test_items_weigh_hidden_pixels_up_and_never_supervise_the_cameras_own_holes(prepared):
    item = CompletionDataset(prepared, fixed=True).example(2)
    measured, hidden, weight = item["valid_mask"], item["hidden_mask"], item["loss_weight"]
    assert hidden.any() and not (hidden & ~measured).any()
    np.testing.assert_array_equal(weight[hidden], HIDDEN_WEIGHT)
    np.testing.assert_array_equal(weight[measured & ~hidden], 1.0)
    np.testing.assert_array_equal(weight[~measured], 0.0)
    np.testing.assert_array_equal(item["labels"][~measured], 0.0)
    assert item["prompt_depth"].shape == (1, 63, 98)


def test_validation_items_are_fixed_and_training_items_follow_the_seed(prepared):
    val = CompletionDataset(prepared, fixed=True, seed=5)
    np.testing.assert_array_equal(val.example(1)["hidden_mask"], val.example(1)["hidden_mask"])
    train = CompletionDataset(prepared, draws=4, seed=5)
    bank = [train.example(1, d)["hidden_mask"] for d in range(4)]
    assert all((a != bank[0]).any() for a in bank[1:])  # each draw of the bank is its own hole
    again = CompletionDataset(prepared, draws=4, seed=5, workers=2)  # made in worker processes
    for d, hidden in enumerate(bank):
        np.testing.assert_array_equal(again.example(1, d)["hidden_mask"], hidden)
        same_prompt = again.example(1, d)["prompt_depth"]
        np.testing.assert_array_equal(same_prompt, train.example(1, d)["prompt_depth"])
    picks = []
    for _ in range(2):
        torch.manual_seed(0)
        picks.append([train.example(1)["hidden_mask"] for _ in range(6)])
    for a, b in zip(*picks, strict=True):  # torch's RNG (the Trainer seeds it) picks the draw
        np.testing.assert_array_equal(a, b)
    assert any((a != picks[0][0]).any() for a in picks[0][1:])


def test_unknown_hole_kind_or_a_capture_with_nothing_measured_is_one_line(prepared):
    for kind in ("scratches", "border"):  # border: a scoring kind that training never draws
        with pytest.raises(ConfigError, match="training hole kinds must be some of other_capture, blobs, "):
            CompletionDataset(prepared, kinds=(kind,))
    nothing = np.full_like(prepared[0].depth_mm, np.nan)
    empty = PreparedCapture("demo-empty", prepared[0].rgb, nothing, (240, 388))
    with pytest.raises(DataError, match="demo-empty: no measured depth pixel"):
        CompletionDataset([*prepared[:2], empty])


def test_a_flip_mirrors_prompt_masks_and_weights_with_the_image(prepared):
    batch = torch.utils.data.default_collate([CompletionDataset(prepared, fixed=True)[i] for i in range(4)])
    torch.manual_seed(0)
    out = BatchTransform(flip=True)(batch, training=True)
    flipped = [bool((out["labels"][i] != batch["labels"][i]).any()) for i in range(4)]
    assert any(flipped) and not all(flipped)
    for i, was in enumerate(flipped):
        for key in ("valid_mask", "hidden_mask", "loss_weight", "prompt_depth"):
            expected = batch[key][i].flip(-1) if was else batch[key][i]
            assert torch.equal(out[key][i], expected), key


def test_completion_loss_counts_errors_in_units_of_each_prompts_range():
    g = torch.Generator().manual_seed(0)
    target = 500 + 500 * torch.rand(2, 8, 8, generator=g)
    prompt = 500 + 500 * torch.rand(2, 1, 4, 4, generator=g)
    valid, weight = torch.rand(2, 8, 8, generator=g) > 0.3, torch.ones(2, 8, 8)
    loss = CompletionLoss()
    assert loss(target, target, valid, weight, prompt) == 0
    pred = target + 30 * torch.randn(2, 8, 8, generator=g)
    a = loss(pred, target, valid, weight, prompt)
    torch.testing.assert_close(loss(10 * pred, 10 * target, valid, weight, 10 * prompt), a)  # unit-free
    garbage = torch.where(valid, pred, torch.full_like(pred, 1e9))
    torch.testing.assert_close(loss(garbage, target, valid, weight, prompt), a)  # unmeasured: no say


def test_a_tiny_completer_starts_as_the_harmonic_prompt_trains_every_part_and_reloads(prepared, tmp_path):
    """From demo-pretrained, residual output, LoRA + head + prompt branch, 40 steps: before training
    the completion is exactly the prompt (the classical fill) on every capture; training moves the
    adapters, the head and the prompt branch (each starts at zero somewhere); the saved adapter
    reloads to the same output. Whether the completer beats the prompt on held-out captures is a
    benchmark's question (experiments/), not this test's."""
    train, val = prepared[:12], prepared[12:]
    completer = build_completer("demo-pretrained")[0]
    start_residual_head(completer)
    model = apply_lora(completer, targets=("qkv", "out", "mlp"), train_head=True)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=40, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, learning_rate=1e-3, warmup_steps=4, eval_strategy="no",
        save_strategy="no", report_to=[], use_cpu=True, seed=0, remove_unused_columns=False,
        label_names=["labels", "valid_mask", "hidden_mask"], logging_steps=10, disable_tqdm=True)
    trainer = DepthTrainer(model=model, args=args, train_dataset=CompletionDataset(train),
                           eval_dataset=CompletionDataset(val, fixed=True), loss_fn=CompletionLoss(),
                           label_scheme=None, compute_metrics=make_completion_metrics())
    before = trainer.evaluate()
    assert before["eval_rmse_mm"] == pytest.approx(_prompt_rmse(CompletionDataset(val, fixed=True)), abs=0.05)
    trainer.train()
    moved = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, start[n])}
    for part in ("lora_B", "head.modules_to_save", "prompt_depth_layer.modules_to_save"):
        names = [n for n in start if part in n]
        assert names and all(n in moved for n in names), part
    assert np.isfinite(trainer.evaluate()["eval_rmse_mm"])

    model.save_pretrained(tmp_path / "adapter")
    base = build_completer("demo-pretrained")[0]
    start_residual_head(base)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    batch = torch.utils.data.default_collate([CompletionDataset(val, fixed=True)[0]])
    pixels = BatchTransform()(batch, training=False)["pixel_values"]
    model.eval()
    with torch.no_grad():
        a = model(pixel_values=pixels, prompt_depth=batch["prompt_depth"]).predicted_depth
        b = reloaded(pixel_values=pixels, prompt_depth=batch["prompt_depth"]).predicted_depth
    prompt = batch["prompt_depth"]
    torch.testing.assert_close(completed_depth(a, prompt), completed_depth(b, prompt))


def _prompt_rmse(dataset: CompletionDataset) -> float:
    """Hidden-pixel RMSE (mean over captures) of the prompt itself, upsampled: the harmonic fill the
    completer is given."""
    import torch.nn.functional as F

    values = []
    for i in range(len(dataset)):
        item = dataset.example(i)
        up = F.interpolate(torch.from_numpy(item["prompt_depth"])[None], size=item["labels"].shape,
                           mode="bilinear", align_corners=False)[0, 0].numpy()
        err = (up - item["labels"])[item["hidden_mask"]]
        values.append(float(np.sqrt(np.mean(err**2))))
    return float(np.mean(values))
