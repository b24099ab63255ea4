"""One training run, start to finish: split, data, model + LoRA, Trainer, output folder."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import EarlyStoppingCallback, set_seed

from depth_lora import __version__
from depth_lora.data.captures import find_captures
from depth_lora.data.dataset import (
    LabelScheme,
    PreparedCapture,
    default_image_size,
    open_cache,
    prepare_captures,
)
from depth_lora.data.split import split_groups, straddling_groups
from depth_lora.data.transforms import JITTER_STRENGTH, BatchTransform
from depth_lora.errors import ConfigError
from depth_lora.evaluation.calibration import fit_zero_shot_calibration
from depth_lora.evaluation.report import EvaluationReport
from depth_lora.model.checkpoints import quiet_weights_io
from depth_lora.model.choices import BUNDLED_MODELS, DEMO_MODEL_WARNING
from depth_lora.model.lora import apply_lora, enable_activation_checkpointing, trainable_parameters_line
from depth_lora.model.precision import resolve_device, resolve_precision
from depth_lora.runs.folder import (
    BASE_MODEL_DIR,
    CARD_FILE,
    RunRecord,
    write_metrics,
    write_record,
    write_run_config,
    write_split,
    write_stages,
)
from depth_lora.runs.model_card import write_model_card
from depth_lora.runs.task import Built, TrainerParts, task_of
from depth_lora.text import plural
from depth_lora.training.config import TrainConfig
from depth_lora.training.describe import describe_recipe
from depth_lora.training.kept import kept_validation, reload_full_model
from depth_lora.training.optim import describe_groups
from depth_lora.training.run_split import choose_split
from depth_lora.training.setup import (
    CLI_OPTIONS,
    OptionNames,
    build_training_arguments,
    camera_of,
    check_output_dir,
    check_resume_config,
    evaluation_cadence,
    image_size_of,
    prepare_output_dir,
)
from depth_lora.training.stages import StageLog, StepTimesCallback
from depth_lora.training.trainer import (
    DepthTrainer,
    use_log_lines,
)

# PEFT's save_pretrained updates a model card and huggingface_hub warns "Repo card metadata block was
# not found" for ours: not something a user can act on.
logging.getLogger("huggingface_hub.repocard").setLevel(logging.ERROR)

@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict  # {"val": {...}, "test": {...}} in mm; val at the model's input size
    trainable_line: str
    model: torch.nn.Module  # the trained PeftModel, best checkpoint loaded
    log_history: list[dict]  # the Trainer's logs of the training loop (loss, eval_* each epoch)
    test_report: EvaluationReport | None = None  # what `depth-lora evaluate --split test` prints
    val_report: EvaluationReport | None = None  # the same for the validation split
    hole_reports: dict | None = None  # a completion run's: "test" / "val" -> evaluation.holes.HoleReport
    stages: dict | None = None  # where and how long each stage ran its model (training.stages.StageLog)


@dataclass
class RunData:
    """The captures of a run, split and prepared at the model's input size."""

    files: list  # CaptureFiles of the data folder
    split: dict[str, list[str]]
    groups: dict[str, str]  # capture key -> session (group)
    leaky: bool  # a session in more than one split
    size_hw: tuple[int, int]
    prepared: dict[str, list[PreparedCapture]]  # "train" / "val" / "test"
    from_output: bool  # the split was read back from OUT (resume)

    @property
    def train_mean_mm(self) -> float:
        """The constant baseline: mean valid depth of the training split (at the input size)."""
        return float(np.nanmean(np.concatenate([c.depth_mm.ravel() for c in self.prepared["train"]])))


