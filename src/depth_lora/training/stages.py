"""Where each stage of a training run ran its model, in which precision, and for how long.

A run has stages that run the model: the zero-shot calibration, training (with its periodic
validation), and the held-out scoring at the end. Each is timed and *observed*: while a stage is
open, every forward of a transformers model (the run's, the zero-shot base loaded for a baseline
row, any other; in training, the first two) records the device its weights are on and the
autocast it runs under. So a stage
left on the CPU of a GPU machine shows in the record whatever code path caused it
(`benchmarks/gpu_check.sh` fails on one); the run writes the record as stages.json.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel, TrainerCallback

from depth_lora.text import plural

AUTOCAST_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def autocast_precision(device_type: str) -> str:
    """The precision a forward started now runs its matrix products in on `device_type`: bf16 or
    fp16 under autocast, else fp32."""
    if not torch.is_autocast_enabled(device_type):
        return "fp32"
    return AUTOCAST_NAMES.get(torch.get_autocast_dtype(device_type), "fp32")


def _observed(module) -> bool:
    """A model whose forwards a stage records: a transformers model, or torch.compile's wrapper of
    one (which runs eagerly while the model inside it is traced)."""
    return isinstance(module, PreTrainedModel) or type(module).__name__ == "OptimizedModule"


def stage_faults(stages: dict[str, dict], device_type: str) -> dict[str, str]:
    """Stage name -> what is wrong with it, for the stages (a StageLog's, or stages.json's "stages")
    that ran a model forward on another device type than `device_type`, or ran none: the rule
    `benchmarks/gpu_check.sh` fails a GPU run on."""
    faults = {}
    for name, entry in stages.items():
        devices = entry.get("devices", [])
        if not devices:
            faults[name] = "ran no forward of a model"
        elif any(torch.device(d).type != device_type for d in devices):
            faults[name] = f"ran on {', '.join(devices)}, not on {device_type}"
    return faults


class StageLog:
    """The stages of one run, in order: name -> {"devices", "precisions", "forwards", "seconds"} (and the
    training stage's step times, `StepTimesCallback`). `device` / `precision`: the run's, what
    every stage should show."""

    def __init__(self, device: torch.device, precision: str):
        self.device, self.precision = torch.device(device), precision
        self.stages: dict[str, dict] = {}

    @contextmanager
    def stage(self, name: str, observe: int | None = None):
        """Time the block and record what each model forward in it ran on (see the module doc);
        with `observe`, only the first that many forwards: the hooks then come off, as they cost
        about 1 ms a forward of the Small model (every module's call takes torch's slow path while
        a global hook is registered), which a long training stage should not pay throughout."""
        seen: set[tuple[str, str]] = set()
        calls = {"depth": 0, "forwards": 0}  # a model's forward runs its backbone's inside: count the outer

        def enter(module, args):  # runs for every module's forward: the cheap test first
            if not _observed(module) or torch.compiler.is_compiling():  # traced: seen through its wrapper
                return
            calls["forwards"] += calls["depth"] == 0
            calls["depth"] += 1
            weight = next(getattr(module, "_orig_mod", module).parameters(), None)
            if weight is not None:
                seen.add((str(weight.device), autocast_precision(weight.device.type)))

        def leave(module, args, output):
            if _observed(module) and not torch.compiler.is_compiling():
                calls["depth"] -= 1
                if observe is not None and calls["depth"] == 0 and calls["forwards"] >= observe:
                    for hook in hooks:  # safe here: torch iterates over a copy of the hooks
                        hook.remove()

        hooks = (torch.nn.modules.module.register_module_forward_pre_hook(enter),
                 torch.nn.modules.module.register_module_forward_hook(leave, always_call=True))
        start = time.perf_counter()
        try:
            yield self.stages.setdefault(name, {})
        finally:
            for hook in hooks:
                hook.remove()
            if self.device.type == "cuda" and torch.cuda.is_initialized():  # the GPU's time, not the launch's
                torch.cuda.synchronize(self.device)
            entry = self.stages[name]
            entry["seconds"] = round(time.perf_counter() - start, 3)
            entry["devices"] = sorted({device for device, _ in seen})
            entry["precisions"] = sorted({precision for _, precision in seen})
            entry["forwards"] = calls["forwards"]

    def off_device(self) -> list[str]:
        """The stages that ran a forward off the run's device type, or ran none (`stage_faults`)."""
        return list(stage_faults(self.stages, self.device.type))

    def to_dict(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "stages": self.stages}

    def summary_line(self) -> str:
        """'ran on cuda:0 (bf16): calibration 2.1 s, training 95.0 s (first step 3.20 s, then 0.210 s
        a step; 8 evaluations 6.0 s), held-out scoring 4.1 s'."""
        parts, faults = [], stage_faults(self.stages, self.device.type)
        for name, entry in self.stages.items():
            text = f"{name.replace('_', '-')} {entry.get('seconds', 0):.1f} s"
            if "first_step_s" in entry:
                text += (f" (first step {entry['first_step_s']:.2f} s, then {entry['step_s']:.3f} s a step; "
                         f"{plural(entry['evaluations'], 'evaluation')} {entry['evaluation_s']:.1f} s)")
            if entry.get("devices") and name in faults:
                text += f" ON {', '.join(entry['devices'])}"
            parts.append(text)
        return f"ran on {self.device} ({self.precision}): " + ", ".join(parts)


class StepTimesCallback(TrainerCallback):
    """The training stage's step times: the first step (allocation, warm-up, compilation), the
    median of the others, and the time spent in evaluations (each follows a step's end). On CUDA each
    step's end waits for the GPU, so a time is the GPU's, not the launch's."""

    def __init__(self, entry: dict, device: torch.device):
        self.entry, self.device = entry, torch.device(device)
        self.steps: list[float] = []
        self._begin = self._end = None
        self.entry.update(first_step_s=0.0, step_s=0.0, steps=0, evaluations=0, evaluation_s=0.0)

    def _now(self) -> float:
        if self.device.type == "cuda" and torch.cuda.is_initialized():
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        self._end = self._now()
        if self._begin is not None:
            self.steps.append(self._end - self._begin)
        steady = sorted(self.steps[1:] or self.steps)  # the median: a compiled model recompiles once
        self.entry.update(first_step_s=round(self.steps[0], 4), step_s=round(steady[len(steady) // 2], 4),
                          steps=len(self.steps))

    def on_evaluate(self, args, state, control, **kwargs):
        self.entry["evaluations"] += 1
        if self._end is not None:
            self.entry["evaluation_s"] = round(self.entry["evaluation_s"] + self._now() - self._end, 3)
