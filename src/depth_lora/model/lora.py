"""LoRA with PEFT: which layers to adapt (target groups read from the model), the wrap, and the
trainable-parameters line."""

from __future__ import annotations

import warnings

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import DepthAnythingForDepthEstimation

from depth_lora.errors import ConfigError
from depth_lora.model.choices import TARGET_GROUPS, check_lora_settings, check_target_groups, lora_variant
from depth_lora.model.prompt import PROMPT_BRANCH, is_prompt_model

# PEFT (0.21) calls transformers' deprecated `is_gradient_checkpointing` on every wrap; the warning
# is about PEFT's code, not the user's, and would otherwise show in every notebook cell that trains.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

_QKV_LEAVES = {"q_proj", "k_proj", "v_proj", "query", "key", "value", "qkv"}
_MLP_LEAVES = {"fc1", "fc2", "weights_in", "weights_out"}


def resolve_lora_targets(model: nn.Module, targets=("qkv",)) -> list[str]:
    """Full names of the layers that LoRA should adapt, read from the model.

    Works on both attention naming schemes (transformers 4.x ``attention.attention.query`` ...,
    5.18+ ``attention.q_proj`` ...), so the same call serves any installed version.

    Args:
        model: the model to adapt, not yet wrapped (names are relative to it); only modules
            under a ``backbone`` are used.
        targets: groups among ``"qkv"`` (query/key/value), ``"out"`` (attention output
            projection), ``"mlp"`` (both MLP layers) of the backbone, and ``"neck"`` (the DPT
            neck's Conv2d layers, except the reassemble stage's resize layers).

    Returns:
        Sorted-by-position full module names, usable as ``LoraConfig.target_modules``.

    Raises:
        ConfigError: an unknown group, no group, or a group that matches no layer.
    """
    groups = check_target_groups(targets)
    found: dict[str, list[str]] = {g: [] for g in groups}
    for full_name, module in model.named_modules():
        group = _layer_group(full_name, module)
        if group in found:
            found[group].append(full_name)
    for group, names in found.items():
        if not names:
            raise ConfigError(
                f"LoRA target group {group!r} matched no layer "
                f"(looked for {TARGET_GROUPS[group]})"
            )
    wanted = {n for names in found.values() for n in names}
    return [n for n, _ in model.named_modules() if n in wanted]  # model order


def _layer_group(full_name: str, module: nn.Module) -> str | None:
    """The target group a layer belongs to ("qkv", "out", "mlp", "neck"), or None."""
    parts = full_name.split(".")
    if isinstance(module, nn.Linear) and "backbone" in parts:
        return _target_group(parts[parts.index("backbone") :])
    if type(module) is nn.Conv2d and "neck" in parts and "resize" not in parts and PROMPT_BRANCH not in parts:
        # (a completion model's prompt branch is trained in full, see apply_lora)
        # The first fusion layer has no skip input, so its residual_layer1 is never called: an
        # adapter there would never train (and DDP would stop on its missing gradient).
        return None if ".fusion_stage.layers.0.residual_layer1." in f".{full_name}." else "neck"
    return None


def _target_group(parts: list[str]) -> str | None:
    """The group of a backbone Linear layer given its name split at dots, or None."""
    leaf, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if "attention" in parts[:-1]:
        if leaf in _QKV_LEAVES:
            return "qkv"
        if leaf in ("o_proj", "out_proj") or (leaf == "dense" and parent == "output"):
            return "out"
    if parent == "mlp" and leaf in _MLP_LEAVES:
        return "mlp"
    return None


