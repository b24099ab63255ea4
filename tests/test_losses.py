"""Masked losses: hand-computed values, NaN safety, empty batches and where gradients go."""

from __future__ import annotations

import math

import pytest
import torch

from depth_lora.errors import ConfigError
from depth_lora.training.losses import MaskedL1Loss, MaskedMSELoss, SiLogLoss, build_loss

NAN, INF = float("nan"), float("inf")


def _pred(values):
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def test_mse_and_l1_match_hand_computed_values_and_skip_nan_targets():
    pred = _pred([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[1.0, 0.0], [5.0, NAN]]])
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    # Valid errors: 0, 2, -2 (the NaN target is not a pixel).
    assert MaskedMSELoss()(pred, target, mask).item() == pytest.approx((0 + 4 + 4) / 3)
    assert MaskedL1Loss()(pred, target, mask).item() == pytest.approx((0 + 2 + 2) / 3)


def test_mask_excludes_pixels_and_pools_over_the_batch():
    pred = _pred([[[1.0, 1.0]], [[1.0, 1.0]]])  # (2, 1, 2)
    target = torch.tensor([[[2.0, 100.0]], [[4.0, 5.0]]])
    mask = torch.tensor([[[True, False]], [[True, True]]])
    # Pooled over the 3 valid pixels of the batch: errors 1, 3, 4 (not a mean of image means).
    assert MaskedMSELoss()(pred, target, mask).item() == pytest.approx((1 + 9 + 16) / 3)
    assert MaskedL1Loss()(pred, target, mask).item() == pytest.approx((1 + 3 + 4) / 3)


def test_silog_matches_hand_computed_value():
    e = math.e
    pred = _pred([[[1.0, e, 5.0]]])
    target = torch.tensor([[[e, e, 7.0]]])
    mask = torch.tensor([[[True, True, False]]])
    # d = log t - log p = [1, 0]; mean(d^2) = 0.5, mean(d) = 0.5; sqrt(0.5 - 0.5 * 0.25).
    assert SiLogLoss(lambd=0.5)(pred, target, mask).item() == pytest.approx(math.sqrt(0.375))
    # lambd = 0 is the RMSE of the log: sqrt(0.5).
    assert SiLogLoss(lambd=0.0)(pred, target, mask).item() == pytest.approx(math.sqrt(0.5))


