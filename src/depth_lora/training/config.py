"""The one typed training config: CLI flags and/or a YAML/JSON file, validated, saved with the run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, get_type_hints

from depth_lora.data.split import parse_group_by
from depth_lora.errors import ConfigError
from depth_lora.model.choices import DEFAULT_MODEL, MODEL_ALIASES, check_lora_settings
from depth_lora.runs.task import task_of
from depth_lora.training.coerce import coerce_value

DEFAULT_DATA = "DATASET_DEVOIR"
DEFAULT_OUTPUT = "depth_anything_finetuned_lora_zivid"
DEMO_COUNT = 30  # demo captures quickstart and demo-data make: 10 sessions, 2 for val and 2 for test

# Training recipes: the settings a run takes for every option left unset (None). Explicit options
# (flags, config file, Python) always win. `original` is exactly the seed project's notebook; it
# stays one flag away for anyone reproducing it. `recommended` is what this project measured to
# adapt (experiments/domain_adaptation/RESULTS.md) and what published LoRA adaptations of depth
# foundation models do (Surgical-DINO, EndoDAC: LoRA plus a trained head or neck): adapters on every
# backbone Linear layer and the DPT neck's convolutions, the head trained, labels in the pretrained
# head's own direction (inverse depth: near = large), a learning-rate warm-up, and a label range
# from robust percentiles (one stray pixel must not set the scale). Its loss (SiLog) and rate
# (2e-3) were chosen on validation captures only: experiments/recipe_check/RESULTS.md.
# Evaluations in a row without a better validation RMSE after which the recommended recipe stops
# (transformers' EarlyStoppingCallback); chosen on validation: experiments/early_stopping/RESULTS.md.
EARLY_STOPPING = 4
RECIPES: dict[str, dict] = {
    "original": {
        "epochs": 10.0, "batch_size": 4, "learning_rate": 5e-5, "warmup_steps": 0.0,
        "lora_rank": 16, "lora_alpha": 32.0, "lora_dropout": 0.05, "lora_targets": ["qkv"],
        "train_head": False, "loss": "mse", "labels": "minmax", "label_percentiles": [0.0, 100.0],
        "early_stopping": 0,
    },
    "recommended": {
        "epochs": 10.0, "batch_size": 4, "learning_rate": 2e-3, "warmup_steps": 0.1,
        "lora_rank": 16, "lora_alpha": 32.0, "lora_dropout": 0.05,
        "lora_targets": ["qkv", "out", "mlp", "neck"], "train_head": True, "loss": "silog",
        "labels": "inverse", "label_percentiles": [0.5, 99.5], "early_stopping": EARLY_STOPPING,
    },
}
DEFAULT_RECIPE = "recommended"
# What a completion run (--task complete) changes in a recipe: its loss is fixed (weighted squared
# error in mm over the prompt's range, training.losses.CompletionLoss) and it needs no label scheme;
# its rate is 10x lower (a tiny completer from demo-pretrained at the recipe's 2e-3 left held-out
# holes at 145 mm against 34 for its own harmonic prompt, at 2e-4 65 mm: benchmarks/RESULTS.md).
TASK_RECIPE_CHANGES: dict[str, dict] = {
    "complete": {"learning_rate": 2e-4, "loss": None, "labels": None, "label_percentiles": None},
}


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Options left None take the chosen recipe's value."""

    data: str = field(default=DEFAULT_DATA, metadata=_help("captures folder (images/, depth/)"))
    output: str = field(default=DEFAULT_OUTPUT, metadata=_help("output folder for the adapter and logs"))
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_help(
            "hub id, local model folder, a short name: small, base, large (relative), "
            "metric-indoor-small|base|large, metric-outdoor-small|base|large (metric heads); "
            "'demo-pretrained' (tiny, pretrained on synthetic scenes, shipped for offline demos), or a "
            "random init for tests: tiny, tiny-metric, small-random, base-random, large-random"
        ),
    )
    recipe: Literal["recommended", "original"] = field(
        default=DEFAULT_RECIPE,
        metadata=_help("settings for every option not given: 'recommended' (LoRA on the backbone and "
                       "the DPT neck, head trained, inverse-depth labels, warm-up) or 'original' (the "
                       "seed project: LoRA r16 on q/k/v, min-max labels, frozen head, lr 5e-5)"),
    )
    task: Literal["depth", "complete"] = field(
        default="depth",
        metadata=_help("depth: a monocular model, RGB in, depth in mm out (Depth Anything V2 + LoRA); "
                       "complete: a completion model that also reads the camera's measured depth and fills "
                       "its holes (Prompt Depth Anything + LoRA, taught by hiding measured pixels of the "
                       "training captures; run it with `depth-lora complete`)"),
    )
    hole_kinds: list[str] | None = field(
        default=None,
        metadata=_help("--task complete: the kinds of holes hidden in training captures, any of "
                       "other_capture (another capture's holes), blobs (object-sized), edge_bands (beside "
                       "depth edges, like projector shadows) (default: all three)"),
    )
    prompt_validity: bool | None = field(
        default=None,
        metadata=_help("--task complete: also give the completer, as a second prompt channel, where the "
                       "camera measured (else a filled hole and a measured surface look alike to it) "
                       "(default: no)"),
    )
    hidden_weight: float | None = field(
        default=None,
        metadata=_help("--task complete: loss weight of a hidden measured pixel against 1 for a visible "
                       "one (default: 4)"),
    )
    prompt_scale: float | None = field(
        default=None,
        metadata=_help("--task complete: the prompt depth's size against the model's input size (default: "
                       "0.5; the neck's finest fusion map is 1/3.5 of the input)"),
    )
    holes_max_pixels: int | None = field(
        default=None,
        metadata=_help("--task complete: held-out captures are scored at an integer fraction of their size "
                       "within N pixels, as `evaluate --holes-max-pixels` (default: 600000; 0: full size)"),
    )
    epochs: float | None = field(default=None, metadata=_help("training epochs (recipe: 10)"))
    max_steps: int = field(
        default=-1, metadata=_help("stop after this many optimiser steps (-1: use --epochs)")
    )
    batch_size: int | None = field(default=None, metadata=_help("captures per batch and device (recipe: 4)"))
    learning_rate: float | None = field(
        default=None, metadata=_help("AdamW learning rate (recipe: recommended 2e-3, original 5e-5)")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    head_learning_rate: float | None = field(
        default=None, metadata=_help("learning rate of the DPT head when it is trained (--train-head, "
                                     "--finetune full); --learning-rate then drives the adapters, or the "
                                     "backbone and neck (default: --learning-rate)"))
    head_weight_decay: float | None = field(
        default=None, metadata=_help("weight decay of the DPT head (default: --weight-decay)"))
    warmup_steps: float | None = field(
        default=None,
        metadata=_help("linear learning-rate warm-up: a number of steps, or a fraction of all steps "
                       "if below 1 (recipe: recommended 0.1, original 0)"),
    )
    image_size: list[int] | None = field(
        default=None,
        metadata=_help(
            "H W fed to the model, each a multiple of 14 (default: like the checkpoint's processor, "
            "shorter side 518 keeping the aspect of the most common capture size: 1200x1944 -> 518x840)"
        ),
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = field(
        default="auto",
        metadata=_help(
            "auto: bf16 on CUDA if supported, else fp16; bf16 autocast on a CPU that has it, else fp32"
        ),
    )
    lora_rank: int | None = field(default=None, metadata=_help("LoRA rank r (recipe: 16)"))
    lora_alpha: float | None = field(
        default=None, metadata=_help("LoRA alpha, scaling alpha / r (recipe: 32)")
    )
    lora_dropout: float | None = field(
        default=None, metadata=_help("dropout on the LoRA branch (recipe: 0.05)")
    )
    lora_bias: Literal["none", "all", "lora_only"] = field(default="none", metadata=_help("PEFT LoRA bias"))
    use_rslora: bool = field(default=False, metadata=_help(
        "rank-stabilised LoRA (PEFT use_rslora): the update is scaled by alpha / sqrt(r), not alpha / r"))
    use_dora: bool = field(default=False, metadata=_help(
        "DoRA (PEFT use_dora): each adapted weight learns its magnitude apart from its direction"))
    loraplus_ratio: float | None = field(default=None, metadata=_help(
        "LoRA+: the LoRA B matrices learn at this many times --learning-rate (the LoRA+ paper uses 16; "
        "default: the same rate as the A matrices)"))
    lora_targets: list[str] | None = field(
        default=None,
        metadata=_help("layers that get LoRA: any of qkv, out (attention output), mlp (backbone), neck "
                       "(the DPT neck's convolutions) (recipe: recommended qkv out mlp neck, original qkv)"),
    )
    train_head: bool | None = field(
        default=None,
        metadata=_help("also train the DPT head fully, saved with the adapter (recipe: recommended "
                       "yes, original no)"),
    )
    finetune: Literal["lora", "full"] = field(
        default="lora",
        metadata=_help("lora: LoRA adapters (the point of this tool); full: train every weight, no "
                       "adapter (a baseline; saves a whole model)"),
    )
    loss: Literal["mse", "l1", "silog", "ssi"] | None = field(
        default=None,
        metadata=_help("masked loss on the labels; ssi (scale-and-shift invariant) learns relative "
                       "depth only, for pretraining (recipe: recommended silog, original mse)"),
    )
    labels: Literal["minmax", "inverse", "metric"] | None = field(
        default=None,
        metadata=_help("minmax: (z - min) / (max - min), growing with distance (the original's "
                       "scheme); inverse: min / z, near = large like the pretrained head's disparity; "
                       "min/max from the training split (recipe: recommended inverse, original minmax); "
                       "metric: depth in metres, the only labels of a metric head (chosen for it)"),
    )
    head: Literal["checkpoint", "metric"] = field(
        default="checkpoint",
        metadata=_help("checkpoint: keep the checkpoint's head type (relative or metric, from its "
                       "config); metric: turn a relative checkpoint's head into a metric one (sigmoid x "
                       "--max-depth, in metres), the way Depth Anything's metric models were made"),
    )
    max_depth: int | None = field(
        default=None,
        metadata=_help("metric heads: the head's range in whole metres (transformers stores it as an "
                       "integer), output = sigmoid x max_depth (checkpoint: 20 indoor, 80 outdoor). A bin "
                       "at 0.5 m uses a sliver of a 20 m sigmoid; a range just above your farthest depth "
                       "gives the head finer steps, but nothing beyond it can ever be predicted"),
    )
    label_percentiles: list[float] | None = field(
        default=None,
        metadata=_help("percentiles of the training split's valid depths that set the label range "
                       "min/max (recipe: recommended 0.5 99.5, robust to stray pixels; original 0 100)"),
    )
    flip: bool = field(default=True, metadata=_help("augment with random horizontal flips"))
    color_jitter: bool = field(
        default=True, metadata=_help("augment with mild brightness/contrast/saturation jitter")
    )
    val_fraction: float = field(default=0.1, metadata=_help("share of captures held out for validation"))
    test_fraction: float = field(default=0.1, metadata=_help("share of captures held out for the final test"))
    depth_unit: Literal["mm", "m"] = field(default="mm", metadata=_help("unit of the depth .npy files"))
    group_by: str = field(
        default="session",
        metadata=_help("captures that must stay in one split: 'session' (stamps YY-MM-DD-HH-MM-SS or "
                       "YYYY-MM-DD_HH-MM-SS less than 10 minutes apart; unstamped names alone), 'none' "
                       "(every capture alone), or 'regex:PATTERN' (the first group of PATTERN names the "
                       "group)"),
    )
    seed: int = field(default=0, metadata=_help("seed for the split, initialisation and data order"))
    split: str | None = field(
        default=None,
        metadata=_help("reuse the train/val/test split of an earlier run (its split.json), so runs "
                       "are compared on the same held-out captures; default: drawn with --seed"),
    )
    logging_steps: int = field(default=10, metadata=_help("log the training loss every N steps"))
    eval_steps: int | None = field(
        default=None,
        metadata=_help("evaluate and save a checkpoint every N steps, and at the last step (default: "
                       "every epoch, or less often on long runs of short epochs: about 10 per run)"),
    )
    early_stopping: int | None = field(
        default=None,
        metadata=_help("stop when the validation RMSE has not improved for N evaluations in a row; the "
                       "best checkpoint is kept either way; 0: run every step (recipe: recommended "
                       f"{EARLY_STOPPING}, original 0)"),
    )
    save_total_limit: int = field(default=3, metadata=_help("checkpoints kept (the best one is always kept)"))
    num_workers: int | None = field(
        default=None,
        metadata=_help("DataLoader worker processes (default: 0 on CPU, where the captures are in memory "
                       "and a batch is only stacked, so workers would cost process start-up and a CPU "
                       "core the model needs; min(4, CPU cores / 2) on CUDA, to stack batches into "
                       "pinned memory while the GPU computes)"),
    )
    no_cache: bool = field(
        default=False,
        metadata=_help("decode and resize every capture, without the on-disk cache of prepared captures "
                       "($DEPTH_LORA_CACHE, default ~/.cache/depth_lora/prepared; entries are keyed by "
                       "each file's path, size and modification time, and the input size)"),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("recompute backbone activations in backward: less memory, slower steps "
                       "(benchmarks/RESULTS.md measures both)"),
    )
    compile: bool = field(default=False, metadata=_help(
        "torch.compile the model (the Trainer's torch_compile): the first step compiles it (a minute or "
        "more), later ones may run faster, mostly on a CUDA GPU; `depth-lora bench --compile` measures it"))
    resume: bool = field(default=False, metadata=_help("continue from the last checkpoint in --output"))
    overwrite: bool = field(default=False, metadata=_help("replace an earlier run in --output"))

    def __post_init__(self):
        self._check_types()
        task = task_of(self)
        task.check_options(self)  # before the recipe fills anything in
        self.model = MODEL_ALIASES.get(self.model, self.model)
        for name, value in self.recipe_values().items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self._check_types()  # recipe values too (lists copied, types checked)
        parse_group_by(self.group_by)  # ConfigError on a bad value
        task.check_config(self)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1): validation picks the best checkpoint, "
                              f"got {self.val_fraction}")
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("set --epochs > 0 or --max-steps > 0")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ConfigError(f"--eval-steps must be >= 1, got {self.eval_steps}")
        if self.early_stopping < 0:
            raise ConfigError(f"--early-stopping must be >= 0 evaluations, got {self.early_stopping}")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise ConfigError(f"--head-learning-rate must be > 0, got {self.head_learning_rate}")
        if self.head_learning_rate is not None and not (self.train_head or self.finetune == "full"):
            raise ConfigError("--head-learning-rate needs a trained head: add --train-head (the recipe "
                              f"'{self.recipe}' freezes it) or --finetune full")
        if self.loraplus_ratio is not None and self.loraplus_ratio <= 0:
            raise ConfigError(f"--loraplus-ratio must be > 0, got {self.loraplus_ratio}")
        if self.loraplus_ratio is not None and self.finetune != "lora":
            raise ConfigError("--loraplus-ratio sets the LoRA B matrices' rate: it needs --finetune lora")
        for name in ("weight_decay", "head_weight_decay"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.image_size is not None:
            try:
                self.image_size = [int(v) for v in self.image_size]
            except (TypeError, ValueError):
                raise ConfigError(f"--image-size takes two integers H W, got {self.image_size}") from None
            if len(self.image_size) != 2 or any(v < 14 or v % 14 for v in self.image_size):
                raise ConfigError(
                    f"--image-size takes H W, each a multiple of 14 (>= 14), got {self.image_size}"
                )
        check_lora_settings(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_bias,
                            self.lora_targets)
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")

    def recipe_values(self) -> dict:
        """The recipe's settings for this run's task (TASK_RECIPE_CHANGES)."""
        return RECIPES[self.recipe] | TASK_RECIPE_CHANGES.get(self.task, {})

    def _check_types(self) -> None:
        """Coerce and check every field against its annotation (values from the Python API or a
        config file skip argparse: "5e-5" may arrive as a string, a typo'd choice is not caught)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_field(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def part_rates(self) -> dict[str, tuple[float, float]]:
        """The optimiser's (learning rate, weight decay) for the body and the head, and for the LoRA
        B matrices under LoRA+ (training/optim.py)."""
        head_lr = self.head_learning_rate if self.head_learning_rate is not None else self.learning_rate
        head_wd = self.head_weight_decay if self.head_weight_decay is not None else self.weight_decay
        rates = {"body": (self.learning_rate, self.weight_decay), "head": (head_lr, head_wd)}
        if self.loraplus_ratio is not None:
            rates["lora_B"] = (self.learning_rate * self.loraplus_ratio, self.weight_decay)
        return rates

    def explicit_options(self) -> dict:
        """The options that differ from the recipe (what a user changed), for the run's banner."""
        return {k: getattr(self, k) for k, v in self.recipe_values().items() if getattr(self, k) != v}


_FIELD_TYPES = get_type_hints(TrainConfig)


def coerce_field(name: str, value):
    """`value` converted to the type of TrainConfig field `name`; ConfigError if it cannot be."""
    return coerce_value(value, _FIELD_TYPES[name], "--" + name.replace("_", "-"))


# Changing these on --resume would continue a checkpoint with a different model or labels.
RESUME_MUST_MATCH = (
    "task", "prompt_validity", "prompt_scale", "data", "model", "image_size", "lora_rank", "lora_alpha",
    "lora_bias", "lora_targets", "use_rslora", "use_dora",
    "train_head", "finetune", "labels", "label_percentiles", "val_fraction", "test_fraction",
    "group_by", "split", "seed", "depth_unit",
)


def field_names(cls=TrainConfig) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
