"""What a training run trains, in one paragraph: printed before training and kept in the record."""

from __future__ import annotations

from depth_lora.model.choices import lora_variant
from depth_lora.runs.task import task_of
from depth_lora.text import size_hw as format_size_hw
from depth_lora.training.config import TrainConfig


def describe_recipe(cfg: TrainConfig, size_hw=None) -> str:
    """What this run trains, in one paragraph: the recipe, every setting it resolved to, and the
    options the user changed from it. `size_hw`: the input size, when the captures fixed it."""
    size_hw = size_hw or cfg.image_size
    if cfg.finetune == "full":
        what = "full fine-tuning (every weight)"
    else:
        head = " + the DPT head trained" if cfg.train_head else ", head frozen"
        what = (f"{lora_variant(cfg.use_rslora, cfg.use_dora)} r{cfg.lora_rank} (alpha {cfg.lora_alpha:g}, "
                f"dropout {cfg.lora_dropout:g}) on "
                f"{', '.join(cfg.lora_targets)}{head}")
    warmup = (f"{cfg.warmup_steps:.0%} of the steps" if 0 < cfg.warmup_steps < 1
              else f"{int(cfg.warmup_steps)} steps")
    length = f"{cfg.max_steps} steps" if cfg.max_steps > 0 else f"{cfg.epochs:g} epochs"
    if cfg.early_stopping:
        length += f" (or fewer: stops after {cfg.early_stopping} evaluations without a better validation)"
    size = format_size_hw(size_hw) if size_hw else "like the checkpoint's processor (518 on the short side)"
    more_rates = "" if cfg.head_learning_rate is None else f" (head {cfg.head_learning_rate:g})"
    if cfg.loraplus_ratio is not None:
        more_rates += f" (LoRA+: B matrices x{cfg.loraplus_ratio:g})"
    what, task = task_of(cfg).describe(cfg, what)
    text = (f"Recipe '{cfg.recipe}': {what}; {task}; lr {cfg.learning_rate:g}{more_rates}, warm-up {warmup}, "
            f"batch {cfg.batch_size}, {length}; input {size}")
    changed = cfg.explicit_options()
    if changed:
        text += "; changed from the recipe: " + ", ".join(f"{k} {v}" for k, v in changed.items())
    return text + "."
