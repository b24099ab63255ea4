"""The masked-loss Trainer, its mm metrics, its TensorBoard image panel, and the precision choice."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction, Trainer
from transformers.integrations import TensorBoardCallback

from depth_lora.align import align_to
from depth_lora.dataset import LabelScheme, PreparedCapture, rgb_to_pixel_values
from depth_lora.metrics import depth_metrics, mean_over_captures

# What the Trainer logs and selects the best checkpoint by (as eval_<name>).
HEADLINE_METRIC = "rmse_mm"


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where autocast pays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str = "auto") -> str:
    """Pick fp32 / fp16 / bf16 for this machine.

    auto: on CUDA, bf16 if the GPU supports it, else fp16; on CPU, bf16 autocast if the CPU has
    native bf16 (about 1.6x faster than fp32 on AVX-512 BF16), else fp32. An explicit choice is
    kept, except fp16 on CPU, which torch does not autocast well: refused.
    """
    from depth_lora.errors import ConfigError

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if precision not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"--precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    return precision


class DepthTrainer(Trainer):
    """Trainer whose loss is a masked loss on depth labels.

    Batches hold `pixel_values`, `labels` (B, H, W) and `valid_mask` (B, H, W). The labels are not
    passed to the model: Depth Anything's forward raises NotImplementedError when given labels.
    """

    def __init__(
        self,
        *args,
        loss_fn: nn.Module,
        label_scheme: LabelScheme,
        panel_capture: PreparedCapture | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.label_scheme = label_scheme
        self.panel_capture = panel_capture  # drawn in TensorBoard at each evaluation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(pixel_values=inputs["pixel_values"])
        pred = outputs.predicted_depth  # (B, H, W), same size as the input and the labels
        loss = self.loss_fn(pred, inputs["labels"], inputs["valid_mask"])
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self.panel_capture is not None and self.is_world_process_zero():
            self._log_panel()
        return metrics

    @torch.no_grad()
    def _log_panel(self) -> None:
        """Draw RGB | target | prediction | error (mm) for a fixed validation capture."""
        writer = next(
            (cb.tb_writer for cb in self.callback_handler.callbacks
             if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None),
            None,
        )
        if writer is None:
            return
        from depth_lora.viz import plot_prediction_panel

        cap = self.panel_capture
        model = self.model
        was_training = model.training
        model.eval()
        pixel_values = rgb_to_pixel_values(cap.rgb)[None].to(self.args.device)
        with self.autocast_smart_context_manager():
            pred = model(pixel_values=pixel_values).predicted_depth[0].float().cpu().numpy()
        model.train(was_training)
        pred_mm = self.label_scheme.decode(pred)
        fig = plot_prediction_panel(cap.rgb, cap.depth_mm, pred_mm, title=f"{cap.key} (validation)")
        writer.add_figure("eval/panel", fig, global_step=self.state.global_step)
        writer.flush()


def make_compute_metrics(label_scheme: LabelScheme, relative: bool = False):
    """Build the Trainer's compute_metrics: per-capture mm metrics, averaged over captures.

    The predictions and labels here are at the model's input size (the final evaluation with
    `depth-lora evaluate` compares at each capture's full resolution). `relative` (a model trained
    with the scale-and-shift-invariant loss): each prediction is first fitted to its labels by
    least squares (`align_to`), so the metrics score relative depth, and the best
    checkpoint is chosen by it rather than by an arbitrary output scale.
    """

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        preds = np.asarray(eval_pred.predictions, dtype=np.float32)  # (N, H, W) model output
        labels, valid = (np.asarray(a) for a in eval_pred.label_ids)  # (N, H, W) each
        if relative:
            aligned = [align_to(p, t, v) for p, t, v in zip(preds, labels, valid, strict=True)]
            preds = np.stack(aligned).astype(np.float32)
        pred_mm = label_scheme.decode(preds)
        target_mm = label_scheme.decode(labels.astype(np.float32))
        per_capture = [
            depth_metrics(p, t, v.astype(bool)) for p, t, v in zip(pred_mm, target_mm, valid, strict=True)
        ]
        summary = mean_over_captures(per_capture)
        return {k: float(v) for k, v in summary.items()}

    return compute_metrics
