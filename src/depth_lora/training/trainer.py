"""The masked-loss Trainer, its mm metrics, its TensorBoard image panel, its evaluation cadence,
and the precision choice."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import EvalPrediction, Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from depth_lora.data.dataset import LabelScheme, PreparedCapture, rgb_to_pixel_values
from depth_lora.data.transforms import BatchTransform
from depth_lora.model.lora import to_channels_last
from depth_lora.model.prompt import completed_depth
from depth_lora.numeric.align import align_to
from depth_lora.numeric.metrics import depth_metrics, mean_over_captures
from depth_lora.text import live_progress, plural
from depth_lora.training.optim import parameter_groups

# What the Trainer logs and selects the best checkpoint by (as eval_<name>).
HEADLINE_METRIC = "rmse_mm"
# Default cadence: at most about this many evaluations + checkpoints per run, and never more than
# one per epoch (each evaluates the whole validation split, saves a checkpoint and draws a panel).
MAX_EVALUATIONS = 10
# A validation RMSE above this many times the best so far is reported as a divergence.
DIVERGED_RATIO = 2.0


def default_eval_steps(train_size: int, batch_size: int, epochs: float, max_steps: int,
                       world_size: int = 1) -> int:
    """Steps between evaluations (and checkpoints) when --eval-steps is not given.

    Every epoch on a long run of short epochs would spend a large share of the run evaluating and
    saving: max(steps per epoch, ceil(total steps / MAX_EVALUATIONS)). Counted in steps, never in
    seconds, so which checkpoint is best does not depend on the machine's speed. The last step is
    always evaluated too (EvaluateAtLastStep), so the end of the run is a candidate.
    """
    steps_per_epoch = max(1, math.ceil(train_size / (batch_size * world_size)))
    total = max_steps if max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    return max(steps_per_epoch, math.ceil(total / MAX_EVALUATIONS))


class DepthTrainer(Trainer):
    """Trainer whose loss is a masked loss on depth labels.

    Batches hold `pixel_values`, `labels` (B, H, W) and `valid_mask` (B, H, W). The labels are not
    passed to the model: Depth Anything's forward raises NotImplementedError when given labels.
    A completion batch (data.completion) adds `prompt_depth`, which the model reads, and
    `loss_weight` and `hidden_mask`; its prediction is `completed_depth` in mm
    (`completion_output`).
    uint8 `pixel_values` (from DepthDataset) go through `transform` once on the device: normalised
    always, augmented (flip, jitter) only while the model trains. `channels_last`: the model's 4D
    (convolution) weights are stored channels-last, which the DPT neck and head's convolutions
    run faster in (measured: a training step of the Small architecture at 518x840, batch 2, bf16
    autocast on 2 CPU cores, 6.13 s instead of 6.63 s); linear layers are unaffected.
    """

    def __init__(
        self,
        *args,
        loss_fn: nn.Module,
        label_scheme: LabelScheme,
        panel_capture: PreparedCapture | None = None,
        transform: BatchTransform | None = None,
        channels_last: bool = True,
        panel_warning: str | None = None,
        part_rates: dict[str, tuple[float, float]] | None = None,
        completion_output: str = "residual",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if channels_last:
            to_channels_last(self.model)
        self.loss_fn = loss_fn
        self.label_scheme = label_scheme
        self.panel_capture = panel_capture  # drawn in TensorBoard at each evaluation
        self.panel_warning = panel_warning  # the run record's warning (a demo-model run): on the panel
        self.part_rates = part_rates  # "body" / "head" -> (lr, weight decay); None: the Trainer's groups
        self.completion_output = completion_output  # see model.prompt.completed_depth
        self.transform = transform or BatchTransform()
        self.add_callback(EvaluateAtLastStep())

    def _prepare_inputs(self, inputs):
        # The Trainer calls this in training_step (after model.train()) and prediction_step (the
        # evaluation loop calls model.eval() first): augmentation follows the model's mode.
        return self.transform(super()._prepare_inputs(inputs), training=self.model.training)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # A completion batch (data.completion) adds the prompt depth the model reads and the
        # per-pixel weights its loss takes (training.losses.CompletionLoss).
        prompt = {"prompt_depth": inputs["prompt_depth"]} if "prompt_depth" in inputs else {}
        outputs = model(pixel_values=inputs["pixel_values"], **prompt)
        pred = outputs.predicted_depth  # (B, H, W), same size as the input and the labels
        if prompt:  # depth in mm, as the metrics see it too
            pred = completed_depth(pred, prompt["prompt_depth"], self.completion_output)
            outputs["predicted_depth"] = pred
        weights = {"loss_weight": inputs["loss_weight"]} if "loss_weight" in inputs else {}
        loss = self.loss_fn(pred, inputs["labels"], inputs["valid_mask"], **weights, **prompt)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        """The Trainer's optimiser (class and arguments from TrainingArguments) over our parameter
        groups: the body and the head, each with its own rate and weight decay (training/optim.py)."""
        if self.optimizer is None and self.part_rates is not None:
            opt_model = self.model if model is None else model
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            decay = self.get_decay_parameter_names(opt_model)
            self.optimizer = optimizer_cls(parameter_groups(opt_model, decay, self.part_rates), **kwargs)
        return super().create_optimizer(model)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Each validation also logs its RMSE over the best so far (TensorBoard: eval/rmse_over_best),
        so that a run blowing up shows, in the log lines too (DIVERGED_RATIO)."""
        key = f"eval_{HEADLINE_METRIC}"
        if key in logs:
            best = min([e[key] for e in self.state.log_history if key in e] + [logs[key]])
            logs = {**logs, "eval_rmse_over_best": logs[key] / best if best > 0 else 1.0}
        super().log(logs, *args, **kwargs)

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
        fig = plot_prediction_panel(cap.rgb, cap.depth_mm, pred_mm, title=f"{cap.key} (validation)",
                                    warning=self.panel_warning)
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


