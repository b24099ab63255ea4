"""`depth-lora quickstart`: the whole job on sensible defaults, for a first run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from depth_lora.data.captures import check_data_folder, has_captures
from depth_lora.errors import ConfigError, DataError
from depth_lora.model.choices import DEFAULT_MODEL
from depth_lora.text import plural
from depth_lora.training.config import DEMO_COUNT, TrainConfig, coerce_field, field_names
from depth_lora.training.setup import OptionNames

# The offline demo model, shipped with the package: the `tiny` architecture pretrained on synthetic
# rooms and tabletops by experiments/domain_adaptation. It is fine-tuned with the recommended recipe like
# any model; only the size of the job is the demo's own: an input near the one it was pretrained at
# (168 x 266, a 12 x 19 grid of patches, chosen on validation in experiments/demo_model: the bin's
# walls show where 126 x 196 blurred them) and a fixed number of steps (its epochs are a few steps
# long). Its numbers are not Depth Anything's.
OFFLINE_DEMO = {"model": "demo-pretrained", "image_size": [168, 266], "max_steps": 400}
BANNER = "!" * 100
QUICKSTART_OPTIONS = OptionNames(resume=None, overwrite="--overwrite", output="--output")


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


def run_quickstart(
    data_dir: str | Path,
    model: str | None,
    output_dir: str | Path,
    demo_count: int = DEMO_COUNT,
    depth_unit: str = "mm",
    overwrite: bool = False,
) -> None:
    """Demo captures if needed, analysis, fine-tuning, evaluation; prints where everything went."""
    from depth_lora.data.analysis import analyze_dataset, format_stats_table, write_stats_json
    from depth_lora.evaluation.report import format_report_table
    from depth_lora.evaluation.verdict import kept_checkpoint_line, plain_reading
    from depth_lora.training.run import run_training
    from depth_lora.training.setup import check_output_dir
    from depth_lora.viz import write_analysis_plots

    data_dir, output_dir = Path(data_dir), Path(output_dir)
    check_output_dir(output_dir, resume=False, overwrite=overwrite, names=QUICKSTART_OPTIONS)
    print(ensure_captures(data_dir, demo=True, count=demo_count))

    print(f"\n== Dataset analysis: {data_dir}")
    stats, kept = analyze_dataset(data_dir, depth_unit, keep=4)
    print(format_stats_table(stats))

    print(f"\n== Fine-tuning -> {output_dir}")
    cfg = quickstart_config(data_dir, output_dir, model, overwrite, depth_unit=depth_unit)
    offline = model is None and cfg.model == OFFLINE_DEMO["model"]
    eval_dir = output_dir / "evaluation" / "test"  # where `evaluate --plots` puts the test split's
    result = run_training(cfg, names=QUICKSTART_OPTIONS, evaluation_dir=eval_dir)
    # Written after training: the training run wants its output folder to itself when it starts.
    write_stats_json(stats, output_dir / "analysis" / "stats.json")
    plots = write_analysis_plots(stats, kept, output_dir / "analysis")

    print("\n== Evaluation on the held-out test split, in mm at full resolution")
    print(format_report_table(result.test_report) if result.test_report else "(no test captures)")
    kept = kept_checkpoint_line(result.metrics["val"])
    print(f"\n== What the table says\n{plain_reading(result.test_report, result.val_report, kept)}")
    print(f"\n== Where everything went\nAnalysis figures: {', '.join(str(p) for p in plots)}")
    print(f"Evaluation: {eval_dir}/ (report.json, captures.csv, one figure per capture, metrics.png)")
    print(f"Adapter and metadata: {output_dir}/ (depth_lora.json, adapter_model.safetensors)")
    print(next_steps(data_dir, output_dir))
    if offline:
        print(f"{BANNER}\n!! Reminder: these numbers come from the offline demo model, "
              f"not Depth Anything.\n{BANNER}")


def next_steps(data_dir: Path, output_dir: Path) -> str:
    """The commands a user runs next, with this run's folders filled in."""
    return "\n".join([
        "\n== Next steps",
        f"  watch the training curves:   tensorboard --logdir {output_dir / 'runs'}",
        f"  depth for your own images:   depth-lora predict IMAGE.png --adapter {output_dir} "
        f"--out {output_dir / 'predictions'}",
        f"  the validation split too:    depth-lora evaluate --data {data_dir} --adapter {output_dir} "
        f"--split val --plots   (figures in {output_dir / 'evaluation' / 'val'})",
        f"  train on your own captures:  put them in {data_dir}/images and {data_dir}/depth (README: Your "
        "captures), then depth-lora train --output another_folder",
        "  walk through it step by step: the notebook projet_transformers.ipynb (README: The notebook)",
    ])
