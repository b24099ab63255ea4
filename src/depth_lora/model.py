"""Build the Depth Anything V2 model (hub id, local folder or random-init) and wrap it with LoRA."""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
)
from transformers.models.depth_anything.modeling_depth_anything import DepthAnythingDepthEstimationHead

from depth_lora.config import DEFAULT_MODEL, MODEL_ALIASES
from depth_lora.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

# PEFT (0.21) calls transformers' deprecated `is_gradient_checkpointing` on every wrap; the warning
# is about PEFT's code, not the user's, and would otherwise show in every notebook cell that trains.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"

# Names that build a random-init model (RANDOM_ARCHITECTURES below) instead of loading weights.
# They win over a folder of the same name in the working directory.
RANDOM_MODELS = ("tiny", "tiny-metric", "small-random", "base-random", "large-random")


# Models shipped inside the package, loaded offline by name (they win over a folder of the same
# name too). demo-pretrained: the `tiny` architecture pretrained from scratch on synthetic rooms and
# tabletops by `depth-lora experiment` (see assets/demo-pretrained/README.md); not Depth Anything.
BUNDLED_MODELS = {"demo-pretrained": Path(__file__).parent / "assets" / "demo-pretrained"}
# Said with every output of a run that started from the demo model (depth_lora.json, predict, evaluate).
DEMO_MODEL_WARNING = ("this model was fine-tuned from the offline demo model 'demo-pretrained' (0.5 M "
                      "parameters, pretrained on synthetic scenes), not Depth Anything: do not trust its "
                      "depth on real captures")
OFFLINE_HINT = ("or use 'demo-pretrained' (a 0.5 M-parameter model pretrained on synthetic scenes, "
                "shipped with the package) for an offline demo whose numbers are not Depth Anything's")

# A random-init Depth Anything ends in ReLU after small-std convolutions, so it outputs ~1e-7
# everywhere and gradients barely reach the backbone. Starting the last conv's bias here puts the
# initial output at the middle of min-max-normalised labels (0..1), where ReLU passes gradients.
RANDOM_INIT_OUTPUT = 0.5
RANDOM_INIT_METRES = 1.0  # the same for a random-init metric head (sigmoid): 1 m, a table's distance

# LoRA target groups: which backbone Linear layers each group means, under both naming schemes.
# transformers 5.18+: attention.{q,k,v,o}_proj; 4.x: attention.attention.{query,key,value} and
# attention.output.dense. Both: mlp.fc1/fc2 (or mlp.weights_in/weights_out with SwiGLU).
TARGET_GROUPS = {
    "qkv": "attention query/key/value projections (q_proj/k_proj/v_proj, query/key/value, qkv)",
    "out": "attention output projection (o_proj, out_proj, attention.output.dense)",
    "mlp": "MLP layers (mlp.fc1/fc2, mlp.weights_in/weights_out)",
    "neck": "DPT neck convolutions (reassemble projections, neck.convs, fusion blocks; not resize layers)",
}
_QKV_LEAVES = {"q_proj", "k_proj", "v_proj", "query", "key", "value", "qkv"}
_MLP_LEAVES = {"fc1", "fc2", "weights_in", "weights_out"}
LORA_BIAS_CHOICES = ("none", "all", "lora_only")
# Attention implementations worth asking for; one the machine lacks falls back to eager.
ATTENTION_CHOICES = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TRUE = {"1", "on", "yes", "true"}


# Random-init architectures: (Dinov2 backbone, DPT neck/head) sizes. Both relative (ReLU head),
# patch 14. "small-random" is the published Depth-Anything-V2-Small-hf config.json (24,785,089
# parameters); "tiny" (510,097) trains a step at batch 2, 126x196 in well under a second on CPU.
# "base-random" and "large-random" are the published Base and Large configs (97.5 M and 335.3 M
# parameters): for tests that LoRA and a training step work on every size, never downloaded.
# "tiny-metric" is "tiny" with a metric head (sigmoid * max_depth, in metres; max_depth 20 like the
# indoor checkpoints).
_TINY = (
    {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2, "image_size": 126},
    {"reassemble_hidden_size": 64, "neck_hidden_sizes": [16, 32, 64, 64]}
    | {"fusion_hidden_size": 32, "head_hidden_size": 16},
)
RANDOM_ARCHITECTURES = {
    "tiny": _TINY,
    "tiny-metric": (_TINY[0], _TINY[1] | {"depth_estimation_type": "metric", "max_depth": 20}),
    "small-random": (
        {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "image_size": 518},
        {"reassemble_hidden_size": 384, "neck_hidden_sizes": [48, 96, 192, 384]}
        | {"fusion_hidden_size": 64, "head_hidden_size": 32},
    ),
    "base-random": (
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 518},
        {"reassemble_hidden_size": 768, "neck_hidden_sizes": [96, 192, 384, 768]}
        | {"fusion_hidden_size": 128, "head_hidden_size": 32},
    ),
    "large-random": (
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 518}
        | {"out_indices": [5, 12, 18, 24]},
        {"reassemble_hidden_size": 1024, "neck_hidden_sizes": [256, 512, 1024, 1024]}
        | {"fusion_hidden_size": 256, "head_hidden_size": 32},
    ),
}


