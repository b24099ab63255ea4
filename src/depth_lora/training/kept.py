"""The checkpoint a run keeps: its validation metrics from the training log, and a fully
fine-tuned model's weights reloaded from it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import EarlyStoppingCallback

from depth_lora.model.checkpoints import quiet_weights_io
from depth_lora.text import size_hw as format_size_hw
from depth_lora.training.trainer import DepthTrainer


def kept_validation(trainer: DepthTrainer, log_history: list[dict], size_hw) -> dict:
    """The kept (best) checkpoint's validation metrics, from its own evaluation during training."""
    val = best_validation(log_history, trainer.state.best_model_checkpoint)
    if not val:
        val = _strip(trainer.evaluate(metric_key_prefix="eval"), "eval_")
    evaluations = [e for e in log_history if "eval_rmse_mm" in e]
    if evaluations:  # how the kept one compares with the others: what the user saw scroll by
        val |= {"evaluations": len(evaluations), "last_step": evaluations[-1]["step"],
                "last_rmse_mm": evaluations[-1]["eval_rmse_mm"], "global_step": trainer.state.global_step,
                "max_steps": trainer.state.max_steps}
    callbacks = trainer.callback_handler.callbacks
    stopper = next((c for c in callbacks if isinstance(c, EarlyStoppingCallback)), None)
    if stopper is not None and trainer.state.global_step < trainer.state.max_steps:
        val["stopped_early"] = stopper.early_stopping_patience  # no better validation in this many
    return {**val, "resolution": f"model input, {format_size_hw(size_hw)}"}


def reload_full_model(model: torch.nn.Module, checkpoint: str | None) -> None:
    """Load a fully fine-tuned checkpoint's weights into `model`, every tensor of them.

    transformers 5 saves the Dinov2 attention under its older names (attention.attention.query,
    ...), and the Trainer's reload of the best checkpoint at the end skips keys it cannot match: the
    attention weights kept their last-step values. from_pretrained translates the names.
    """
    if not checkpoint:
        return
    from transformers import AutoModelForDepthEstimation

    with quiet_weights_io():
        best = AutoModelForDepthEstimation.from_pretrained(checkpoint)
    model.load_state_dict(best.state_dict())  # strict: a missing or unexpected key is an error


def best_validation(log_history: list[dict], best_checkpoint: str | None) -> dict:
    """The validation metrics (without the eval_ prefix) logged at the best checkpoint's step,
    with that step and epoch; {} if they are not in the log."""
    if not best_checkpoint:
        return {}
    step = int(Path(best_checkpoint).name.rsplit("-", 1)[-1])
    entry = next((e for e in log_history if e.get("step") == step and "eval_rmse_mm" in e), None)
    return {} if entry is None else {**_strip(entry, "eval_"), "step": step}


def _strip(metrics: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}