def make_completion_metrics():
    """compute_metrics of a completion run: mm metrics on the hidden pixels of each validation
    capture (label_ids: labels in mm, valid_mask, hidden_mask), averaged over captures."""

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        preds = np.asarray(eval_pred.predictions, dtype=np.float32)  # (N, H, W) mm
        labels, _, hidden = (np.asarray(a) for a in eval_pred.label_ids)
        per_capture = [depth_metrics(p, t, h.astype(bool))
                       for p, t, h in zip(preds, labels, hidden, strict=True) if h.any()]
        return {k: float(v) for k, v in mean_over_captures(per_capture).items()}

    return compute_metrics


class EvaluateAtLastStep(TrainerCallback):
    """Evaluate and save at the last step whatever the cadence, so the end of the run is a candidate
    for the best checkpoint (transformers 5 does this for step cadences itself; 4.x did not)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and args.eval_strategy == "steps":
            control.should_evaluate = True
            control.should_save = control.should_save or args.save_strategy == "steps"
        return control


class LogLinesCallback(TrainerCallback):
    """One readable line per log instead of the Trainer's dicts, and one training bar, never nested.

    step   20/150  loss 0.0266  lr 6.0e-04  grad norm 0.287
    step   50/150  val RMSE 229.1 mm  MAE 206.1 mm  AbsRel 0.183  d<1.25 0.63
    trained 150 steps in 95 s (0.84 samples/s); 12 % of the time outside training steps (...)

    It times the optimiser steps: the rest of the training loop's wall time went to evaluations,
    checkpoints, the panel and waiting for data.
    """

    WARMUP_STEPS = (2, 6)  # the steps timed for the estimate (the first one allocates and warms up)

    def __init__(self, bar: bool = True):
        self.bar_enabled = bar
        self.bar = None
        self.step_s, self.evaluations, self.checkpoints = 0.0, 0, 0
        self._step_start = None
        self._warmup: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.step_s, self.evaluations, self.checkpoints = 0.0, 0, 0
        self._warmup = []
        if state.is_world_process_zero and self.bar_enabled:
            self.bar = tqdm(total=state.max_steps, desc="train", unit="step", dynamic_ncols=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is not None:
            took = time.perf_counter() - self._step_start
            self.step_s += took
            self._step_start = None
            first, last = self.WARMUP_STEPS
            if first <= state.global_step <= last:
                self._warmup.append(took)
                if state.global_step == last and state.max_steps > last and state.is_world_process_zero:
                    self._write(estimate_line(self._warmup, first, state, args))
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def _write(self, line: str) -> None:
        (self.bar.write if self.bar is not None else print)(line)

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluations += 1

    def on_save(self, args, state, control, **kwargs):
        self.checkpoints += 1

    def outside_steps_text(self, train_runtime_s: float) -> str:
        """'12 % of the time outside training steps (8 evaluations, 8 checkpoints)'."""
        share = max(0.0, 1 - self.step_s / train_runtime_s) if train_runtime_s > 0 else 0.0
        return (f"{100 * share:.0f} % of the time outside training steps ("
                f"{plural(self.evaluations, 'evaluation')}, {plural(self.checkpoints, 'checkpoint')})")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        line = format_log_line(logs, state.global_step, state.max_steps)
        if line and "train_runtime" in logs:
            line += "; " + self.outside_steps_text(logs["train_runtime"])
        if line:
            self._write(line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def estimate_line(step_times_s: list[float], first: int, state, args) -> str:
    """The training time to expect, measured on this machine: the mean of a few early steps times
    the steps left, and how many evaluations come on top."""
    per_step = sum(step_times_s) / len(step_times_s)
    left = state.max_steps - state.global_step
    evals = state.max_steps // int(args.eval_steps) if args.eval_steps else 0
    extra = f", plus {plural(evals, 'evaluation')} and checkpoints" if evals else ""
    return (f"estimate: {per_step:.2f} s a step (steps {first}-{state.global_step}, measured here): "
            f"about {_duration(per_step * left)} for the {left} steps left{extra}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def format_log_line(logs: dict, step: int, max_steps: int) -> str | None:
    """The one line for a Trainer log entry (training loss, validation metrics or the summary)."""
    width = len(str(max_steps))
    head = f"step {step:>{width}}/{max_steps}"
    if f"eval_{HEADLINE_METRIC}" in logs:
        get = lambda key: logs.get(f"eval_{key}", np.nan)  # noqa: E731
        line = (f"{head}  val RMSE {get('rmse_mm'):.1f} mm  MAE {get('mae_mm'):.1f} mm  "
                f"AbsRel {get('abs_rel'):.3f}  d<1.25 {get('delta1'):.2f}")
        ratio = logs.get("eval_rmse_over_best", 1.0)
        if ratio > DIVERGED_RATIO:
            line += (f"  DIVERGED: {ratio:.1f}x the best validation RMSE so far (the kept checkpoint "
                     "stays the best one; a lower --learning-rate may help)")
        return line
    if "loss" in logs:
        text = f"{head}  loss {logs['loss']:.4g}  lr {logs.get('learning_rate', 0):.1e}"
        return text + (f"  grad norm {logs['grad_norm']:.3g}" if "grad_norm" in logs else "")
    if "train_runtime" in logs:
        return (f"trained {step} steps in {logs['train_runtime']:.0f} s "
                f"({logs.get('train_samples_per_second', 0):.2f} samples/s)")
    return None


def use_log_lines(trainer: Trainer, progress: bool) -> None:
    """Replace the Trainer's printing callbacks with LogLinesCallback (lines only if `progress`)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(LogLinesCallback(bar=live_progress()))
