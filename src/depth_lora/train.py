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
from depth_lora.calibration import fit_zero_shot_calibration
from depth_lora.config import TrainConfig
from depth_lora.data import (
    find_captures,
    group_captures,
    load_split,
    make_split,
    split_groups,
    straddling_groups,
)
from depth_lora.dataset import (
    DepthDataset,
    LabelScheme,
    default_image_size,
    depth_range_mm,
    open_cache,
    prepare_captures,
)
from depth_lora.errors import ConfigError, DataError
from depth_lora.evaluate import run_evaluation
from depth_lora.losses import RELATIVE_LOSSES, build_loss
from depth_lora.model import (
    BUNDLED_MODELS,
    DEMO_MODEL_WARNING,
    apply_lora,
    build_model,
    enable_activation_checkpointing,
    quiet_weights_io,
    trainable_parameters_line,
)
from depth_lora.model_card import write_model_card
from depth_lora.outputs import (
    CARD_FILE,
    SPLIT_FILE,
    write_meta,
    write_metrics,
    write_run_config,
    write_split,
)
from depth_lora.precision import resolve_precision
from depth_lora.run_setup import (
    CLI_OPTIONS,
    OptionNames,
    build_training_arguments,
    camera_of,
    check_resume_config,
    image_size_of,
    prepare_output_dir,
    resolve_head,
)
from depth_lora.text import plural
from depth_lora.text import size_hw as format_size_hw
from depth_lora.trainer import (
    DepthTrainer,
    default_eval_steps,
    make_compute_metrics,
    use_log_lines,
)
from depth_lora.transforms import JITTER_STRENGTH, BatchTransform

# PEFT's save_pretrained updates a model card and huggingface_hub warns "Repo card metadata block was
# not found" for ours: not something a user can act on.
logging.getLogger("huggingface_hub.repocard").setLevel(logging.ERROR)

@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict  # {"val": {...}, "test": {...}} in mm, at the model's input size
    trainable_line: str
    model: torch.nn.Module  # the trained PeftModel, best checkpoint loaded
    log_history: list[dict]  # the Trainer's logs of the training loop (loss, eval_* each epoch)


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