class DepthHeadInFp32(DepthAnythingDepthEstimationHead):
    """The DPT depth head, computed in fp32 even under autocast.

    Under bf16 autocast the head's last convolution would write the depth map in bf16: 8 bits of
    mantissa, so min-max labels over a 250-3900 mm range move in steps of ~14 mm and small
    gradients round away. The head is a few convolutions; fp32 there costs little. Same weights
    and parameter names as the original head (save_pretrained / from_pretrained are unchanged).
    """

    def forward(self, hidden_states: list[torch.Tensor], patch_height, patch_width) -> torch.Tensor:
        device_type = hidden_states[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return super().forward([h.float() for h in hidden_states], patch_height, patch_width)


def keep_head_in_fp32(model: DepthAnythingForDepthEstimation) -> DepthAnythingForDepthEstimation:
    """Make the model's depth head run in fp32 under autocast (see DepthHeadInFp32); in place."""
    if type(model.head) is DepthAnythingDepthEstimationHead:
        model.head.__class__ = DepthHeadInFp32
    return model


def head_type(model: nn.Module) -> str:
    """'relative' or 'metric': the depth head of a model (or of the model inside a PeftModel)."""
    return getattr(model.config, "depth_estimation_type", "relative")


def make_metric_head(model: nn.Module, max_depth: float | None = None) -> nn.Module:
    """Give the model a metric head (sigmoid x max_depth, in metres), in place.

    A relative checkpoint keeps its weights (backbone, neck, head convolutions): only the head's
    last activation changes from ReLU to a sigmoid scaled by `max_depth`, which is how Depth
    Anything V2's metric models were started from the relative ones before metric fine-tuning. On a
    metric checkpoint `max_depth` only changes the range. Every copy of the head is changed (PEFT
    keeps a trainable copy when the head is trained).
    """
    if max_depth is not None and (max_depth < 1 or max_depth != int(max_depth)):
        raise ConfigError(f"--max-depth must be a whole number of metres >= 1, got {max_depth}")
    max_depth = int(max_depth or (model.config.max_depth if head_type(model) == "metric" else 20))
    model.config.depth_estimation_type = "metric"
    model.config.max_depth = max_depth
    for module in model.modules():
        if isinstance(module, DepthAnythingDepthEstimationHead):
            module.activation2 = nn.Sigmoid()
            module.max_depth = max_depth
    return model


def _random_config(name: str) -> DepthAnythingConfig:
    """A fresh config for a random-init name; the neck reads 4 evenly spaced backbone layers
    unless the architecture names them (Large: 5, 12, 18, 24, as published)."""
    backbone_sizes, head_sizes = RANDOM_ARCHITECTURES[name]
    layers = backbone_sizes["num_hidden_layers"]
    backbone = Dinov2Config(
        **{"out_indices": [layers // 4 * k for k in range(1, 5)], **backbone_sizes},
        patch_size=14,
        reshape_hidden_states=False,
    )
    head = {"depth_estimation_type": "relative", **head_sizes}
    return DepthAnythingConfig(backbone_config=backbone, **head)


def hub_is_reachable(timeout_s: float = 3.0) -> bool:
    """Tell quickly whether the Hugging Face hub answers.

    Returns False at once when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set; otherwise sends one
    HEAD request to the endpoint (HF_ENDPOINT, default https://huggingface.co; proxies from the
    environment are honoured). Any HTTP answer, even an error status, counts as reachable.

    Args:
        timeout_s: seconds to wait at most, DNS lookup included.
    """
    if _offline_reason():
        return False
    endpoint = _hub_endpoint()
    answered = threading.Event()

    def probe() -> None:
        try:
            request = urllib.request.Request(endpoint, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout_s):
                answered.set()
        except urllib.error.HTTPError:
            answered.set()  # the server answered, with an error status: it is reachable
        except (OSError, ValueError):
            pass

    # A thread bounds the whole probe: the socket timeout does not cover a hanging DNS lookup.
    thread = threading.Thread(target=probe, daemon=True, name="hub-probe")
    thread.start()
    thread.join(timeout_s)
    return answered.is_set()


def is_cached(name: str) -> bool:
    """True if `name` loads without network: a model folder, or a hub id in the local cache."""
    if (Path(name).expanduser() / "config.json").is_file():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def build_model(
    name: str = DEFAULT_MODEL, *, seed: int = 0, attn_implementation: str = "sdpa"
) -> tuple[DepthAnythingForDepthEstimation, dict[str, Any]]:
    """Build a Depth Anything model from a hub id, a local folder, or a random-init name.

    Args:
        name: a hub id (e.g. ``depth-anything/Depth-Anything-V2-Small-hf``), a local folder saved
            by ``save_pretrained`` / ``hf download``, ``"demo-pretrained"`` (the ``tiny``
            architecture pretrained on synthetic scenes, shipped with the package, for offline
            demos), ``"tiny"`` (the same ~0.5 M-parameter architecture, random init, for tests)
            or ``"small-random"`` (the Small architecture, random init). A hub id is loaded from
            the local cache; if it is not cached it is downloaded only when the hub answers,
            otherwise a ModelError explains what to do.
            Never falls back to a random model.
        seed: torch seed for random-init models (the global RNG state is restored afterwards).
        attn_implementation: attention for the Dinov2 backbone ("sdpa", "eager", ...). The DPT
            head has no attention; an implementation the backbone cannot use falls back to
            "eager" with a warning.

    Returns:
        ``(model, info)``. ``info`` has ``name``, ``pretrained``, ``source`` ("folder", "hub",
        "bundled", "random"), ``attn_implementation`` (what the backbone uses) and ``num_parameters``;
        random-init models add ``seed``, ``config`` (``config.to_dict()``, enough to rebuild the
        architecture) and ``head_bias_init``.

    Raises:
        ModelError: the folder is missing or unusable, or the hub id cannot be loaded.
    """
    if attn_implementation not in ATTENTION_CHOICES:
        raise ConfigError(
            f"attn_implementation must be one of {', '.join(ATTENTION_CHOICES)}, "
            f"got {attn_implementation!r}"
        )
    name = MODEL_ALIASES.get(name, name)
    if name in RANDOM_MODELS:
        model, info = _build_random(name, seed=seed, attn_implementation=attn_implementation)
    elif name in BUNDLED_MODELS:
        path = str(BUNDLED_MODELS[name])
        model, info = _build_pretrained(path, attn_implementation=attn_implementation)
        info.update(name=name, source="bundled", path=path)
    else:
        model, info = _build_pretrained(name, attn_implementation=attn_implementation)
    info["attn_implementation"] = model.backbone.config._attn_implementation
    info["num_parameters"] = sum(p.numel() for p in model.parameters())
    return keep_head_in_fp32(model), info


def _build_random(
    name: str, *, seed: int, attn_implementation: str
) -> tuple[DepthAnythingForDepthEstimation, dict[str, Any]]:
    config = _random_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _with_attention_fallback(
            lambda impl: DepthAnythingForDepthEstimation(_set_backbone_attention(config, impl)),
            attn_implementation,
            name,
        )
    if model.config.depth_estimation_type == "metric":  # sigmoid x max_depth starts at 1 m
        head_bias = float(torch.logit(torch.tensor(RANDOM_INIT_METRES / model.config.max_depth)))
    else:
        head_bias = RANDOM_INIT_OUTPUT / model.config.max_depth
    with torch.no_grad():
        model.head.conv3.bias.fill_(head_bias)
    model.eval()
    info = {
        "name": name,
        "pretrained": False,
        "source": "random",
        "seed": seed,
        "config": model.config.to_dict(),
        "head_bias_init": head_bias,
    }
    return model, info


def _build_pretrained(
    name: str, *, attn_implementation: str
) -> tuple[DepthAnythingForDepthEstimation, dict[str, Any]]:
    path = Path(name).expanduser()
    if path.exists() or not _HUB_ID.match(name) or name.startswith("."):
        _check_model_folder(path, name)
        model = _load(str(path), attn_implementation, local_files_only=True)
        return model, {"name": name, "pretrained": True, "source": "folder"}

    try:  # a cache hit is instant and needs no network
        model = _load(name, attn_implementation, local_files_only=True)
        return model, {"name": name, "pretrained": True, "source": "hub"}
    except ModelError as cache_miss:
        cache_error = cache_miss
    if not hub_is_reachable():
        reason = _offline_reason() or "no answer to a 3 s probe"
        raise ModelError(
            f"cannot load {name!r}: no such folder, not in the local Hugging Face cache, and the "
            f"hub ({_hub_endpoint()}) cannot be reached ({reason}). Download it on a machine with "
            f"network (hf download {name} --local-dir DIR), copy DIR here and pass the folder, "
            f"{OFFLINE_HINT}."
        ) from cache_error
    model = _load(name, attn_implementation, local_files_only=False)
    return model, {"name": name, "pretrained": True, "source": "hub"}


def _check_model_folder(path: Path, name: str) -> None:
    if not path.exists():
        raise ModelError(f"model folder not found: {name}")
    if not path.is_dir():
        raise ModelError(
            f"{path}: not a folder; pass a model folder, a hub id, 'demo-pretrained', 'tiny' "
            "or 'small-random'"
        )
    if not (path / "config.json").is_file():
        hint = (
            " (it has adapter_config.json: it is a LoRA adapter, not a model)"
            if (path / "adapter_config.json").is_file()
            else ""
        )
        raise ModelError(
            f"{path}: no config.json{hint}; expected a folder from save_pretrained or hf download"
        )


def _load(
    name: str, attn_implementation: str, *, local_files_only: bool
) -> DepthAnythingForDepthEstimation:
    """from_pretrained with the attention set on the backbone config (the top level rejects it)."""
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the config of {name!r}: {_one_line(err)}") from err
    if not isinstance(config, DepthAnythingConfig):
        raise ModelError(
            f"{name!r} holds a {config.model_type!r} model, not Depth Anything (depth_anything)"
        )

    def load(impl: str) -> DepthAnythingForDepthEstimation:
        return DepthAnythingForDepthEstimation.from_pretrained(
            name, config=_set_backbone_attention(config, impl), local_files_only=local_files_only
        )

    try:
        with quiet_weights_io():
            model = _with_attention_fallback(load, attn_implementation, name)
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        raise ModelError(f"cannot load the weights of {name!r}: {_one_line(err)}") from err
    model.eval()
    return model


@contextmanager
def quiet_weights_io():
    """No "Loading weights" / "Writing model shards" bars from transformers inside: a model of a
    few MB loads in a blink, and the bars would interleave with our own progress lines."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _set_backbone_attention(config: DepthAnythingConfig, impl: str) -> DepthAnythingConfig:
    config.backbone_config._attn_implementation = impl
    return config


def _with_attention_fallback(build, attn_implementation: str, name: str):
    """Call ``build(impl)``; if the backbone cannot use ``impl``, warn and use eager attention."""
    try:
        return build(attn_implementation)
    except (ValueError, ImportError) as err:
        if attn_implementation == "eager":
            raise
        logger.warning(
            "%s: attention %r unavailable (%s); using 'eager'",
            name,
            attn_implementation,
            _one_line(err),
        )
        return build("eager")


def _offline_reason() -> str:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return f"{variable} is set"
    return ""


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


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
    if isinstance(targets, str):
        targets = (targets,)
    groups = list(dict.fromkeys(targets))
    if not groups:
        raise ConfigError(f"no LoRA target group given; choose from {', '.join(TARGET_GROUPS)}")
    unknown = [g for g in groups if g not in TARGET_GROUPS]
    if unknown:
        raise ConfigError(
            f"unknown LoRA target group(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(TARGET_GROUPS)}"
        )
    found: dict[str, list[str]] = {g: [] for g in groups}
    for full_name, module in model.named_modules():
        parts = full_name.split(".")
        if isinstance(module, nn.Linear) and "backbone" in parts:
            group = _target_group(parts[parts.index("backbone") :])
        elif type(module) is nn.Conv2d and "neck" in parts and "resize" not in parts:
            # The first fusion layer has no skip input, so its residual_layer1 is never called: an
            # adapter there would never train (and DDP would stop on its missing gradient).
            group = None if ".fusion_stage.layers.0.residual_layer1." in f".{full_name}." else "neck"
        else:
            continue
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
        gradient_checkpointing: recompute the backbone's activations in backward (less memory,
            slower); non-reentrant, so the frozen input needs no gradient.

    Returns:
        The ``peft.PeftModel``; ``trainable_parameters_line`` describes it.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if not alpha > 0:
        raise ConfigError(f"LoRA alpha must be > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if bias not in LORA_BIAS_CHOICES:
        raise ConfigError(f"LoRA bias must be one of {', '.join(LORA_BIAS_CHOICES)}, got {bias!r}")
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias=bias,
        target_modules=resolve_lora_targets(model, targets),
        modules_to_save=["head"] if train_head else None,
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
