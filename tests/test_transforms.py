"""Batch transforms on the device: normalisation like the processor, flip moving image and labels
together, augmentation in training only, reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from depth_lora.data.dataset import DepthDataset, LabelScheme, PreparedCapture, rgb_to_pixel_values
from depth_lora.data.transforms import JITTER_STRENGTH, BatchTransform, flip_together
from depth_lora.model.checkpoints import build_model
from depth_lora.training.losses import build_loss
from depth_lora.training.trainer import DepthTrainer

H, W = 28, 42


def near_left_capture() -> PreparedCapture:
    """Left half near (500 mm) and bright; right half far (1500 mm), dark, with a hole band at the
    top: flipping must move all three to the other side."""
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[:, : W // 2] = 230
    rgb[:, W // 2 :] = 20
    depth = np.full((H, W), 1500.0, dtype=np.float32)
    depth[:, : W // 2] = 500.0
    depth[: H // 4, W // 2 :] = np.nan
    return PreparedCapture("near_left", rgb, depth, (H, W))


def batch_of(captures: list[PreparedCapture], labels: LabelScheme) -> dict[str, torch.Tensor]:
    items = list(DepthDataset(captures, labels))
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


LABELS = LabelScheme("minmax", 500.0, 1500.0)  # near -> 0, far -> 1


def test_device_normalisation_equals_the_processors_imagenet_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    batch = batch_of([PreparedCapture("c", rgb, np.ones((H, W), np.float32), (H, W))], LABELS)
    pixels = BatchTransform()(batch, training=True)["pixel_values"][0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)  # float64, by hand
    np.testing.assert_allclose(pixels.numpy(), expected, atol=1e-5)
    # ... and the same float32 values the inference path (and the TensorBoard panel) feeds the model
    assert torch.equal(pixels, rgb_to_pixel_values(rgb))


def test_a_flip_moves_image_labels_and_mask_together():
    batch = batch_of([near_left_capture()], LABELS)
    image, labels, valid = flip_together(torch.tensor([True]), batch["pixel_values"], batch["labels"],
                                         batch["valid_mask"])
    assert (image[0, :, :, W // 2 :] == 230).all() and (image[0, :, :, : W // 2] == 20).all()
    assert (labels[0, :, W // 2 :] == 0).all()  # near is now on the right
    assert (labels[0, H // 4 :, : W // 2] == 1).all()
    assert not valid[0, : H // 4, : W // 2].any() and valid[0, : H // 4, W // 2 :].all()
    same = flip_together(torch.tensor([False]), batch["labels"])[0]
    assert torch.equal(same, batch["labels"])


def test_random_flips_and_jitter_keep_each_image_with_its_own_labels():
    torch.manual_seed(0)
    batch = batch_of([near_left_capture()] * 16, LABELS)
    out = BatchTransform(flip=True, jitter_strength=JITTER_STRENGTH)(batch, training=True)
    left = out["pixel_values"][:, :, :, : W // 2].mean(dim=(1, 2, 3))
    right = out["pixel_values"][:, :, :, W // 2 :].mean(dim=(1, 2, 3))
    flipped = right > left  # the bright side (jittered, still far brighter) tells which were flipped
    assert 0 < int(flipped.sum()) < 16  # each image draws its own flip
    near_right = (out["labels"][:, H // 4 :, W // 2 :] == 0).all(dim=(1, 2))
    near_left = (out["labels"][:, H // 4 :, : W // 2] == 0).all(dim=(1, 2))
    assert torch.equal(near_right, flipped) and torch.equal(near_left, ~flipped)
    holes_right = ~out["valid_mask"][:, : H // 4, W // 2 :].any(dim=(1, 2))
    assert torch.equal(holes_right, ~flipped)  # the hole band stays with the far half
    assert out["pixel_values"].dtype == torch.float32 and out["labels"].dtype == torch.float32
    # jitter: every image got its own brightness, within the strength
    base = BatchTransform()(batch, training=True)["pixel_values"]
    assert not torch.allclose(out["pixel_values"][0], out["pixel_values"][1])
    assert (out["pixel_values"] - base.flip(-1).where(flipped.view(-1, 1, 1, 1), base)).abs().max() < 0.5


def test_the_same_seed_gives_the_same_augmented_batch():
    batch = batch_of([near_left_capture()] * 8, LABELS)
    transform = BatchTransform(flip=True, jitter_strength=JITTER_STRENGTH)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(transform(batch, training=True))
    for key in ("pixel_values", "labels", "valid_mask"):
        assert torch.equal(runs[0][key], runs[1][key]), key


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("t")), use_cpu=True, report_to=[],
                             remove_unused_columns=False, per_device_train_batch_size=4)
    return DepthTrainer(model=build_model("tiny")[0], args=args, loss_fn=build_loss("mse"),
                        label_scheme=LABELS, transform=BatchTransform(flip=True, jitter_strength=0.1))


def test_the_trainer_augments_training_batches_only(trainer):
    batch = batch_of([near_left_capture()] * 8, LABELS)
    plain = BatchTransform()(batch, training=False)
    trainer.model.eval()
    evaluated = trainer._prepare_inputs(dict(batch))
    for key in ("pixel_values", "labels", "valid_mask"):
        assert torch.equal(evaluated[key], plain[key]), key
    trainer.model.train()
    torch.manual_seed(0)
    trained = trainer._prepare_inputs(dict(batch))
    assert not torch.equal(trained["pixel_values"], plain["pixel_values"])
    assert not torch.equal(trained["labels"], plain["labels"])  # some of the 8 were flipped
