"""Prompt Depth Anything: Depth Anything V2 that also reads a depth map (the camera's own), the
architecture of a completion model (`--task complete`).

`PromptDepthAnythingForDepthEstimation` (transformers) is Depth Anything V2 plus, in each of the
neck's four fusion layers, a three-convolution branch that reads the prompt depth (normalised by
its own min and max per image) and adds its output to the fused features; with a prompt, the
model's output is depth in the prompt's unit (the head's 0..1 scaled back by the prompt's min and
max). Every other module has Depth Anything V2's names, so a Depth Anything V2 checkpoint (the
published Small, `demo-pretrained`, `tiny`) starts a prompt model with its own weights and the
branch's last convolution at zero: the branch then adds exactly nothing, which is how Prompt
Depth Anything itself was started from Depth Anything V2 (ControlNet's zero convolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    PromptDepthAnythingConfig,
    PromptDepthAnythingForDepthEstimation,
)
from transformers.models.prompt_depth_anything.modeling_prompt_depth_anything import (
    PromptDepthAnythingDepthEstimationHead,
    PromptDepthAnythingLayer,
)

from depth_lora.errors import ConfigError, ModelError
from depth_lora.model.heads import keep_head_in_fp32

# Short names of the published Prompt Depth Anything checkpoints (transformers format, Apache-2.0
# for the Small one: see its model card).
PROMPT_MODEL_ALIASES = {"prompt-small": "depth-anything/prompt-depth-anything-vits-hf"}
PROMPT_BRANCH = "prompt_depth_layer"  # the name of the branch's modules in every fusion layer
# How a completion model's output becomes depth (completed_depth): "residual" over the prompt for a
# model started here from Depth Anything V2, "direct" for a published Prompt Depth Anything one.
COMPLETION_OUTPUTS = ("residual", "direct")
RESIDUAL_HEAD_START = 0.5


def is_prompt_model(model: nn.Module) -> bool:
    """True for a Prompt Depth Anything model (or one inside a PeftModel)."""
    return getattr(getattr(model, "config", None), "model_type", None) == PromptDepthAnythingConfig.model_type


def prompt_config(config: DepthAnythingConfig) -> PromptDepthAnythingConfig:
    """The Prompt Depth Anything config with the same backbone, neck and head as `config`."""
    if config.depth_estimation_type != "relative":
        raise ConfigError(
            "a completion model starts from a relative Depth Anything V2 checkpoint (its output "
            f"becomes depth in the prompt's range); this one has a {config.depth_estimation_type} head")
    shared = ("patch_size", "initializer_range", "reassemble_hidden_size", "reassemble_factors",
              "neck_hidden_sizes", "fusion_hidden_size", "head_in_index", "head_hidden_size")
    backbone = config.backbone_config
    prompt = PromptDepthAnythingConfig(
        backbone_config=backbone.to_dict(), depth_estimation_type="relative",
        **{name: getattr(config, name) for name in shared})
    prompt.backbone_config._attn_implementation = backbone._attn_implementation
    return prompt


def zero_prompt_branch(model: PromptDepthAnythingForDepthEstimation) -> None:
    """Set the last convolution of every prompt branch to zero: the branch adds nothing, and its
    gradient still reaches that convolution first (the others keep their random init)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, PromptDepthAnythingLayer):
                module.convolution3.weight.zero_()
                module.convolution3.bias.zero_()


