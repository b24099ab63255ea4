"""What a training run settles before its first step: the output folder (never mixing runs), the
resume check, the depth head and its labels, the camera, and the Trainer's arguments."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from depth_lora.data.captures import load_xyz_mm
from depth_lora.errors import ConfigError, DataError
from depth_lora.model.heads import head_type, make_metric_head
from depth_lora.model.precision import resolve_device
from depth_lora.runs.folder import RUN_CONFIG_FILE, is_run_folder, read_run_config, trained_no_step
from depth_lora.runs.task import task_of
from depth_lora.training.config import RESUME_MUST_MATCH, TrainConfig
from depth_lora.training.trainer import HEADLINE_METRIC, default_eval_steps

# What a run folder may hold before a run, never counted as an earlier run nor removed by --overwrite:
# a README, git's placeholder, and the dataset analysis (`depth-lora analyze --json OUT/analysis/...`).
KEEP_IN_OUTPUT = {"README.md", ".gitkeep", "analysis"}


@dataclass(frozen=True)
class OptionNames:
    """How the caller spells the output-folder options, for messages a user can act on (the CLI's
    flags, quickstart's, or the notebook's parameters); None: the caller has no such option."""

    resume: str | None = "--resume"
    overwrite: str = "--overwrite"
    output: str = "--output"


CLI_OPTIONS = OptionNames()
NOTEBOOK_OPTIONS = OptionNames(resume=None, overwrite="OVERWRITE = True", output="OUTPUT")


def check_output_dir(output: Path, resume: bool, overwrite: bool, names: OptionNames = CLI_OPTIONS) -> None:
    """Refuse to mix runs, before any work: a non-empty folder needs resume or overwrite, said in
    `names`; overwrite only ever replaces a folder that an earlier depth-lora run wrote (it holds
    train_config.json), never a folder of other files. Writes nothing."""
    if resume:
        if not output.is_dir() or get_last_checkpoint(str(output)) is None:
            raise DataError(output, f"{names.resume}: no checkpoint-* folder to resume from")
        return
    if not _leftovers(output) or trained_no_step(output):
        return
    if not overwrite:
        choices = ([f"{names.resume} to continue the run in it"] if names.resume else []) + [
            f"{names.overwrite} to replace it", f"another {names.output} to keep it"]
        raise DataError(output, "output folder is not empty (an earlier run is never replaced silently): "
                                + ", ".join(choices))
    if not is_run_folder(output):
        raise DataError(output, f"{names.overwrite} refused: the folder holds files but no "
                                f"{RUN_CONFIG_FILE}, so it is not a depth-lora run; "
                                f"choose another {names.output}")


def prepare_output_dir(output: Path, resume: bool, overwrite: bool, names: OptionNames = CLI_OPTIONS) -> None:
    """Make the output folder ready for a run (after `check_output_dir`'s checks, repeated here):
    create it, or clear an earlier run (--overwrite) or an earlier start that trained no step."""
    check_output_dir(output, resume, overwrite, names)
    if resume:
        return
    if trained_no_step(output) and not overwrite:
        print(f"{output}: replacing an earlier start that trained no step", flush=True)
    for path in _leftovers(output):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    output.mkdir(parents=True, exist_ok=True)


def _leftovers(output: Path) -> list[Path]:
    return [p for p in output.iterdir() if p.name not in KEEP_IN_OUTPUT] if output.is_dir() else []


def check_resume_config(output: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run with options that change the model, the labels or the data."""
    saved = read_run_config(output)
    if saved is None:
        return
    # A metric head chose metric labels after the config was read: the same run, not a change.
    same = {"labels"} if saved.get("labels") == "metric" and "labels" not in cfg.explicit_options() else set()
    changed = [k for k in RESUME_MUST_MATCH if k in saved and k not in same and saved[k] != getattr(cfg, k)]
    if changed:
        diffs = ", ".join(f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ConfigError(f"{output}: --resume with different options ({diffs}); "
                          "resume with the run's own options or start a new --output")


def resolve_head(cfg: TrainConfig, model) -> dict:
    """Apply --head / --max-depth to the model and choose the labels its head needs (in place).

    A metric head (from the checkpoint, or made with --head metric) learns depth in metres; a
    relative head never does. Returns the head record of depth_lora.json: its type, max_depth,
    and whether it was converted from a relative checkpoint.
    """
    checkpoint_type = head_type(model)
    if cfg.max_depth is not None and cfg.head != "metric" and checkpoint_type != "metric":
        raise ConfigError("--max-depth sets a metric head's range, and this checkpoint's head is relative: "
                          "add --head metric to turn it into a metric head")
    if cfg.head == "metric" or cfg.max_depth is not None:
        make_metric_head(model, cfg.max_depth)
    if head_type(model) == "metric":
        if cfg.labels != "metric" and "labels" in cfg.explicit_options():
            raise ConfigError(f"--labels {cfg.labels}: a metric head predicts depth in metres, so its labels "
                              "are metric (leave --labels unset)")
        cfg.labels = "metric"
    elif cfg.labels == "metric":
        raise ConfigError("--labels metric needs a metric head: a metric checkpoint (e.g. --model "
                          "metric-indoor-small) or --head metric")
    return {"type": head_type(model), "max_depth": model.config.max_depth,
            "converted": checkpoint_type != head_type(model)}


def camera_of(files, cfg: TrainConfig) -> dict | None:
    """The camera's size and pinhole intrinsics, fitted to the first capture's XYZ map (None for
    Z-only depth files): the model card names the camera an adapter was made for."""
    from depth_lora.numeric.geometry import intrinsics_from_xyz

    xyz = load_xyz_mm(files[0].depth, cfg.depth_unit)
    if xyz is None:
        return None
    try:
        intrinsics = intrinsics_from_xyz(xyz, files[0].depth)
    except DataError:
        return None
    return {"size_hw": list(xyz.shape[:2]), "intrinsics": [round(v, 3) for v in intrinsics]}


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) from the PNG header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError as exc:
        raise DataError(path, f"cannot read image ({exc})") from None


def warmup_arguments(warmup: float) -> dict:
    """TrainingArguments for a warm-up of `warmup` steps, or that fraction of all steps if below 1
    (transformers 5 reads a float warmup_steps as a fraction; 4.x needs warmup_ratio)."""
    import transformers

    if warmup >= 1:
        return {"warmup_steps": int(warmup)}
    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": warmup}
    return {"warmup_ratio": warmup}


def default_num_workers(cuda: bool) -> int:
    """DataLoader workers for --num-workers unset: none on CPU (the batches come from memory), a few
    on CUDA (stacking into pinned memory overlaps the GPU's work)."""
    return min(4, max(1, (os.cpu_count() or 2) // 2)) if cuda else 0


def evaluation_cadence(cfg: TrainConfig, data) -> int:
    """Steps between evaluations of a run on `data` (training.run.RunData) when --eval-steps is
    unset (trainer.default_eval_steps), counting the batches of an optimiser step: one per process
    (torchrun), or one per GPU when a single process drives several (the Trainer's DataParallel);
    one on the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    replicas = world_size if world_size > 1 else max(1, torch.cuda.device_count())
    train = len(data.prepared["train"])
    return default_eval_steps(train, cfg.batch_size, cfg.epochs, cfg.max_steps, replicas)


def build_training_arguments(cfg: TrainConfig, precision: str, eval_steps: int) -> TrainingArguments:
    """The Trainer's arguments for `cfg`; `eval_steps`: the cadence when cfg.eval_steps is unset
    (`evaluation_cadence`). A run evaluates and saves every so many steps, never "every epoch": the
    default cadence is at least an epoch's steps (trainer.default_eval_steps)."""
    cuda = resolve_device().type == "cuda"
    every = cfg.eval_steps or eval_steps
    workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers(cuda)
    return TrainingArguments(
        output_dir=cfg.output,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        **warmup_arguments(cfg.warmup_steps),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        eval_strategy="steps",
        save_strategy="steps",
        eval_steps=every,
        save_steps=every,
        load_best_model_at_end=True,
        metric_for_best_model=HEADLINE_METRIC,
        greater_is_better=False,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"],
        remove_unused_columns=False,  # our batches carry labels and valid_mask, not model kwargs
        label_names=list(task_of(cfg).label_names),  # what the task's metrics read of a batch
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,  # not re-spawned for every evaluation
        dataloader_pin_memory=cuda,
        seed=cfg.seed,
        torch_compile=cfg.compile,
        # DDP: with LoRA (no trainable bias) every trainable parameter is used in forward; a full
        # fine-tune or trainable biases include parameters that get no gradient (mask token, ...).
        ddp_find_unused_parameters=cfg.finetune == "full" or cfg.lora_bias != "none",
    )