def library_versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "depth_lora": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or the only process: the one that writes the output folder."""
    return int(os.environ.get("RANK", "0")) == 0


def run_training(cfg: TrainConfig, progress: bool = True, names: OptionNames = CLI_OPTIONS,
                 evaluation_dir: str | Path | None = None) -> TrainResult:
    """Fine-tune `cfg.model` with LoRA on `cfg.data` and write everything to `cfg.output`.

    Nothing is written into the output folder until the data and the model have loaded, so a start
    that fails (offline, a bad capture) leaves no run behind. Returns the output folder, the kept
    checkpoint's validation metrics and the test split's rows in mm, and PEFT's trainable-parameters
    line. `evaluation_dir`: where the test split's figures and report go (none without it).
    Raises DepthLoraError subclasses on bad input.
    """
    output, main = Path(cfg.output), is_main_process()
    check_run_request(cfg, output, names)
    precision = resolve_precision(cfg.precision, resolve_device().type)
    task = task_of(cfg)
    loss_fn = task.loss(cfg)
    set_seed(cfg.seed)
    data = load_run_data(cfg, output, progress)
    # The Trainer's arguments decide the device, once, for every stage: each process's own GPU under
    # torchrun (the process group starts here, before any stage runs the model), else the one GPU
    # or the CPU.
    arguments = build_training_arguments(cfg, precision, evaluation_cadence(cfg, data))
    stages = StageLog(arguments.device, precision)
    built = task.build(cfg, data, stages, precision, progress and main)
    record = make_record(cfg, data, built, precision)
    if main:  # the config is final: the first write into the output folder
        start_output_dir(output, cfg, data, names, built.model if record.base_model_dir else None)
    model = attach_adapters(task.ready(built.model, built), cfg)  # after the base is saved as built
    trainable = trainable_parameters_line(model)
    print(trainable)
    if main and progress:
        print(record.recipe_line)
    parts = task.trainer_parts(cfg, data, built, arguments.dataloader_num_workers, progress)
    trainer = build_trainer(model, cfg, arguments, parts, built.labels, loss_fn, progress, record.warning)
    # The first forwards say where training runs (the Trainer places the model once); the hooks then
    # come off. A full fine-tune's checkpoints would each draw a "Writing" bar: quiet_weights_io.
    with stages.stage("training", observe=2) as entry, quiet_weights_io():
        trainer.add_callback(StepTimesCallback(entry, stages.device))
        trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    if cfg.finetune == "full":
        reload_full_model(trainer.model, trainer.state.best_model_checkpoint)
    log_history = list(trainer.state.log_history)  # before the final evaluations add to it
    metrics = {"val": kept_validation(trainer, log_history, data.size_hw)}
    save_adapter(trainer, output)
    reports, holes = {}, None
    if main:
        record = record.derived(best_checkpoint=trainer.state.best_model_checkpoint,
                                global_step=trainer.state.global_step,
                                optimizer_groups=describe_groups(trainer.optimizer))
        write_record(output, record)
        with stages.stage("held_out"):
            reports, holes, scores = task.score_held_out(cfg, output, stages.device, precision, data,
                                                         evaluation_dir)
            metrics |= scores
        write_metrics(output, metrics)
        write_model_card(output, record, metrics, data.split)
        write_stages(output, stages.to_dict())
        if progress:
            print(stages.summary_line())
    return TrainResult(output, metrics, trainable, trainer.model, log_history, reports.get("test"),
                       reports.get("val"), holes, stages.to_dict())


def check_run_request(cfg: TrainConfig, output: Path, names: OptionNames) -> None:
    """Refuse what would mix runs or read the output as data, before any work; writes nothing."""
    if Path(cfg.data).resolve() == output.resolve():
        raise ConfigError("--output must not be the data folder")
    if is_main_process():
        check_output_dir(output, cfg.resume, cfg.overwrite, names)
        if cfg.resume:
            check_resume_config(output, cfg)


def load_run_data(cfg: TrainConfig, output: Path, progress: bool) -> RunData:
    """Find the captures, split them (the resumed run's split, `--split`, or a grouped seeded
    split) and prepare each split at the input size (from the cache when it has them)."""
    files = find_captures(cfg.data)
    split, groups, from_output = choose_split(cfg, output, files, progress)
    by_key = {f.key: f for f in files}
    size_hw = tuple(cfg.image_size) if cfg.image_size else default_image_size(
        [image_size_of(by_key[k].image) for k in split["train"]]
    )
    cache = open_cache(not cfg.no_cache)
    prepared = {
        name: prepare_captures([by_key[k] for k in split[name]], size_hw, cfg.depth_unit, progress, cache)
        for name in ("train", "val", "test")
    }
    leaky = bool(straddling_groups(split, groups))
    return RunData(files, split, groups, leaky, size_hw, prepared, from_output)


def calibrate_zero_shot(model, data: RunData, precision: str, progress: bool) -> dict:
    """The baseline to beat: the base model with one scale and shift fitted on the training split."""
    if progress:
        count = plural(len(data.prepared["train"]), "training capture")
        print(f"Calibrating the zero-shot baseline on {count}")
    return fit_zero_shot_calibration(model, data.prepared["train"], data.prepared["val"], precision).to_dict()


def make_record(cfg: TrainConfig, data: RunData, built: Built, precision: str) -> RunRecord:
    """The run's record (depth_lora.json), before training: what the run is and what it started from."""
    pretrained = bool(built.model_info.get("pretrained", False))
    return RunRecord(
        task=cfg.task,
        completion=built.settings,
        warning=DEMO_MODEL_WARNING if cfg.model in BUNDLED_MODELS else None,
        recipe=cfg.recipe,
        recipe_line=describe_recipe(cfg, data.size_hw),
        base_model=cfg.model,
        base_model_dir=None if pretrained else BASE_MODEL_DIR,
        finetune=cfg.finetune,
        pretrained=pretrained,
        image_size_hw=data.size_hw,
        head=built.head,
        labels=built.labels.to_dict() if built.labels else {},
        label_percentiles=list(cfg.label_percentiles) if cfg.label_percentiles else None,
        zero_shot_calibration=built.calibration,
        split_leaky=data.leaky,
        train_depth_mean_mm=data.train_mean_mm,
        camera=camera_of(data.files, cfg),
        data=str(cfg.data),
        depth_unit=cfg.depth_unit,
        precision=precision,
        versions=library_versions(),
        config=cfg.to_dict(),
    )


