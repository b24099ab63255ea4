"""What a config can name, checked without torch: the base models (hub ids and their short names,
the bundled demo model, random-init architectures) and LoRA's settings and target groups. The
command line checks its arguments with these before any slow import."""

from __future__ import annotations

from pathlib import Path

from depth_lora.errors import ConfigError

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# Short names for the published Depth Anything V2 checkpoints (transformers format). The head type
# (relative or metric, and a metric head's max_depth) is read from each checkpoint's config, never
# from its name. Small is Apache-2.0; Base and Large are CC-BY-NC-4.0 (see their model cards).
MODEL_ALIASES = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
    **{f"metric-{scene}-{size}": f"depth-anything/Depth-Anything-V2-Metric-{scene.title()}-{size.title()}-hf"
       for scene in ("indoor", "outdoor") for size in ("small", "base", "large")},
}

# Names that build a random-init model (RANDOM_ARCHITECTURES below) instead of loading weights.
# They win over a folder of the same name in the working directory.
RANDOM_MODELS = ("tiny", "tiny-metric", "small-random", "base-random", "large-random")


# Models shipped inside the package, loaded offline by name (they win over a folder of the same
# name too). demo-pretrained: the `tiny` architecture pretrained from scratch on synthetic rooms and
# tabletops by experiments/domain_adaptation (see assets/demo-pretrained/README.md); not Depth Anything.
BUNDLED_MODELS = {"demo-pretrained": Path(__file__).parents[1] / "assets" / "demo-pretrained"}
# Said with every output of a run that started from the demo model (depth_lora.json, predict, evaluate).
DEMO_MODEL_WARNING = ("this model was fine-tuned from the offline demo model 'demo-pretrained' (0.5 M "
                      "parameters, pretrained on synthetic scenes), not Depth Anything: do not trust its "
                      "depth on real captures")
OFFLINE_HINT = ("or use 'demo-pretrained' (a 0.5 M-parameter model pretrained on synthetic scenes, "
                "shipped with the package) for an offline demo whose numbers are not Depth Anything's")

# LoRA target groups: which backbone Linear layers each group means, under both naming schemes.
# transformers 5.18+: attention.{q,k,v,o}_proj; 4.x: attention.attention.{query,key,value} and
# attention.output.dense. Both: mlp.fc1/fc2 (or mlp.weights_in/weights_out with SwiGLU).
TARGET_GROUPS = {
    "qkv": "attention query/key/value projections (q_proj/k_proj/v_proj, query/key/value, qkv)",
    "out": "attention output projection (o_proj, out_proj, attention.output.dense)",
    "mlp": "MLP layers (mlp.fc1/fc2, mlp.weights_in/weights_out)",
    "neck": "DPT neck convolutions (reassemble projections, neck.convs, fusion blocks; not resize layers)",
}
LORA_BIAS_CHOICES = ("none", "all", "lora_only")



def check_target_groups(targets) -> list[str]:
    """The target groups asked for, without repeats; ConfigError for none or an unknown one."""
    groups = list(dict.fromkeys((targets,) if isinstance(targets, str) else targets))
    if not groups:
        raise ConfigError(f"no LoRA target group given; choose from {', '.join(TARGET_GROUPS)}")
    unknown = [g for g in groups if g not in TARGET_GROUPS]
    if unknown:
        raise ConfigError(
            f"unknown LoRA target group(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(TARGET_GROUPS)}"
        )
    return groups


def lora_variant(use_rslora: bool, use_dora: bool) -> str:
    """How the recipe line and the LoRA summary name PEFT's variant: "LoRA", "LoRA rsLoRA DoRA"..."""
    return "LoRA" + "".join(name for name, on in ((" rsLoRA", use_rslora), (" DoRA", use_dora)) if on)


def check_lora_settings(rank, alpha, dropout, bias="none", targets=("qkv",)) -> None:
    """LoRA's settings checked in one place (TrainConfig and apply_lora both ask here); ConfigError."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if not alpha > 0:
        raise ConfigError(f"LoRA alpha must be > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if bias not in LORA_BIAS_CHOICES:
        raise ConfigError(f"LoRA bias must be one of {', '.join(LORA_BIAS_CHOICES)}, got {bias!r}")
    check_target_groups(targets)
