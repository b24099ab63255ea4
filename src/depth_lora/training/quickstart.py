"""The configuration quickstart and the notebook train with, and the demo captures they start from.

`quickstart_config` picks the model (the real Depth Anything V2 Small when it can be loaded, else the
bundled demo model, announced loudly) and sizes the demo model's job; `ensure_captures` fills an
empty data folder with demo captures. `depth-lora quickstart` (cli.quickstart) runs the whole job
with them; the notebook calls them directly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from depth_lora.data.captures import check_data_folder, has_captures
from depth_lora.errors import ConfigError, DataError
from depth_lora.model.choices import DEFAULT_MODEL
from depth_lora.text import plural
from depth_lora.training.config import DEMO_COUNT, TrainConfig, coerce_field, field_names

# The offline demo model, shipped with the package: the `tiny` architecture pretrained on synthetic
# rooms and tabletops by experiments/domain_adaptation. It is fine-tuned with the recommended recipe like
# any model; only the size of the job is the demo's own: an input near the one it was pretrained at
# (168 x 266, a 12 x 19 grid of patches, chosen on validation in experiments/demo_model: the bin's
# walls show where 126 x 196 blurred them) and a fixed number of steps (its epochs are a few steps
# long). Its numbers are not Depth Anything's.
OFFLINE_DEMO = {"model": "demo-pretrained", "image_size": [168, 266], "max_steps": 400}
BANNER = "!" * 100


def resolve_quickstart_model(model: str | None) -> tuple[str, bool]:
    """The model quickstart trains: (name, is_offline_fallback).

    An explicit model is used as given (and fails clearly if it cannot be loaded). With none given,
    the real Depth Anything V2 Small is used when it is cached or the hub answers; otherwise the
    offline demo model, announced loudly.
    """
    if model is not None:
        return model, False
    from depth_lora.model.checkpoints import hub_is_reachable, is_cached

    if is_cached(DEFAULT_MODEL) or hub_is_reachable():
        return DEFAULT_MODEL, False
    return OFFLINE_DEMO["model"], True


def offline_banner() -> str:
    """The loud notice printed when the offline demo model replaces the real one."""
    return (f"{BANNER}\n!! The Hugging Face hub cannot be reached and {DEFAULT_MODEL} is not cached:\n"
            f"!! continuing with the OFFLINE DEMO MODEL 'demo-pretrained' (0.5 M parameters, pretrained\n"
            f"!! on synthetic scenes, shipped with depth-lora). ITS NUMBERS ARE NOT DEPTH ANYTHING'S.\n"
            f"!! For the real model: --model FOLDER (see README).\n{BANNER}")


def size_demo_job(cfg: TrainConfig) -> TrainConfig:
    """The demo model's job size for what `cfg` leaves open: its input size and step count, and
    10 evaluations (its epochs are a few steps long). The recipe stays as `cfg` has it."""
    image_size = cfg.image_size or OFFLINE_DEMO["image_size"]
    max_steps = cfg.max_steps if cfg.max_steps > 0 else OFFLINE_DEMO["max_steps"]
    return replace(cfg, image_size=image_size, max_steps=max_steps,
                   eval_steps=cfg.eval_steps or max(1, max_steps // 10))


def quickstart_config(data: str | Path, output: str | Path, model: str | None = None,
                      overwrite: bool = False, **options) -> TrainConfig:
    """The configuration quickstart (and the notebook) trains with.

    `model` None: the real Depth Anything V2 Small when it is cached or the hub answers, otherwise
    the offline demo model, announced loudly (printed). `options`: any other TrainConfig field
    (recipe, max_steps, learning_rate, ...); the demo model gets its own job size for what they
    leave open, printed. Raises ConfigError naming an unknown option.
    """
    known = field_names() - {"data", "output", "model", "overwrite"}  # the arguments above
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; "
                          f"the options are: {', '.join(sorted(known))}")
    options = {k: coerce_field(k, v) for k, v in options.items()}
    name, offline = resolve_quickstart_model(model)
    if offline:
        print(offline_banner())
    cfg = TrainConfig(data=str(data), output=str(output), model=name, overwrite=overwrite, **options)
    if cfg.model == OFFLINE_DEMO["model"]:
        cfg = size_demo_job(cfg)
        print(f"demo-pretrained job size: input {cfg.image_size[0]} x {cfg.image_size[1]} (H x W), "
              f"{cfg.max_steps} steps, an evaluation every {cfg.eval_steps}")
    return cfg


def ensure_captures(data_dir: str | Path, demo: bool = True, count: int = DEMO_COUNT,
                    size_hw=(1200, 1944)) -> str:
    """Make sure `data_dir` holds captures: with `demo`, generate demo captures in an existing
    folder that holds none (a folder that does not exist is a typo until shown otherwise).

    Returns what was done, as a sentence; raises DataError rather than train on nothing.
    """
    import time

    from depth_lora.synthetic.demo import generate_demo_captures

    data_dir = check_data_folder(data_dir, demo=True)
    if has_captures(data_dir):
        return f"Using the captures in {data_dir}/."
    if not demo:
        raise DataError(data_dir, "holds no captures; add yours (images/, depth/) or enable the demo")
    h, w = size_hw
    print(f"No captures in {data_dir}/: generating {plural(count, 'Zivid-like demo capture')} "
          f"({h} x {w}) there ...", flush=True)
    start = time.perf_counter()
    generate_demo_captures(data_dir, count, size_hw=tuple(size_hw))
    return (f"Generated {plural(count, 'demo capture')} in {time.perf_counter() - start:.0f} s. "
            f"Put your own captures in {data_dir}/images and {data_dir}/depth instead.")