def start_output_dir(output: Path, cfg: TrainConfig, data: RunData, names: OptionNames, base=None) -> None:
    """Create (or clear, with --overwrite) the output folder and write what a run starts with: the
    resolved config, the split, and a random-init base model (it cannot be rebuilt from a name)."""
    prepare_output_dir(output, cfg.resume, cfg.overwrite, names)
    write_run_config(output, cfg.to_dict())
    if not data.from_output:
        origin = {"from_split": str(cfg.split)} if cfg.split else {"seed": cfg.seed}
        write_split(output, data.split, **origin, data=str(cfg.data), group_by=cfg.group_by, leaky=data.leaky,
                    groups={k: data.groups.get(k, k) for name in data.split for k in data.split[name]},
                    split_groups=split_groups(data.split, data.groups))
    if base is not None:
        with quiet_weights_io():
            base.save_pretrained(output / BASE_MODEL_DIR)


def attach_adapters(model, cfg: TrainConfig):
    """LoRA adapters (PEFT) for --finetune lora, or every weight trainable for --finetune full."""
    if cfg.finetune == "lora":
        return apply_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          bias=cfg.lora_bias, targets=tuple(cfg.lora_targets), train_head=cfg.train_head,
                          gradient_checkpointing=cfg.gradient_checkpointing, use_rslora=cfg.use_rslora,
                          use_dora=cfg.use_dora)
    model.requires_grad_(True)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def build_trainer(model, cfg: TrainConfig, arguments, parts: TrainerParts, labels: LabelScheme | None,
                  loss_fn, progress: bool, warning: str | None = None) -> DepthTrainer:
    """The Trainer subclass with its arguments, the task's datasets and metrics (`parts`), batch
    transforms and the run's callbacks."""
    trainer = DepthTrainer(
        model=model,
        args=arguments,
        train_dataset=parts.train,
        eval_dataset=parts.val,
        transform=BatchTransform(flip=cfg.flip, jitter_strength=JITTER_STRENGTH if cfg.color_jitter else 0.0),
        compute_metrics=parts.compute_metrics,
        loss_fn=loss_fn,
        label_scheme=labels,
        panel_warning=warning,
        part_rates=cfg.part_rates(),
        **parts.extra,
    )
    if cfg.early_stopping:  # the Trainer's own callback: the kept checkpoint stays the best one
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping))
    use_log_lines(trainer, progress)
    return trainer


def save_adapter(trainer: DepthTrainer, output: Path) -> None:
    """The PEFT adapter (adapter_config.json + adapter_model.safetensors), or the whole model.

    PEFT also writes a README.md template: the model card replaces it, but a README the folder
    had before is kept."""
    readme = output / CARD_FILE
    readme_before = readme.read_text() if readme.is_file() else None
    with quiet_weights_io():
        trainer.save_model(str(output))
    if is_main_process():
        readme.write_text(readme_before) if readme_before is not None else readme.unlink(missing_ok=True)