def apply_lora(
    model: DepthAnythingForDepthEstimation,
    *,
    rank: int = 16,
    alpha: float = 32,
    dropout: float = 0.05,
    bias: str = "none",
    targets=("qkv",),
    train_head: bool = False,
    gradient_checkpointing: bool = False,
    use_rslora: bool = False,
    use_dora: bool = False,
) -> PeftModel:
    """Wrap the model with LoRA adapters on backbone layers (PEFT), freezing everything else.

    Args:
        model: a model from ``build_model``.
        rank: LoRA rank r (>= 1).
        alpha: LoRA alpha (> 0); the update is scaled by alpha / rank.
        dropout: dropout on the LoRA input, 0 <= dropout < 1.
        bias: which biases train: "none", "all" or "lora_only" (PEFT's meaning).
        targets: target groups, see ``resolve_lora_targets``.
        train_head: also train the whole DPT head (``modules_to_save=["head"]``), saved with the
            adapter. Needed to learn from a random-init model, whose head starts near zero.
            A completion model (model.prompt) always trains its prompt branches in full too: they
            start at zero and are the only path from the camera's depth into the model.
        gradient_checkpointing: recompute the backbone's activations in backward (less memory,
            slower); non-reentrant, so the frozen input needs no gradient.
        use_rslora: rank-stabilised LoRA, the update scaled by alpha / sqrt(rank) (PEFT's).
        use_dora: DoRA, a learned magnitude per output beside the low-rank direction (PEFT's).

    Returns:
        The ``peft.PeftModel``; ``trainable_parameters_line`` describes it.
    """
    check_lora_settings(rank, alpha, dropout, bias, targets)
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias=bias,
        target_modules=resolve_lora_targets(model, targets),
        modules_to_save=(["head"] if train_head else []) + ([PROMPT_BRANCH] if is_prompt_model(model) else [])
        or None,
        use_rslora=use_rslora,
        use_dora=use_dora,
    )
    return get_peft_model(model, config)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute activations in backward instead of storing them (less memory, slower).

    Non-reentrant checkpointing, so a frozen input needs no gradient. transformers 5 renamed
    gradient_checkpointing_enable to activation_checkpointing_enable; both are supported.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def trainable_parameters_line(model: nn.Module) -> str:
    """PEFT's ``print_trainable_parameters`` text, returned instead of printed.

    Example: ``trainable params: 442,368 || all params: 25,227,457 || trainable%: 1.7535``.
    Plain (non-PEFT) models get the same line from their own parameters.
    """
    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        params = list(model.parameters())
        trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return (
        f"trainable params: {trainable:,d} || all params: {total:,d} || "
        f"trainable%: {100 * trainable / total:.4f}"
    )


def lora_summary(model: nn.Module) -> str:
    """Where a PEFT model's adapters sit and what trains, in two short lines (LoraConfig's own
    repr is one line of well over a thousand characters)."""
    if not isinstance(model, PeftModel):
        return f"no LoRA adapters (every weight trains as usual)\n{trainable_parameters_line(model)}"
    config = model.peft_config[model.active_adapter]
    counts = dict.fromkeys(TARGET_GROUPS, 0)
    for full_name, module in model.get_base_model().named_modules():
        if isinstance(module, LoraLayer):
            group = _layer_group(full_name, module.get_base_layer()) or "other"
            counts[group] = counts.get(group, 0) + 1
    where = ", ".join(f"{group} {n}" for group, n in counts.items() if n)
    full = ", ".join(sorted(config.modules_to_save or [])) or "nothing"
    name = lora_variant(config.use_rslora, config.use_dora)
    return (f"{name} r={config.r}, alpha {config.lora_alpha:g}, dropout {config.lora_dropout:g}, bias "
            f"{config.bias}: {sum(counts.values())} adapted layers ({where}); trained in full: {full}\n"
            f"{trainable_parameters_line(model)}")


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's convolution weights channels-last (faster on CPU and GPU), except the LoRA
    matrices of adapted convolutions: PEFT's DoRA views those as plain matrices, which a
    channels-last tensor refuses (peft 0.21, dora.py), and they are too small to gain from it."""
    model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in ("lora_A", "lora_B"):
                for layer in getattr(module, name).values():
                    layer.weight.data = layer.weight.data.contiguous()
    return model