def start_residual_head(model: PromptDepthAnythingForDepthEstimation) -> None:
    """Start the head so that the completion is exactly the prompt (`completed_depth`, "residual"):
    its last convolution's weights at zero and its bias at RESIDUAL_HEAD_START, the middle of the
    prompt's range once scaled back (and where the ReLU passes gradients). Every copy of the head
    (PEFT keeps a trainable one) is changed; in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, PromptDepthAnythingDepthEstimationHead):
                module.conv3.weight.zero_()
                module.conv3.bias.fill_(RESIDUAL_HEAD_START)


def add_validity_channel(model: PromptDepthAnythingForDepthEstimation) -> None:
    """Let every prompt branch read a second prompt channel, the share of each prompt pixel that was
    measured (data.completion.build_prompt): a filled hole and a measured surface look alike in the
    depth channel alone. The new input's weights start at zero, so the model computes exactly what
    it computed before until training moves them; in place, before PEFT wraps the model."""
    for module in model.modules():
        if isinstance(module, PromptDepthAnythingLayer) and module.convolution1.in_channels == 1:
            old = module.convolution1
            new = nn.Conv2d(2, old.out_channels, old.kernel_size, old.stride, old.padding, bias=True)
            with torch.no_grad():
                new.weight.zero_()
                new.weight[:, :1] = old.weight
                new.bias.copy_(old.bias)
            module.convolution1 = new.to(old.weight.device, old.weight.dtype)


def completed_depth(pred: torch.Tensor, prompt_depth: torch.Tensor, output: str = "residual") -> torch.Tensor:
    """A completion model's depth in mm from its output `pred` (B, H, W) and its prompt (B, 1, h, w).

    "direct": the output itself (Prompt Depth Anything as published: its head predicts the depth
    within the prompt's range). "residual": the prompt upsampled (bilinear) plus the output's offset
    from the middle of the prompt's range, so the model learns only what the harmonic prompt misses
    in a hole; with `start_residual_head` it starts as exactly the prompt, the classical fill.
    """
    if output == "direct":
        return pred
    if output != "residual":
        raise ConfigError(f"completion output must be one of {', '.join(COMPLETION_OUTPUTS)}, got {output!r}")
    prompt = prompt_depth[:, :1].to(pred.dtype)  # the depth channel (a second one is validity)
    up = F.interpolate(prompt, size=pred.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = prompt.flatten(1)
    middle = (flat.amax(dim=1) + flat.amin(dim=1)) / 2
    return up + pred - middle.view(-1, 1, 1)


def to_prompt_model(model: DepthAnythingForDepthEstimation) -> PromptDepthAnythingForDepthEstimation:
    """A Prompt Depth Anything model holding every weight of the Depth Anything V2 `model`, its
    prompt branches added at zero (see the module's docstring). Given no prompt it computes exactly
    what `model` computes; given one, that output scaled into the prompt's range."""
    prompt = PromptDepthAnythingForDepthEstimation(prompt_config(model.config))
    missing, unexpected = prompt.load_state_dict(model.state_dict(), strict=False)
    not_prompt = [k for k in missing if f".{PROMPT_BRANCH}." not in k]
    if not_prompt or unexpected:
        raise ModelError(f"cannot start a prompt model from this Depth Anything model: weights "
                         f"{(not_prompt or unexpected)[:3]} have no counterpart")
    zero_prompt_branch(prompt)
    return keep_head_in_fp32(prompt.eval())


def build_completer(name: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    """A completion model from any base a completion run may name.

    name: `prompt-small` (or its hub id, or a folder holding a Prompt Depth Anything checkpoint),
        loaded as published; or anything `checkpoints.build_model` loads (a Depth Anything V2 hub id
        or folder, `demo-pretrained`, `tiny`), turned into the prompt architecture by
        `to_prompt_model`.
    Returns (model, info) like build_model; info["converted_from"] names the Depth Anything V2 base
    when the prompt branch was added here. ModelError (one line) when it cannot be loaded.
    """
    from depth_lora.model.checkpoints import build_model

    name = PROMPT_MODEL_ALIASES.get(name, name)
    model, info = build_model(name, seed=seed, attn_implementation=attn_implementation, allow_prompt=True)
    if is_prompt_model(model):  # build_model already keeps its head in fp32
        return model, info
    completer = to_prompt_model(model)
    info = {**info, "converted_from": info["name"],
                            "num_parameters": sum(p.numel() for p in completer.parameters())}
    if "config" in info:  # a random-init base: what rebuilds the architecture is now the prompt config
        info["config"] = completer.config.to_dict()
    return completer, info
