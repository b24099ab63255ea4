"""Timing a training loop for `depth-lora bench`: each step and the wait before it, the DataLoader
alone, and a completion run's Trainer as `train --task complete` builds it."""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step (on CUDA, the GPU's), and the gap before it (waiting for the
    next batch); with `accelerator` (the Trainer's), the steps its fp16 gradient scaler skipped
    (inf or NaN gradients)."""

    def __init__(self, accelerator=None):
        self.steps, self.waits = [], []
        self.accelerator, self.skipped = accelerator, 0
        self._begin = self._end = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = time.perf_counter()
        if self._end is not None:
            self.waits.append(self._begin - self._end)

    def on_step_end(self, args, state, control, **kwargs):
        if args.device.type == "cuda":  # the GPU's time, not the launch's
            torch.cuda.synchronize(args.device)
        self._end = time.perf_counter()
        self.steps.append(self._end - self._begin)
        if self.accelerator is not None and self.accelerator.optimizer_step_was_skipped:
            self.skipped += 1


def summarize_steps(timer: StepTimer, batch_size: int) -> dict:
    """Samples/s of the steady steps: the median step (the first pays for warm-up and compilation,
    and a compiled model recompiles once for a last, smaller batch) plus the median wait for data."""
    import statistics

    steady = timer.steps[1:] or timer.steps
    waits = timer.waits[1:] or timer.waits
    step_s = statistics.median(steady)
    wait_s = statistics.median(waits) if waits else 0.0
    return {"samples_per_s": batch_size / (step_s + wait_s), "step_s": step_s, "data_wait_s": wait_s,
            "first_step_s": timer.steps[0]}


def loader_s_per_batch(trainer, batches: int) -> float:
    """Seconds to make one training batch (items from the Trainer's dataset, its collator), here in
    this process, over `batches` batches after a first one: the work one DataLoader worker does per
    batch (N workers share it), without the noise of starting worker processes."""
    dataset, collate = trainer.train_dataset, trainer.data_collator
    size = trainer.args.per_device_train_batch_size
    order = [i % len(dataset) for i in range(size * (batches + 1))]
    collate([dataset[i] for i in order[:size]])  # the first: allocations
    start = time.perf_counter()
    for k in range(1, batches + 1):
        collate([dataset[i] for i in order[k * size:(k + 1) * size]])
    return (time.perf_counter() - start) / batches


def data_fraction(timer: StepTimer) -> float:
    steady, waits = timer.steps[1:], timer.waits[1:]
    return sum(waits) / (sum(waits) + sum(steady)) if steady else 0.0
