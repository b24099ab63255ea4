"""One training run, start to finish: split, data, model + LoRA, Trainer, output folder."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import set_seed

from depth_lora import __version__
from depth_lora.data.captures import find_captures
from depth_lora.data.completion import CompletionDataset
from depth_lora.data.dataset import (
    DepthDataset,
    LabelScheme,
    PreparedCapture,
    default_image_size,
    depth_range_mm,
    open_cache,
    prepare_captures,
)
from depth_lora.data.split import group_captures, load_split, make_split, split_groups, straddling_groups
from depth_lora.data.transforms import JITTER_STRENGTH, BatchTransform
from depth_lora.errors import ConfigError, DataError
from depth_lora.evaluation.calibration import fit_zero_shot_calibration
from depth_lora.evaluation.report import EvaluationReport
from depth_lora.model.checkpoints import build_model, quiet_weights_io
from depth_lora.model.choices import BUNDLED_MODELS, DEMO_MODEL_WARNING
from depth_lora.model.lora import apply_lora, enable_activation_checkpointing, trainable_parameters_line
from depth_lora.model.precision import resolve_precision
from depth_lora.model.prompt import add_validity_channel, build_completer, start_residual_head
from depth_lora.runs.folder import (
    BASE_MODEL_DIR,
    CARD_FILE,
    SCALE_INVARIANT_LOSSES,
    SPLIT_FILE,
    RunRecord,
    write_metrics,
    write_record,
    write_run_config,
    write_split,
)
from depth_lora.runs.model_card import write_model_card
from depth_lora.text import plural
from depth_lora.training.config import TrainConfig
from depth_lora.training.describe import describe_recipe
from depth_lora.training.held_out import (
    evaluate_held_out,
    evaluate_holes_held_out,
    held_out_metrics,
    hole_metrics,
)
from depth_lora.training.kept import kept_validation, reload_full_model
from depth_lora.training.losses import CompletionLoss, build_loss
from depth_lora.training.optim import describe_groups
from depth_lora.training.setup import (
    CLI_OPTIONS,
    OptionNames,
    build_training_arguments,
    camera_of,
    check_output_dir,
    check_resume_config,
    image_size_of,
    prepare_output_dir,
    resolve_head,
)
from depth_lora.training.trainer import (
    DepthTrainer,
    default_eval_steps,
    make_completion_metrics,
    make_compute_metrics,
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
    precision = resolve_precision(cfg.precision)
    loss_fn = CompletionLoss() if cfg.task == "complete" else build_loss(cfg.loss)
    set_seed(cfg.seed)
    data = load_run_data(cfg, output, progress)
    if cfg.task == "complete":  # no labels and no zero-shot calibration: the prompt is the baseline
        model, model_info = build_completer(cfg.model, seed=cfg.seed)
        calibration, labels, completion = None, None, completion_settings(cfg, model_info)
        head = {"type": "relative", "max_depth": model.config.max_depth, "converted": False}
    else:
        model, model_info = build_model(cfg.model, seed=cfg.seed)
        calibration = calibrate_zero_shot(model, data, precision, progress) if main else None
        head = resolve_head(cfg, model)  # after the calibration: zero-shot is the checkpoint as published
        labels = LabelScheme(cfg.labels, *depth_range_mm(data.prepared["train"], cfg.label_percentiles))
        completion = None
    record = make_record(cfg, data, model_info, head, labels, calibration, precision, completion)
    if main:  # the config is final: the first write into the output folder
        start_output_dir(output, cfg, data, names, model if record.base_model_dir else None)
    if completion and completion["output"] == "residual":  # after the base is saved as it was built
        start_residual_head(model)
    if completion and completion["prompt_channels"] == 2:
        add_validity_channel(model)
    model = attach_adapters(model, cfg)
    trainable = trainable_parameters_line(model)
    print(trainable)
    if main and progress:
        print(record.recipe_line)
    trainer = build_trainer(model, cfg, data, labels, precision, loss_fn, progress, record.warning,
                            completion)
    with quiet_weights_io():  # checkpoints of a full fine-tune would each draw a "Writing" bar
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
        if record.is_completer:
            holes = evaluate_holes_held_out(cfg, output, precision, data, evaluation_dir)
            metrics |= hole_metrics(holes)
        else:
            reports = evaluate_held_out(cfg, output, precision, data, evaluation_dir)
            metrics |= held_out_metrics(reports)
        write_metrics(output, metrics)
        write_model_card(output, record, metrics, data.split)
    return TrainResult(output, metrics, trainable, trainer.model, log_history, reports.get("test"),
                       reports.get("val"), holes)


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


def choose_split(cfg: TrainConfig, output: Path, files: list, progress: bool):
    """(split, groups, read from OUT) for a run; DataError when it cannot hold out val and test."""
    keys = [f.key for f in files]
    groups = group_captures(keys, cfg.group_by)
    split_path = output / SPLIT_FILE
    from_output = cfg.resume and split_path.is_file()
    if from_output:
        split = load_split(split_path)
    elif cfg.split:
        split = load_split(cfg.split)
    else:
        split = make_split(keys, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
        if not split["val"] and len(files) >= 3:
            # Too few groups to hold any out: split single captures, and say so everywhere.
            print(f"WARNING: {len(set(groups.values()))} group(s) of captures (--group-by {cfg.group_by}): "
                  "too few to keep groups apart in train/val/test; splitting single captures instead. "
                  "Held-out captures share sessions with training captures: held-out numbers will be "
                  "optimistic. Capture more sessions, or choose --group-by.", flush=True)
            split = make_split(keys, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    check_split(cfg, split, groups, files, split_path if from_output or not cfg.split else Path(cfg.split),
                progress)
    return split, groups, from_output


def check_split(cfg: TrainConfig, split: dict, groups: dict, files: list, source: Path,
                progress: bool) -> None:
    """Warn about a leaky or lopsided split; refuse one that names missing captures or holds
    nothing out."""
    if straddling_groups(split, groups) and progress:
        print(f"WARNING: the split puts captures of one session in more than one split (--group-by "
              f"{cfg.group_by}): held-out numbers will be optimistic.", flush=True)
    held_out = len(split["val"]) + len(split["test"])
    if held_out > 2 * (cfg.val_fraction + cfg.test_fraction) * len(files) and progress:
        print(f"WARNING: sessions of very unequal size: {held_out} of {len(files)} captures are held "
              "out for validation and test, far more than --val-fraction and --test-fraction ask; "
              "training gets fewer captures.", flush=True)
    known = {f.key for f in files}
    missing = [k for s in split.values() for k in s if k not in known]
    if missing:
        raise DataError(source, f"split names captures not in {cfg.data}: {', '.join(missing[:5])}")
    if cfg.split and not (split["train"] and split["val"]):
        raise DataError(cfg.split, "split has no train or no validation captures")
    if not split["val"]:
        raise DataError(cfg.data, f"{len(files)} capture(s): need at least 3 (train, val, test)")


def calibrate_zero_shot(model, data: RunData, precision: str, progress: bool) -> dict:
    """The baseline to beat: the base model with one scale and shift fitted on the training split."""
    if progress:
        count = plural(len(data.prepared["train"]), "training capture")
        print(f"Calibrating the zero-shot baseline on {count}")
    return fit_zero_shot_calibration(model, data.prepared["train"], data.prepared["val"], precision).to_dict()


def completion_settings(cfg: TrainConfig, model_info: dict) -> dict:
    """What a completion run's record says about its completer: how its output becomes depth (a
    residual over the prompt for a model started here from Depth Anything V2, Prompt Depth
    Anything's own output for a published prompt checkpoint), the prompt's size, the training holes."""
    converted = model_info.get("converted_from")
    return {"output": "residual" if converted else "direct", "converted_from": converted,
            "prompt_scale": cfg.prompt_scale, "prompt_channels": 2 if cfg.prompt_validity else 1,
            "hole_kinds": list(cfg.hole_kinds), "hidden_weight": cfg.hidden_weight}


def make_record(cfg: TrainConfig, data: RunData, model_info: dict, head: dict, labels: LabelScheme | None,
                calibration: dict | None, precision: str, completion: dict | None = None) -> RunRecord:
    """The run's record (depth_lora.json), before training: what the run is and what it started from."""
    pretrained = bool(model_info.get("pretrained", False))
    return RunRecord(
        task=cfg.task,
        completion=completion,
        warning=DEMO_MODEL_WARNING if cfg.model in BUNDLED_MODELS else None,
        recipe=cfg.recipe,
        recipe_line=describe_recipe(cfg, data.size_hw),
        base_model=cfg.model,
        base_model_dir=None if pretrained else BASE_MODEL_DIR,
        finetune=cfg.finetune,
        pretrained=pretrained,
        image_size_hw=data.size_hw,
        head=head,
        labels=labels.to_dict() if labels else {},
        label_percentiles=list(cfg.label_percentiles) if cfg.label_percentiles else None,
        zero_shot_calibration=calibration,
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


def build_trainer(model, cfg: TrainConfig, data: RunData, labels: LabelScheme | None, precision: str, loss_fn,
                  progress: bool, warning: str | None = None, completion: dict | None = None) -> DepthTrainer:
    """The Trainer subclass with its datasets, batch transforms, metrics and evaluation cadence.
    `completion` (a completion run's settings): examples with hidden holes and a prompt
    (data.completion), scored on the hidden pixels of fixed validation holes."""
    # Batches per optimiser step: one per process (torchrun), or one per GPU when a single process
    # drives several (the Trainer's DataParallel); one on CPU.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    replicas = world_size if world_size > 1 else max(1, torch.cuda.device_count())
    train, val = data.prepared["train"], data.prepared["val"]
    every = default_eval_steps(len(train), cfg.batch_size, cfg.epochs, cfg.max_steps, replicas)
    if completion:
        holes = {"kinds": completion["hole_kinds"], "prompt_scale": completion["prompt_scale"],
                 "hidden_weight": completion["hidden_weight"],
                 "prompt_channels": completion["prompt_channels"]}
        datasets = (CompletionDataset(train, **holes),
                    CompletionDataset(val, fixed=True, seed=cfg.seed, **holes))
        metrics, more = make_completion_metrics(), {"completion_output": completion["output"]}
    else:
        datasets = (DepthDataset(train, labels), DepthDataset(val, labels))
        metrics = make_compute_metrics(labels, relative=cfg.loss in SCALE_INVARIANT_LOSSES)
        more = {"panel_capture": val[0]}  # a completion run draws no panel (it needs a prompt)
    trainer = DepthTrainer(
        model=model,
        args=build_training_arguments(cfg, precision, every),
        train_dataset=datasets[0],
        eval_dataset=datasets[1],
        transform=BatchTransform(flip=cfg.flip, jitter_strength=JITTER_STRENGTH if cfg.color_jitter else 0.0),
        compute_metrics=metrics,
        loss_fn=loss_fn,
        label_scheme=labels,
        panel_warning=warning,
        part_rates=cfg.part_rates(),
        **more,
    )
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
