"""What a run learns, as one object: the task, and the one place a task is chosen (`task_of`).

A monocular run (`--task depth`) learns depth from the image alone; a completion run (`--task
complete`) reads the camera's measured depth as well and fills its holes. Everything that differs
between them (the model a run builds, the examples and the loss it trains on, how it is scored,
how it predicts, completes and exports, how its folder describes it) is a method of its `Task`:
`depth_lora.tasks.depth.DepthTask` and `depth_lora.tasks.completion.CompletionTask`. The rest of
the package asks `task_of(config or record or name)` and calls the task instead of branching on it.

The tasks call code of every layer (training, evaluation, inference, deploy), so they live above
it, in `depth_lora.tasks`, and register themselves here when it is imported: `import depth_lora`
imports it first, as PEFT's methods register themselves with `register_peft_method`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from depth_lora.errors import ConfigError, ModelError

_TASKS: dict[str, Task] = {}


@dataclass
class Built:
    """What a task builds before training: the model, what the record says of it, and what turns
    its output into mm (`labels`, a monocular run's) or completes a capture (`settings`, a
    completion run's)."""

    model: Any
    model_info: dict
    head: dict
    labels: Any = None  # data.dataset.LabelScheme
    calibration: dict | None = None  # the zero-shot baseline's scale and shift
    settings: dict | None = None  # the record's `completion`


@dataclass
class TrainerParts:
    """What a task feeds the Trainer: its two datasets, its metrics, and DepthTrainer's other
    arguments."""

    train: Any
    val: Any
    compute_metrics: Any
    extra: dict = field(default_factory=dict)


class Task(ABC):
    """One thing a run can learn. `name` is the --task value and the record's `task`;
    `format_version` the oldest depth_lora.json format that reads such a run; `label_names` the
    batch keys the Trainer hands to the metrics; `hole_row` the row a hole figure shows for the
    run's own model."""

    name: str
    format_version: int
    label_names: tuple[str, ...]
    hole_row: str

    # What a run builds, feeds and scores (training.run, training.config, training.describe)
    @abstractmethod
    def check_options(self, cfg) -> None:
        """ConfigError for an option of the other task (before the recipe fills anything in); this
        task's own options checked and their defaults filled in."""

    @abstractmethod
    def check_config(self, cfg) -> None:
        """ConfigError for a bad value once the recipe has filled in its settings."""

    @abstractmethod
    def describe(self, cfg, what: str) -> tuple[str, str]:
        """(the model trained, what it learns) for the recipe line; `what`: the adapters."""

    @abstractmethod
    def loss(self, cfg):
        """The loss the Trainer minimises."""

    @abstractmethod
    def build(self, cfg, data, stages, precision: str, progress: bool) -> Built:
        """The model a run starts from, before adapters, and what the record says of it."""

    @abstractmethod
    def ready(self, model, built: Built):
        """The model as training starts, after its base was saved as built."""

    @abstractmethod
    def trainer_parts(self, cfg, data, built: Built, workers: int, progress: bool) -> TrainerParts:
        """The datasets, metrics and Trainer arguments of a run."""

    @abstractmethod
    def score_held_out(self, cfg, output, device, precision: str, data, plots_dir) -> tuple[dict, dict | None,
                                                                                             dict]:
        """(evaluation reports, hole reports, metrics.json entries with the verdict) of a finished
        run on its test and validation splits."""

    # How its model is used (inference, deploy)
    @abstractmethod
    def base_model(self, folder, record, as_published: bool = False):
        """The model a run started from (inference.predict.load_base_model)."""

    @abstractmethod
    def labels(self, record):
        """What turns the model's output into mm (a LabelScheme), None when it outputs mm."""

    @abstractmethod
    def complete(self, bundle, rgb, depth_mm, name, measured):
        """`complete` with a run of this task: an inference.complete.Completion."""

    @abstractmethod
    def predict_one(self, bundle, capture: tuple):
        """A (key, rgb, depth or None) capture's depth in mm, as an export's parity check compares."""

    @abstractmethod
    def export_settings(self, adapter_dir, record, quantize: str | None, images) -> dict | None:
        """What an export's graph needs beyond the labels (None: nothing); ConfigError for what
        this task's export cannot do."""

    @abstractmethod
    def export_graph(self, model, size_hw: tuple[int, int], settings: dict | None):
        """What an export writes for a run's merged `model` (a deploy.graph.ExportGraph); `settings`:
        what `export_settings` returned."""

    @abstractmethod
    def export_readme(self, record, folder_name: str) -> str:
        """An export folder's README: how to run it with its runtime alone."""

    # How it is scored and described (evaluation, the model card, the command line)
    @abstractmethod
    def hole_fillers(self, bundle):
        """capture -> (depth with holes -> {method: fill}) for evaluation.holes."""

    @abstractmethod
    def training_hole_kinds(self, record) -> list[str] | None:
        """The hole kinds a run trained on (None: it trained on none)."""

    @abstractmethod
    def evaluate(self, args, bundle, plots) -> int:
        """`depth-lora evaluate` on a run of this task (its table, reading and files)."""

    @abstractmethod
    def card_intro(self, record) -> list[str]:
        """The model card's first lines: what the model is and what it was trained from."""

    @abstractmethod
    def card_results(self, metrics: dict) -> list[str]:
        """The model card's held-out table and its notes, from metrics.json's entries (the card adds
        the verdict)."""

    @abstractmethod
    def card_use(self, record, folder_name: str) -> list[str]:
        """The model card's "Use it" section."""

    @abstractmethod
    def refusal(self, folder, action: str) -> str:
        """Why a run of this task cannot do `action` (which the other task does)."""

    # What `depth-lora bench` times of it
    @abstractmethod
    def bench_trainer(self, prepared: list, model_name: str, args, gradient_checkpointing: bool):
        """(the Trainer a run of this task builds on `prepared` captures, with LoRA on `model_name`'s
        architecture; what building it cost, for the report)."""

    @abstractmethod
    def check_bench_phases(self, phases) -> None:
        """ConfigError for a bench phase this task has no version of."""


def require_task(record, folder, name: str, action: str) -> None:
    """ModelError (one line) when the run in `folder` is not of task `name`: a completion run where a
    monocular model is needed (it cannot predict from an image alone), or the reverse. `action`:
    what the caller was asked to do, for the message."""
    if record.task != name:
        raise ModelError(task_of(record).refusal(folder, action))


def register(task: Task) -> Task:
    """Make `task` what `task_of` returns for its name."""
    _TASKS[task.name] = task
    return task


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def task_of(source) -> Task:
    """The task of a TrainConfig or RunRecord (their `task`), or of a task name: the one place a
    task is chosen. ConfigError for a name no task has."""
    name = source if isinstance(source, str) else getattr(source, "task", None)
    if not isinstance(name, str):
        raise TypeError(f"task_of takes a task name, a TrainConfig or a RunRecord, not "
                        f"{type(source).__name__}")
    if not _TASKS:
        raise RuntimeError("no task is registered: depth_lora.tasks registers them (import depth_lora)")
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(_TASKS)}")
    return _TASKS[name]
