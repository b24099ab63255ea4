"""Depth Anything V2 checkpoints: a hub id, a local folder, a bundled model or a random-init
architecture, loaded offline-aware with one clear error when it cannot be reached."""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    PromptDepthAnythingConfig,
    PromptDepthAnythingForDepthEstimation,
)

from depth_lora.errors import ConfigError, ModelError
from depth_lora.model.choices import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    MODEL_ALIASES,
    OFFLINE_HINT,
    RANDOM_MODELS,
)
from depth_lora.model.heads import keep_head_in_fp32

logger = logging.getLogger(__name__)


DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
# A random-init Depth Anything ends in ReLU after small-std convolutions, so it outputs ~1e-7
# everywhere and gradients barely reach the backbone. Starting the last conv's bias here puts the
# initial output at the middle of min-max-normalised labels (0..1), where ReLU passes gradients.
RANDOM_INIT_OUTPUT = 0.5
RANDOM_INIT_METRES = 1.0  # the same for a random-init metric head (sigmoid): 1 m, a table's distance

# Attention implementations worth asking for; one the machine lacks falls back to eager.
ATTENTION_CHOICES = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")

class WrongModelKind(ModelError):
    """A checkpoint that loads, but is not a model the caller can use (not Depth Anything, or a
    completion model where a monocular one is needed): no point asking the hub for it again."""


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
    name: str = DEFAULT_MODEL, *, seed: int = 0, attn_implementation: str = "sdpa", allow_prompt: bool = False
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
        allow_prompt: also load a Prompt Depth Anything checkpoint (a completion model, see
            model.prompt); without it such a checkpoint is a ModelError saying where it belongs.

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
        model, info = _build_pretrained(name, attn_implementation=attn_implementation,
                                        allow_prompt=allow_prompt)
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
    name: str, *, attn_implementation: str, allow_prompt: bool = False
) -> tuple[DepthAnythingForDepthEstimation, dict[str, Any]]:
    path = Path(name).expanduser()
    if path.exists() or not _HUB_ID.match(name) or name.startswith("."):
        _check_model_folder(path, name)
        model = _load(str(path), attn_implementation, local_files_only=True, allow_prompt=allow_prompt)
        return model, {"name": name, "pretrained": True, "source": "folder"}

    try:  # a cache hit is instant and needs no network
        model = _load(name, attn_implementation, local_files_only=True, allow_prompt=allow_prompt)
        return model, {"name": name, "pretrained": True, "source": "hub"}
    except WrongModelKind:  # found in the cache, but not a model this caller can use
        raise
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
    model = _load(name, attn_implementation, local_files_only=False, allow_prompt=allow_prompt)
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
    name: str, attn_implementation: str, *, local_files_only: bool, allow_prompt: bool = False
) -> DepthAnythingForDepthEstimation:
    """from_pretrained with the attention set on the backbone config (the top level rejects it)."""
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the config of {name!r}: {_one_line(err)}") from err
    model_class = DepthAnythingForDepthEstimation
    if isinstance(config, PromptDepthAnythingConfig):
        if not allow_prompt:
            raise WrongModelKind(
                f"{name!r} is a Prompt Depth Anything model (it completes a camera's depth): train it "
                "with --task complete and run it with `depth-lora complete`, not as a monocular model")
        model_class = PromptDepthAnythingForDepthEstimation
    elif not isinstance(config, DepthAnythingConfig):
        raise WrongModelKind(
            f"{name!r} holds a {config.model_type!r} model, not Depth Anything (depth_anything)"
        )

    def load(impl: str) -> DepthAnythingForDepthEstimation:
        return model_class.from_pretrained(
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
    """Why the hub must not be asked, read from the environment now: huggingface_hub's own
    `constants.HF_HUB_OFFLINE` and `ENDPOINT` (checked on 2.5) are read once, when it is imported, so a
    notebook cell or a test that sets HF_HUB_OFFLINE later would not be seen."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return f"{variable} is set"
    return ""


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]