def run_training(cfg: TrainConfig, progress: bool = True, names: OptionNames = CLI_OPTIONS) -> TrainResult:
    """Fine-tune `cfg.model` with LoRA on `cfg.data` and write everything to `cfg.output`.

    Returns the output folder, the final validation/test metrics in mm and PEFT's
    trainable-parameters line. Raises DepthLoraError subclasses on bad input.
    """
    output = Path(cfg.output)
    files = find_captures(cfg.data)
    if Path(cfg.data).resolve() == output.resolve():
        raise ConfigError("--output must not be the data folder")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    precision = resolve_precision(cfg.precision)
    loss_fn = build_loss(cfg.loss)
    given_split = load_split(cfg.split) if cfg.split else None  # read before --overwrite clears OUT
    if rank0:
        prepare_output_dir(output, cfg.resume, cfg.overwrite, names)
        if cfg.resume:
            check_resume_config(output, cfg)
        write_run_config(output, cfg.to_dict())
    set_seed(cfg.seed)

    split_path = output / SPLIT_FILE
    resumed_split = cfg.resume and split_path.is_file()
    groups = group_captures([f.key for f in files], cfg.group_by)
    if resumed_split:
        split = load_split(split_path)
    elif given_split is not None:
        split = given_split
    else:
        split = make_split([f.key for f in files], cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
        if not split["val"] and len(files) >= 3:
            # Too few groups to hold any out: split single captures, and say so everywhere.
            print(f"WARNING: {len(set(groups.values()))} group(s) of captures (--group-by {cfg.group_by}): "
                  "too few to keep groups apart in train/val/test; splitting single captures instead. "
                  "Held-out captures share sessions with training captures: held-out numbers will be "
                  "optimistic. Capture more sessions, or choose --group-by.", flush=True)
            split = make_split([f.key for f in files], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    leaky = bool(straddling_groups(split, groups))
    if leaky and progress:
        print(f"WARNING: the split puts captures of one session in more than one split (--group-by "
              f"{cfg.group_by}): held-out numbers will be optimistic.", flush=True)
    held_out = len(split["val"]) + len(split["test"])
    if held_out > 2 * (cfg.val_fraction + cfg.test_fraction) * len(files) and progress:
        print(f"WARNING: sessions of very unequal size: {held_out} of {len(files)} captures are held "
              "out for validation and test, far more than --val-fraction and --test-fraction ask; "
              "training gets fewer captures.", flush=True)
    by_key = {f.key: f for f in files}
    missing = [k for s in split.values() for k in s if k not in by_key]
    if missing:
        source = split_path if resumed_split or not cfg.split else Path(cfg.split)
        raise DataError(source, f"split names captures not in {cfg.data}: {', '.join(missing[:5])}")
    if cfg.split and not (split["train"] and split["val"]):
        raise DataError(cfg.split, "split has no train or no validation captures")
    if not split["val"]:
        raise DataError(cfg.data, f"{len(files)} capture(s): need at least 3 (train, val, test)")

    size_hw = tuple(cfg.image_size) if cfg.image_size else default_image_size(
        [image_size_of(by_key[k].image) for k in split["train"]]
    )
    cache = open_cache(not cfg.no_cache)
    prepared = {
        name: prepare_captures([by_key[k] for k in split[name]], size_hw, cfg.depth_unit, progress, cache)
        for name in ("train", "val", "test")
    }
    train_mean_mm = float(np.nanmean(np.concatenate([c.depth_mm.ravel() for c in prepared["train"]])))

    model, model_info = build_model(cfg.model, seed=cfg.seed)
    calibration = None
    if rank0:  # the baseline to beat: the base model with one scale and shift fitted on train
        if progress:
            count = plural(len(prepared["train"]), "training capture")
            print(f"Calibrating the zero-shot baseline on {count}")
        calibration = fit_zero_shot_calibration(model, prepared["train"], prepared["val"], precision)
        calibration = calibration.to_dict()
    head = resolve_head(cfg, model)  # after the calibration: zero-shot is the checkpoint as published
    if rank0:
        write_run_config(output, cfg.to_dict())  # with the labels the head resolved
    labels = LabelScheme(cfg.labels, *depth_range_mm(prepared["train"], cfg.label_percentiles))
    if not model_info.get("pretrained", False) and rank0:
        # A random-init base cannot be rebuilt from a hub id: keep its weights with the adapter.
        with quiet_weights_io():
            model.save_pretrained(output / "base_model")
    if cfg.finetune == "lora":
        model = apply_lora(
            model,
            rank=cfg.lora_rank,
            alpha=cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            bias=cfg.lora_bias,
            targets=tuple(cfg.lora_targets),
            train_head=cfg.train_head,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
    else:
        model.requires_grad_(True)
        if cfg.gradient_checkpointing:
            enable_activation_checkpointing(model)
    trainable = trainable_parameters_line(model)
    print(trainable)
    if rank0 and progress:
        print(describe_recipe(cfg, size_hw))

    meta = {
        **({"warning": DEMO_MODEL_WARNING} if cfg.model in BUNDLED_MODELS else {}),
        "recipe": cfg.recipe,
        "recipe_line": describe_recipe(cfg, size_hw),
        "base_model": cfg.model,
        "base_model_dir": "base_model" if not model_info.get("pretrained", False) else None,
        "finetune": cfg.finetune,  # "full": OUT holds a whole model (config.json), not an adapter
        "pretrained": bool(model_info.get("pretrained", False)),
        "image_size_hw": list(size_hw),
        "head": head,
        "labels": labels.to_dict(),
        "label_percentiles": list(cfg.label_percentiles),
        "zero_shot_calibration": calibration,
        "split_leaky": leaky,
        # The constant baseline: mean valid depth of the training split (at the model's input size).
        "train_depth_mean_mm": train_mean_mm,
        "split_file": SPLIT_FILE,
        "camera": camera_of(files, cfg),
        "data": str(cfg.data),
        "depth_unit": cfg.depth_unit,
        "precision": precision,
        "versions": library_versions(),
        "config": cfg.to_dict(),
    }
    if rank0 and not resumed_split:
        origin = {"from_split": str(cfg.split)} if cfg.split else {"seed": cfg.seed}
        write_split(output, split, **origin, data=str(cfg.data), group_by=cfg.group_by, leaky=leaky,
                   groups={k: groups.get(k, k) for name in split for k in split[name]},
                   split_groups=split_groups(split, groups))

    # Batches per optimiser step: one per process (torchrun), or one per GPU when a single process
    # drives several (the Trainer's DataParallel); one on CPU.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    replicas = world_size if world_size > 1 else max(1, torch.cuda.device_count())
    every = default_eval_steps(len(prepared["train"]), cfg.batch_size, cfg.epochs, cfg.max_steps, replicas)
    trainer = DepthTrainer(
        model=model,
        args=build_training_arguments(cfg, precision, every),
        train_dataset=DepthDataset(prepared["train"], labels),
        eval_dataset=DepthDataset(prepared["val"], labels),
        transform=BatchTransform(flip=cfg.flip, jitter_strength=JITTER_STRENGTH if cfg.color_jitter else 0.0),
        compute_metrics=make_compute_metrics(labels, relative=cfg.loss in RELATIVE_LOSSES),
        loss_fn=loss_fn,
        label_scheme=labels,
        panel_capture=prepared["val"][0],
    )
    use_log_lines(trainer, progress)
    with quiet_weights_io():  # checkpoints of a full fine-tune would each draw a "Writing" bar
        trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    if cfg.finetune == "full":
        reload_full_model(trainer.model, trainer.state.best_model_checkpoint)
    log_history = list(trainer.state.log_history)  # before the final evaluations add to it

    # The best checkpoint (lowest validation RMSE in mm) is loaded at the end: its validation
    # metrics are those of its own evaluation during training (at the model's input size).
    metrics = {"val": best_validation(log_history, trainer.state.best_model_checkpoint)}
    if not metrics["val"]:
        metrics["val"] = _strip(trainer.evaluate(metric_key_prefix="eval"), "eval_")
    metrics["val"]["resolution"] = f"model input, {format_size_hw(size_hw)}"
    # The PEFT adapter (adapter_config.json + adapter_model.safetensors). PEFT also writes a README.md
    # template: our model card replaces it below, but a README the folder had before is kept.
    readme = output / CARD_FILE
    readme_before = readme.read_text() if readme.is_file() else None
    with quiet_weights_io():
        trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        readme.write_text(readme_before) if readme_before is not None else readme.unlink(missing_ok=True)
    if trainer.is_world_process_zero():
        meta["best_checkpoint"] = trainer.state.best_model_checkpoint
        meta["global_step"] = trainer.state.global_step
        write_meta(output, meta)
        if prepared["test"]:
            # The same numbers `depth-lora evaluate` prints: every row, at full resolution.
            report = run_evaluation(cfg.data, output, split="test", progress=False, precision=precision)
            metrics["test"] = {**{m: report.mean[m] for m in report.methods}, "comparison": report.comparison,
                               "resolution": "full (each capture's own)", "precision": report.precision,
                               "notes": report.notes()}
        write_metrics(output, metrics)
        write_model_card(output, meta, metrics, split)
    return TrainResult(output, metrics, trainable, trainer.model, log_history)


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


def describe_recipe(cfg: TrainConfig, size_hw) -> str:
    """What this run trains, in one paragraph: the recipe, every setting it resolved to, and the
    options the user changed from it."""
    if cfg.finetune == "full":
        what = "full fine-tuning (every weight)"
    else:
        head = " + the DPT head trained" if cfg.train_head else ", head frozen"
        what = (f"LoRA r{cfg.lora_rank} (alpha {cfg.lora_alpha:g}, dropout {cfg.lora_dropout:g}) on "
                f"{', '.join(cfg.lora_targets)}{head}")
    warmup = (f"{cfg.warmup_steps:.0%} of the steps" if 0 < cfg.warmup_steps < 1
              else f"{int(cfg.warmup_steps)} steps")
    length = f"{cfg.max_steps} steps" if cfg.max_steps > 0 else f"{cfg.epochs:g} epochs"
    lo, hi = cfg.label_percentiles
    text = (f"Recipe '{cfg.recipe}': {what}; {cfg.labels} labels (range: percentiles {lo:g}-{hi:g} of the "
            f"training depths), {cfg.loss} loss; lr {cfg.learning_rate:g}, warm-up {warmup}, batch "
            f"{cfg.batch_size}, {length}; input {format_size_hw(size_hw)}")
    changed = cfg.explicit_options()
    if changed:
        text += "; changed from the recipe: " + ", ".join(f"{k} {v}" for k, v in changed.items())
    return text + "."


def _strip(metrics: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}
