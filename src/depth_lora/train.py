"""One training run, start to finish: split, data, model + LoRA, Trainer, output folder."""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from depth_lora import __version__
from depth_lora.config import RESUME_MUST_MATCH, TrainConfig
from depth_lora.data import find_captures, load_split, make_split, save_split
from depth_lora.dataset import (
    DepthDataset,
    LabelScheme,
    default_image_size,
    depth_range_mm,
    prepare_captures,
)
from depth_lora.errors import ConfigError, DataError
from depth_lora.losses import RELATIVE_LOSSES, build_loss
from depth_lora.model import (
    apply_lora,
    build_model,
    enable_activation_checkpointing,
    trainable_parameters_line,
)
from depth_lora.predict import META_FILE
from depth_lora.trainer import HEADLINE_METRIC, DepthTrainer, make_compute_metrics, resolve_precision

RUN_CONFIG_FILE = "train_config.json"  # written first: marks the folder as a depth-lora run
KEEP_IN_OUTPUT = {"README.md", ".gitkeep"}


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


def prepare_output_dir(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a non-empty folder needs --resume or --overwrite.

    --overwrite only ever deletes a folder that an earlier depth-lora run wrote (it holds
    train_config.json), never a folder of other files.
    """
    leftovers = [p for p in output.iterdir() if p.name not in KEEP_IN_OUTPUT] if output.is_dir() else []
    if resume:
        if not output.is_dir() or get_last_checkpoint(str(output)) is None:
            raise DataError(output, "--resume: no checkpoint-* folder to resume from")
        return
    if not leftovers:
        output.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise DataError(output, "output folder is not empty: pass --resume to continue the run in it, "
                                "--overwrite to replace it, or choose another --output")
    if not (output / RUN_CONFIG_FILE).is_file():
        raise DataError(output, f"--overwrite refused: the folder holds files but no {RUN_CONFIG_FILE}, "
                                "so it is not a depth-lora run; choose another --output")
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_resume_config(output: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run with options that change the model, the labels or the data."""
    path = output / RUN_CONFIG_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    changed = [k for k in RESUME_MUST_MATCH if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        diffs = ", ".join(f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ConfigError(f"{output}: --resume with different options ({diffs}); "
                          "resume with the run's own options or start a new --output")


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) from the PNG header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError as exc:
        raise DataError(path, f"cannot read image ({exc})") from None


def build_training_arguments(cfg: TrainConfig, precision: str) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=cfg.output,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        eval_strategy="steps" if cfg.eval_steps else "epoch",
        save_strategy="steps" if cfg.eval_steps else "epoch",
        eval_steps=cfg.eval_steps,
        save_steps=cfg.eval_steps,
        load_best_model_at_end=True,
        metric_for_best_model=HEADLINE_METRIC,
        greater_is_better=False,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"],
        remove_unused_columns=False,  # our batches carry labels and valid_mask, not model kwargs
        label_names=["labels", "valid_mask"],
        dataloader_num_workers=cfg.num_workers,
        dataloader_pin_memory=cuda,
        seed=cfg.seed,
        # DDP: with LoRA (no trainable bias) every trainable parameter is used in forward; a full
        # fine-tune or trainable biases include parameters that get no gradient (mask token, ...).
        ddp_find_unused_parameters=cfg.finetune == "full" or cfg.lora_bias != "none",
    )


def run_training(cfg: TrainConfig, progress: bool = True) -> TrainResult:
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
        prepare_output_dir(output, cfg.resume, cfg.overwrite)
        if cfg.resume:
            check_resume_config(output, cfg)
        (output / RUN_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    set_seed(cfg.seed)

    split_path = output / "split.json"
    resumed_split = cfg.resume and split_path.is_file()
    if resumed_split:
        split = load_split(split_path)
    elif given_split is not None:
        split = given_split
    else:
        split = make_split([f.key for f in files], cfg.val_fraction, cfg.test_fraction, cfg.seed)
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
    prepared = {
        name: prepare_captures([by_key[k] for k in split[name]], size_hw, cfg.depth_unit, progress)
        for name in ("train", "val", "test")
    }
    labels = LabelScheme(cfg.labels, *depth_range_mm(prepared["train"]))
    train_mean_mm = float(np.nanmean(np.concatenate([c.depth_mm.ravel() for c in prepared["train"]])))

    model, model_info = build_model(cfg.model, seed=cfg.seed)
    if not model_info.get("pretrained", False) and rank0:
        # A random-init base cannot be rebuilt from a hub id: keep its weights with the adapter.
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

    meta = {
        "format_version": 1,
        "base_model": cfg.model,
        "base_model_dir": "base_model" if not model_info.get("pretrained", False) else None,
        "finetune": cfg.finetune,  # "full": OUT holds a whole model (config.json), not an adapter
        "pretrained": bool(model_info.get("pretrained", False)),
        "image_size_hw": list(size_hw),
        "labels": labels.to_dict(),
        # The constant baseline: mean valid depth of the training split (at the model's input size).
        "train_depth_mean_mm": train_mean_mm,
        "split_file": "split.json",
        "data": str(cfg.data),
        "depth_unit": cfg.depth_unit,
        "precision": precision,
        "versions": library_versions(),
        "config": cfg.to_dict(),
    }
    if rank0 and not resumed_split:
        origin = {"from_split": str(cfg.split)} if cfg.split else {"seed": cfg.seed}
        save_split(split, split_path, **origin, data=str(cfg.data))

    args = build_training_arguments(cfg, precision)
    if not progress:
        args.disable_tqdm = True
    trainer = DepthTrainer(
        model=model,
        args=args,
        train_dataset=DepthDataset(prepared["train"], labels, flip=cfg.flip, jitter=cfg.color_jitter),
        eval_dataset=DepthDataset(prepared["val"], labels),
        compute_metrics=make_compute_metrics(labels, relative=cfg.loss in RELATIVE_LOSSES),
        loss_fn=loss_fn,
        label_scheme=labels,
        panel_capture=prepared["val"][0],
    )
    trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    log_history = list(trainer.state.log_history)  # before the final evaluations add to it

    # The best checkpoint (lowest validation RMSE in mm) is loaded at the end; evaluate it.
    metrics = {"val": _strip(trainer.evaluate(metric_key_prefix="eval"), "eval_")}
    if prepared["test"]:
        test_set = DepthDataset(prepared["test"], labels)
        metrics["test"] = _strip(trainer.evaluate(test_set, metric_key_prefix="test"), "test_")
    # The PEFT adapter (adapter_config.json + adapter_model.safetensors). PEFT also writes a model
    # card README.md: keep the folder's own README (tracked in git for the default folder) instead.
    readme = output / "README.md"
    readme_text = readme.read_text() if readme.is_file() else None
    trainer.save_model(str(output))
    if readme_text is not None and trainer.is_world_process_zero():
        readme.write_text(readme_text)
    if trainer.is_world_process_zero():
        meta["best_checkpoint"] = trainer.state.best_model_checkpoint
        meta["global_step"] = trainer.state.global_step
        (output / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return TrainResult(output, metrics, trainable, trainer.model, log_history)


def _strip(metrics: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}