def test_silog_ignores_non_positive_targets_and_survives_zero_predictions():
    pred = _pred([[[0.0, 2.0, 2.0]]])
    target = torch.tensor([[[1.0, 2.0, -3.0]]])
    loss = SiLogLoss()(pred, target, torch.ones(1, 1, 3, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all()
    # pred 0 is floored at eps = 1e-6: d = [log(1 / 1e-6), 0].
    d = math.log(1e6)
    assert loss.item() == pytest.approx(math.sqrt(d**2 / 2 - 0.5 * (d / 2) ** 2), rel=1e-5)


def test_silog_of_a_perfect_prediction_is_near_zero_with_finite_gradient():
    pred = _pred([[[2.0, 3.0]]])
    loss = SiLogLoss()(pred, torch.tensor([[[2.0, 3.0]]]), torch.ones(1, 1, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() < 1e-5
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", ["mse", "l1", "silog"])
@pytest.mark.parametrize("mask_value", [False, True])
def test_non_finite_targets_never_make_loss_or_gradient_nan(name, mask_value):
    pred = _pred([[[1.0, 2.0, 3.0, 4.0]]])
    target = torch.tensor([[[NAN, INF, -INF, 2.0]]])
    mask = torch.tensor([[[mask_value, mask_value, mask_value, True]]])
    loss = build_loss(name)(pred, target, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[0, 0, :3], torch.zeros(3))  # nothing flows to bad pixels
    assert pred.grad[0, 0, 3] != 0


@pytest.mark.parametrize("name", ["mse", "l1", "silog"])
def test_batch_without_valid_pixel_gives_zero_loss_and_zero_gradients(name):
    pred = _pred([[[NAN, 2.0], [3.0, 4.0]]])  # even a NaN prediction on an ignored pixel
    target = torch.tensor([[[1.0, NAN], [3.0, 4.0]]])
    mask = torch.tensor([[[False, True], [False, False]]])
    loss = build_loss(name)(pred, target, mask)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_mse_gradient_flows_only_through_valid_pixels():
    pred = _pred([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[2.0, 0.0], [0.0, 6.0]]])
    mask = torch.tensor([[[True, False], [False, True]]])
    MaskedMSELoss()(pred, target, mask).backward()
    # d/dp mean((p - t)^2) over 2 pixels = 2 (p - t) / 2 = p - t.
    expected = torch.tensor([[[1.0 - 2.0, 0.0], [0.0, 4.0 - 6.0]]])
    assert torch.allclose(pred.grad, expected)


def test_losses_compute_in_fp32_under_autocast():
    pred = torch.full((1, 4, 4), 1.001, dtype=torch.bfloat16, requires_grad=True)
    target = torch.ones(1, 4, 4, dtype=torch.bfloat16)
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        for name in ("mse", "l1", "silog"):
            assert build_loss(name)(pred, target, mask).dtype == torch.float32


def test_missing_mask_means_every_finite_target_counts():
    pred = _pred([[[1.0, 5.0]]])
    target = torch.tensor([[[3.0, NAN]]])
    assert MaskedMSELoss()(pred, target, None).item() == pytest.approx(4.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        MaskedMSELoss()(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), torch.ones(1, 2, 3, dtype=bool))


def test_build_loss_knows_three_names_and_rejects_others():
    assert isinstance(build_loss("MSE"), MaskedMSELoss)
    assert isinstance(build_loss("l1"), MaskedL1Loss)
    assert isinstance(build_loss("silog"), SiLogLoss)
    with pytest.raises(ConfigError, match="unknown loss 'huber'; choose from mse, l1, silog"):
        build_loss("huber")


# ---- scale-and-shift-invariant loss -------------------------------------------------------

def test_ssi_matches_a_hand_computed_value():
    from depth_lora.training.losses import ScaleShiftInvariantLoss

    # target [1, 2, 3, 4]: (lower) median 2, mean |d - 2| = (1 + 0 + 1 + 2) / 4 = 1 -> [-1, 0, 1, 2]
    # pred   [1, 1, 1, 5]: median 1, mean |d - 1| = 4 / 4 = 1 -> [0, 0, 0, 4]
    # mean |difference| = (1 + 0 + 1 + 2) / 4 = 1.0
    target = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    pred = torch.tensor([[[1.0, 1.0], [1.0, 5.0]]])
    assert ScaleShiftInvariantLoss()(pred, target).item() == pytest.approx(1.0)


def test_ssi_ignores_scale_and_shift_but_not_a_flip():
    from depth_lora.training.losses import ScaleShiftInvariantLoss

    target = torch.rand(2, 6, 7) * 3 + 1
    loss = ScaleShiftInvariantLoss()
    assert loss(2.5 * target + 7.0, target).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(-target, target).item() > 0.5


def test_ssi_is_nan_safe_and_skips_images_without_valid_pixels():
    from depth_lora.training.losses import ScaleShiftInvariantLoss

    target = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[float("nan"), 1.0], [2.0, 3.0]]])
    mask = torch.tensor([[[True, True], [True, True]], [[False, False], [False, True]]])  # 2nd: 1 pixel
    pred = torch.tensor([[[1.0, 1.0], [1.0, 5.0]], [[float("nan"), 9.0], [9.0, 9.0]]], requires_grad=True)
    value = ScaleShiftInvariantLoss()(pred, target, mask)
    value.backward()
    assert value.item() == pytest.approx(1.0)  # only the first image counts
    assert torch.isfinite(pred.grad).all() and (pred.grad[1] == 0).all()
    empty = ScaleShiftInvariantLoss()(pred, target, torch.zeros_like(mask))
    assert empty.item() == 0.0
